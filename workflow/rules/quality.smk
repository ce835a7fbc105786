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


rule realism:
    """How far the synthetic images are from real ones, and what bounds them: the autoencoder
    ceiling (each arm's training originals through the base model's VAE and back: PSNR, SSIM, a
    two-sample test), classifier two-sample tests real vs synthetic (image statistics with
    boosted trees; each fold's original judge's features with a linear probe), and a figure per
    class. Real images: each arm's training originals only (listed in inputs.csv)."""
    input:
        base_model_input,
        manifest=MANIFEST,
        shards=all_shard_dirs(),
        models=expand(
            "results/classifiers/original/{arch}/fold{fold}/rep0",
            arch=SETTINGS.architectures,
            fold=FOLDS,
        ),
        # guided shards and filter verdicts: the other generation modes' images
        other_modes=[
            path
            for mode in other_generation_modes().values()
            for paths in (*mode["shards"].values(), mode["verdicts"].values())
            for path in paths
        ],
    output:
        autoencoder="results/realism/autoencoder.csv",
        two_sample="results/realism/two_sample.csv",
        inputs="results/realism/inputs.csv",
        figures=expand("results/realism/{cls}.png", cls=SETTINGS.classes),
    log:
        f"{LOGS}/realism.log",
    benchmark:
        f"{BENCH}/realism.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=1,
        gpu_slot=DIFFUSION,
    params:
        base_model=BASE_MODEL,
        arms=[SETTINGS.arm(fold) for fold in FOLDS],
        arm_shards={arm: arm_shard_dirs(arm) for arm in SETTINGS.arms},
        other_modes=other_generation_modes(),
        resolution=config["generation"]["resolution"],
        grayscale=config["generation"]["grayscale"],
        judges={
            arch: [
                f"results/classifiers/original/{arch}/fold{fold}/rep0"
                for fold in FOLDS
            ]
            for arch in SETTINGS.architectures
        },
        classes=SETTINGS.classes,
        seed=config["seed"],
        # The device only: the measures run in fp32 whatever precision the GPU stages use.
        device=SETTINGS.runtime.device,
    script:
        "../scripts/realism.py"
