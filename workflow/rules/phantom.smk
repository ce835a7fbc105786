if SETTINGS.phantom:

    rule simulate_phantom:
        """Simulate one device's breast-ultrasound phantom images (embedded default only)."""
        output:
            directory("resources/phantom/{device}"),
        log:
            f"{LOGS}/simulate_phantom/{{device}}.log",
        benchmark:
            f"{BENCH}/simulate_phantom/{{device}}.tsv"
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
