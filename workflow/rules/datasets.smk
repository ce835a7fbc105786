rule merge_dataset:
    """One classifier's dataset: the (variant, fold) manifest of its training and validation rows."""
    input:
        manifest=MANIFEST,
        shards=fold_shard_dirs,
        classic=fold_classic_dir,
        verdicts=fold_verdicts,
    output:
        "results/datasets/{variant}/fold{fold}.csv",
    log:
        f"{LOGS}/merge_dataset/{{variant}}/fold{{fold}}.log",
    benchmark:
        f"{BENCH}/merge_dataset/{{variant}}/fold{{fold}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        variant=lambda wc: asdict(PLAN.variant(wc.variant)),
        plan=lambda wc: asdict(PLAN.for_variant(PLAN.variant(wc.variant))),
    script:
        "../scripts/merge_dataset.py"


rule augment_classic:
    """The equal-count baseline: standard-augmentation copies of one fold's training originals."""
    input:
        manifest=MANIFEST,
    output:
        directory("results/classic/fold{fold}"),
    log:
        f"{LOGS}/augment_classic/fold{{fold}}.log",
    benchmark:
        f"{BENCH}/augment_classic/fold{{fold}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        counts={cls: PLAN.max_synthetic_count(cls) for cls in SETTINGS.classes},
        seed=config["seed"],
    script:
        "../scripts/augment_classic.py"
