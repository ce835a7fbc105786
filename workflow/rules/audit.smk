rule audit:
    """Lineage audit: walk every classifier back to the original images that shaped its training
    (directly, through LoRAs, the base model, classic copies); fail on any that it is validated,
    tested or evaluated on, unless the config declared that leak (lora.scope: split, ...).
    """
    input:
        classifiers=classifier_dirs(),
        manifest=MANIFEST,
        unseen=expand("results/test_sets/{name}.csv", name=list(SETTINGS.unseen)),
    output:
        findings="results/audit/findings.csv",
        summary="results/audit/summary.csv",
        verdict="results/audit/verdict.txt",
    log:
        f"{LOGS}/audit.log",
    benchmark:
        f"{BENCH}/audit.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        unseen_names=list(SETTINGS.unseen),
        max_distance=config["dataset"]["near_duplicate_distance"],
        lora_scope=SETTINGS.lora_scope,
        pretrain_corpus=SETTINGS.pretrain_corpus,
    script:
        "../scripts/audit.py"
