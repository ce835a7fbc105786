if SETTINGS.phantom:

    rule simulate_phantom:
        """Simulate one device's breast-ultrasound phantom images (embedded default only)."""
        output:
            directory("resources/phantom/{device}"),
        log:
            f"{LOGS}/simulate_phantom/{{device}}.log",
        benchmark:
            f"{BENCH}/simulate_phantom/{{device}}.tsv"
        priority: 3  # upstream of pretrain_base, the critical path: before the original classifiers
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        params:
            device=lambda wc: config["phantom"]["devices"][wc.device],
            counts=lambda wc: (
                config["phantom"]["images_per_class"]
                if wc.device == config["phantom"]["train_device"]
                else {
                    c: config["phantom"]["unseen_images_per_class"]
                    for c in SETTINGS.classes
                }
            ),
            image_size=config["phantom"]["image_size"],
            seed=config["seed"],
        script:
            "../scripts/simulate_phantom.py"


if SETTINGS.pretrain and SETTINGS.pretrain_corpus == PHANTOM_CORPUS:

    rule simulate_pretrain_corpus:
        """The small base model's pretraining corpus: phantom images of the training device,
        simulated apart from the dataset (own seed stream), as Stable Diffusion's web data is.
        """
        output:
            directory(PRETRAIN_CORPUS),
        log:
            f"{LOGS}/simulate_pretrain_corpus.log",
        benchmark:
            f"{BENCH}/simulate_pretrain_corpus.tsv"
        priority: 3  # upstream of pretrain_base, the critical path: before the original classifiers
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        params:
            device=config["phantom"]["devices"][config["phantom"]["train_device"]],
            device_name=config["phantom"]["train_device"],
            counts={
                c: config["phantom"]["pretrain_images_per_class"]
                for c in SETTINGS.classes
            },
            image_size=config["phantom"]["image_size"],
            seed=config["seed"],
        script:
            "../scripts/simulate_pretrain_corpus.py"
