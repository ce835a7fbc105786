if SETTINGS.pretrain:

    rule pretrain_base:
        """Build the small Stable Diffusion (real SD v1.x classes) and train it on its captioned
        corpus: the simulated pretraining corpus, or the training split when asked for.
        """
        input:
            corpus=pretrain_corpus_input,
            manifest=MANIFEST,
            unseen=expand("results/test_sets/{name}.csv", name=list(SETTINGS.unseen)),
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
            gpu_slot=DIFFUSION,  # a GPU (or a slot of one) of its own: meddap.runtime.gpu_slots
        params:
            pretraining=SETTINGS.pretraining.params(),
            classes=SETTINGS.classes,
            # The words, not the prompts: a rewording with words the tokenizer already has does
            # not retrain the base model (and with it the whole DAG).
            tokenizer_words=prompt_words(
                SETTINGS.classes,
                PLAN.adjectives,
                config["prompts"]["template"],
                config["prompts"]["subjects"],
            ),
            seed=config["seed"],
            max_distance=config["dataset"]["near_duplicate_distance"],
        script:
            "../scripts/pretrain_base.py"


if SETTINGS.base_source.kind == SINGLE_FILE:

    rule convert_base_model:
        """Convert the single-file SD v1.x checkpoint once, offline, into the diffusers folder every job reads."""
        input:
            checkpoint=SETTINGS.base_source.location,
            tokenizer=(
                [SETTINGS.base_source.tokenizer]
                if SETTINGS.base_source.tokenizer
                else []
            ),
        output:
            directory(BASE_MODEL),
        log:
            f"{LOGS}/convert_base_model.log",
        benchmark:
            f"{BENCH}/convert_base_model.tsv"
        priority: 3
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=16000,
            runtime=30,
        script:
            "../scripts/convert_base_model.py"


if SETTINGS.base_source.kind == HUB:

    rule download_base_model:
        """Download the hub model once, at the pinned revision, into the folder every job reads offline."""
        output:
            directory(BASE_MODEL),
        log:
            f"{LOGS}/download_base_model.log",
        benchmark:
            f"{BENCH}/download_base_model.tsv"
        priority: 3
        localrule: True  # cluster nodes are often offline: download on the submitting host
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=2000,
            runtime=120,
        params:
            repo_id=SETTINGS.base_source.location,
            revision=SETTINGS.base_source.revision,
        script:
            "../scripts/download_base_model.py"


rule train_lora:
    """One LoRA per class (or one shared by all classes) of one generative arm, trained only on
    the arm's originals: the training split less the fold's validation images (lora.scope: fold).
    """
    input:
        base_model_input,
        manifest=MANIFEST,
    output:
        directory("results/lora/{arm}/{lora}"),
    log:
        f"{LOGS}/train_lora/{{arm}}/{{lora}}.log",
    benchmark:
        f"{BENCH}/train_lora/{{arm}}/{{lora}}.tsv"
    priority: 2
    conda:
        ENV
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
        gpu_slot=DIFFUSION,  # a GPU (or a slot of one) of its own: meddap.runtime.gpu_slots
    params:
        base_model=BASE_MODEL,
        lora=SETTINGS.lora.params(),
        # The training prompt(s) themselves: rewording one class retrains only its LoRAs.
        prompts=lambda wc: SETTINGS.lora_prompts(wc.lora),
        checkpoint_dir=lambda wc: f"results/lora/.checkpoints/{wc.arm}/{wc.lora}",
        seed=config["seed"],
        runtime=SETTINGS.runtime.params(),
    script:
        "../scripts/train_lora.py"
