rule train_classifier:
    """Train one classifier on a variant's fold; validation is that fold's original images."""
    input:
        "results/datasets/{variant}/fold{fold}.csv",
    output:
        directory("results/classifiers/{variant}/{arch}/fold{fold}"),
    log:
        f"{LOGS}/train_classifier/{{variant}}/{{arch}}/fold{{fold}}.log",
    benchmark:
        f"{BENCH}/train_classifier/{{variant}}/{{arch}}/fold{{fold}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        mem_mb=6000,
        runtime=240,
        gpu=1,
    params:
        classifier=SETTINGS.classifier.params(),
        classes=SETTINGS.classes,
        seed=config["seed"],
        device=SETTINGS.runtime.device,  # the classifier runs in fp32 whatever `precision` says
    script:
        "../scripts/train_classifier.py"
