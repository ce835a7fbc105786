rule train_classifier:
    """Train one classifier (one replicate) on a variant's fold; validation is that fold's original
    images. Its seed depends on (seed, architecture, fold, replicate), not on the variant.
    """
    input:
        "results/datasets/{variant}/fold{fold}.csv",
    output:
        directory("results/classifiers/{variant}/{arch}/fold{fold}/rep{replicate}"),
    log:
        f"{LOGS}/train_classifier/{{variant}}/{{arch}}/fold{{fold}}/rep{{replicate}}.log",
    benchmark:
        f"{BENCH}/train_classifier/{{variant}}/{{arch}}/fold{{fold}}/rep{{replicate}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        mem_mb=6000,
        runtime=240,
        gpu=1,
        gpu_slot=CLASSIFIER,  # a GPU (or a slot of one) of its own: meddap.runtime.gpu_slots
    params:
        classifier=SETTINGS.classifier.params(),
        classes=SETTINGS.classes,
        seed=config["seed"],
        device=SETTINGS.runtime.device,  # the classifier runs in fp32 whatever `precision` says
    script:
        "../scripts/train_classifier.py"
