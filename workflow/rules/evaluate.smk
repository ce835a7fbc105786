rule evaluate:
    """Evaluate one classifier on one test set: predictions.csv + metrics.json."""
    input:
        model="results/classifiers/{variant}/{arch}/fold{fold}",
        test_set="results/test_sets/{test_set}.csv",
    output:
        metrics="results/evaluation/{variant}/{arch}/fold{fold}/{test_set}/metrics.json",
        predictions="results/evaluation/{variant}/{arch}/fold{fold}/{test_set}/predictions.csv",
    log:
        f"{LOGS}/evaluate/{{variant}}/{{arch}}/fold{{fold}}/{{test_set}}.log",
    benchmark:
        f"{BENCH}/evaluate/{{variant}}/{{arch}}/fold{{fold}}/{{test_set}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        positive_class=config["evaluation"]["positive_class"],
        specificity=config["evaluation"]["specificity"],
    script:
        "../scripts/evaluate.py"
