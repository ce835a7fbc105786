rule generate_shard:
    """One shard of synthetic images for (class, adjective, shard): PNGs + metadata.csv."""
    input:
        base_model_input,
        lora=lora_dir,
    output:
        directory("results/synthetic/{cls}/{adjective}/shard{shard}"),
    log:
        f"{LOGS}/generate_shard/{{cls}}/{{adjective}}/shard{{shard}}.log",
    benchmark:
        f"{BENCH}/generate_shard/{{cls}}/{{adjective}}/shard{{shard}}.tsv"
    priority: 1
    conda:
        ENV
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=1,
    params:
        base_model=BASE_MODEL,
        generation=config["generation"],
        size=lambda wc: PLAN.shard_sizes(wc.cls)[int(wc.shard)],
        template=lambda wildcards: config["prompts"]["template"],
        subjects=config["prompts"]["subjects"],
        negative=config["prompts"]["negative"],
    script:
        "../scripts/generate_shard.py"
