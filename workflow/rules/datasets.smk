rule merge_dataset:
    """A dataset variant as a manifest: original training rows + the variant's synthetic rows."""
    input:
        manifest=MANIFEST,
        shards=variant_shard_dirs,
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
