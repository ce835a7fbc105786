if SETTINGS.pretrain:

    rule pretrain_base:
        """Build the small Stable Diffusion (real SD v1.x classes) and train it on the training split."""
        input:
            manifest=MANIFEST,
        output:
            directory(BASE_MODEL),
        log:
            f"{LOGS}/pretrain_base.log",
        benchmark:
            f"{BENCH}/pretrain_base.tsv"
        priority: 3  # the critical path: start the diffusion chain first
        conda:
            ENV
        threads: config["resources"]["threads_pretrain"]
        resources:
            mem_mb=8000,
            runtime=120,
            gpu=1,
        params:
            pretrain=config["base_model"]["pretrain"],
            classes=SETTINGS.classes,
            adjectives=PLAN.adjectives,
            template=lambda wildcards: config["prompts"]["template"],
            subjects=config["prompts"]["subjects"],
            seed=config["seed"],
        script:
            "../scripts/pretrain_base.py"


rule train_lora:
    """One LoRA per class on that class's training-split images with the class prompt."""
    input:
        base_model_input,
        manifest=MANIFEST,
    output:
        directory("results/lora/{cls}"),
    log:
        f"{LOGS}/train_lora/{{cls}}.log",
    benchmark:
        f"{BENCH}/train_lora/{{cls}}.tsv"
    priority: 2
    conda:
        ENV
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
    params:
        base_model=BASE_MODEL,
        lora=config["lora"],
        template=lambda wildcards: config["prompts"]["template"],
        subjects=config["prompts"]["subjects"],
        checkpoint_dir=lambda wc: f"results/lora/.checkpoints/{wc.cls}",
    script:
        "../scripts/train_lora.py"


rule train_lora_shared:
    """One LoRA over all classes (config lora.mode: shared), each image with its class prompt."""
    input:
        base_model_input,
        manifest=MANIFEST,
    output:
        directory(f"results/lora/{SHARED_LORA}"),
    log:
        f"{LOGS}/train_lora/{SHARED_LORA}.log",
    benchmark:
        f"{BENCH}/train_lora/{SHARED_LORA}.tsv"
    priority: 2
    conda:
        ENV
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
    params:
        base_model=BASE_MODEL,
        lora=config["lora"],
        template=lambda wildcards: config["prompts"]["template"],
        subjects=config["prompts"]["subjects"],
        checkpoint_dir=f"results/lora/.checkpoints/{SHARED_LORA}",
    script:
        "../scripts/train_lora.py"
