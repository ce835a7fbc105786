rule synthetic_quality:
    """Fréchet distance, precision/recall and fidelity per (class, adjective); adjective effects; near
    copies. Fold k's `original` classifier judges the synthetic images of fold k's arm against the
    originals that arm's LoRAs trained on (its replicate 0: one judge per fold, whatever
    classifier.replicates says, so more replicates do not rerun this)."""
    input:
        manifest=MANIFEST,
        shards=all_shard_dirs(),
        models=expand(
            "results/classifiers/original/{{arch}}/fold{fold}/rep0",
            fold=FOLDS,
        ),
    output:
        quality="results/quality/{arch}/quality.csv",
        adjective_effect="results/quality/{arch}/adjective_effect.csv",
        near_copies="results/quality/{arch}/near_copies.csv",
    log:
        f"{LOGS}/synthetic_quality/{{arch}}.log",
    benchmark:
        f"{BENCH}/synthetic_quality/{{arch}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        k=config["evaluation"]["knn_k"],
        arms=[SETTINGS.arm(fold) for fold in FOLDS],
        arm_shards={arm: arm_shard_dirs(arm) for arm in SETTINGS.arms},
    script:
        "../scripts/synthetic_quality.py"
