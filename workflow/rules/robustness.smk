rule robustness:
    """One classifier on corrupted copies of the internal test split (MedMNIST-C breast set)."""
    input:
        model="results/classifiers/{variant}/{arch}/fold{fold}",
        test_set="results/test_sets/test.csv",
    output:
        "results/robustness/{variant}/{arch}/fold{fold}.csv",
    log:
        f"{LOGS}/robustness/{{variant}}/{{arch}}/fold{{fold}}.log",
    benchmark:
        f"{BENCH}/robustness/{{variant}}/{{arch}}/fold{{fold}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        corruptions=config["evaluation"]["corruptions"],
        severities=config["evaluation"]["severities"],
        seed=config["seed"],
    script:
        "../scripts/robustness.py"
