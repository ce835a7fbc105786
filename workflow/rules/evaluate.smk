rule evaluate:
    """One classifier on every test set (predictions.csv + metrics.json each) and on corrupted copies
    of the internal test split (robustness.csv, MedMNIST-C breast set); the model loads once.
    """
    input:
        model="results/classifiers/{variant}/{arch}/fold{fold}/rep{replicate}",
        test_sets=lambda wc: list(evaluation_test_sets(wc).values()),
    output:
        directory("results/evaluation/{variant}/{arch}/fold{fold}/rep{replicate}"),
    log:
        f"{LOGS}/evaluate/{{variant}}/{{arch}}/fold{{fold}}/rep{{replicate}}.log",
    benchmark:
        f"{BENCH}/evaluate/{{variant}}/{{arch}}/fold{{fold}}/rep{{replicate}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        # Plain data (test sets rebuilt in the script); the kinds and labels go into metrics.json.
        test_sets=lambda wc: [
            test_set.as_params() for test_set in evaluation_test_sets(wc)
        ],
        labels=evaluation_labels,
        evaluation=SETTINGS.evaluation.params(),
        seed=config["seed"],
    script:
        "../scripts/evaluate.py"
