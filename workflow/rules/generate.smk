rule check_generation_inputs:
    """Before a shard job starts (Snakemake deletes a job's old outputs when it starts): the LoRA's
    and base model's safetensors files are complete and the LoRA's layers exist in the base model.
    A temp() output: missing after the shards are made, so every shard job that runs, forced
    (`make regenerate-shard`) or not, runs this check first; a bad file stops the run before a
    good shard is deleted, and the error names the file and the command that remakes it. One per
    shard: a check run for a new shard feeds that shard only, so it reruns no other shard.
    """
    input:
        base_model_input,
        lora=lora_dir,
    output:
        temp(
            "results/checks/generation_inputs/{stream}/{arm}/{cls}/{adjective}/shard{shard}.ok"
        ),
    log:
        f"{LOGS}/check_generation_inputs/{{stream}}/{{arm}}/{{cls}}/{{adjective}}/shard{{shard}}.log",
    benchmark:
        f"{BENCH}/check_generation_inputs/{{stream}}/{{arm}}/{{cls}}/{{adjective}}/shard{{shard}}.tsv"
    localrule: True  # reads file headers only: no cluster job
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        base_model=BASE_MODEL,
        base_built_here=SETTINGS.base_source.built_here,
    script:
        "../scripts/check_generation_inputs.py"


rule generate_shard:
    """One shard of synthetic images for (arm, class, adjective, shard): PNGs + metadata.csv."""
    input:
        base_model_input,
        lora=lora_dir,
        checked=generation_inputs_check(TEXT_TO_IMAGE),
    output:
        directory(
            f"results/{TEXT_TO_IMAGE}/{{arm}}/{{cls}}/{{adjective}}/shard{{shard}}"
        ),
    log:
        f"{LOGS}/generate_shard/{{arm}}/{{cls}}/{{adjective}}/shard{{shard}}.log",
    benchmark:
        f"{BENCH}/generate_shard/{{arm}}/{{cls}}/{{adjective}}/shard{{shard}}.tsv"
    priority: 1
    conda:
        ENV
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=1,
        gpu_slot=DIFFUSION,  # a GPU (or a slot of one) of its own: meddap.runtime.gpu_slots
    params:
        base_model=BASE_MODEL,
        sampling=SETTINGS.sampling.params(),
        size=lambda wc: PLAN.shard_sizes(wc.cls)[int(wc.shard)],
        # The prompt itself, not the template: rewording another class redraws nothing here.
        prompt=lambda wc: SETTINGS.prompts.prompt(wc.cls, wc.adjective),
        negative=SETTINGS.prompts.negative,
        seed=config["seed"],
        runtime=SETTINGS.runtime.params(),
    script:
        "../scripts/generate_shard.py"


rule generate_guided_shard:
    """One shard of guided (image-to-image) images for (arm, class, adjective, shard): each starts
    from one of the arm's training originals of the class (read from the split manifest), noised
    to its strength and denoised with the prompt and the class LoRA. PNGs + metadata.csv naming
    each image's guide and strength; lineage.json lists the guides for the audit."""
    input:
        base_model_input,
        lora=lora_dir,
        checked=generation_inputs_check(GUIDED),
        manifest=MANIFEST,  # the guides: the arm's training rows of the class
    output:
        directory(f"results/{GUIDED}/{{arm}}/{{cls}}/{{adjective}}/shard{{shard}}"),
    log:
        f"{LOGS}/generate_guided_shard/{{arm}}/{{cls}}/{{adjective}}/shard{{shard}}.log",
    benchmark:
        f"{BENCH}/generate_guided_shard/{{arm}}/{{cls}}/{{adjective}}/shard{{shard}}.tsv"
    priority: 1
    conda:
        ENV
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=1,
        gpu_slot=DIFFUSION,
    params:
        base_model=BASE_MODEL,
        sampling=SETTINGS.sampling.params(),
        strength=list(SETTINGS.strength),
        size=lambda wc: PLAN.shard_sizes(wc.cls, GUIDED)[int(wc.shard)],
        # Where the shard starts in its (arm, class, adjective) stream: its guides follow from it.
        first_index=lambda wc: int(wc.shard) * PLAN.shard_size,
        prompt=lambda wc: SETTINGS.prompts.prompt(wc.cls, wc.adjective),
        negative=SETTINGS.prompts.negative,
        seed=config["seed"],
        runtime=SETTINGS.runtime.params(),
    script:
        "../scripts/generate_guided_shard.py"


rule index_synthetic:
    """The synthetic images of one arm as a test table (path, class, adjective, mode): class
    fidelity of the `original` classifiers of the arm's folds, per generation mode (text-to-image,
    guided, each filtered: the images its filter kept)."""
    input:
        unpack(lambda wc: arm_test_set_inputs(wc.arm)),
    output:
        f"results/test_sets/{SYNTHETIC.name}/{{arm}}.csv",
    log:
        f"{LOGS}/index_synthetic/{{arm}}.log",
    benchmark:
        f"{BENCH}/index_synthetic/{{arm}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        other_modes=lambda wc: arm_other_modes(wc.arm),
    script:
        "../scripts/index_synthetic.py"
