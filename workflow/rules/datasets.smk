rule merge_dataset:
    """A dataset variant as a manifest: original training rows + the variant's synthetic rows."""
    input:
        manifest=MANIFEST,
        shards=variant_shard_dirs,
        classic=variant_classic_dirs,
    output:
        "results/datasets/{variant}.csv",
    log:
        f"{LOGS}/merge_dataset/{{variant}}.log",
    benchmark:
        f"{BENCH}/merge_dataset/{{variant}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
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
