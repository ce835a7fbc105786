rule report:
    """Tables with paired tests and bootstrap CIs, robustness, synthetic-image quality, LoRA training
    histories, figures, HTML page."""
    input:
        evaluations=evaluation_targets(),
        quality=expand(
            "results/quality/{arch}/quality.csv", arch=SETTINGS.architectures
        ),
        adjective_effect=expand(
            "results/quality/{arch}/adjective_effect.csv", arch=SETTINGS.architectures
        ),
        near_copies=expand(
            "results/quality/{arch}/near_copies.csv", arch=SETTINGS.architectures
        ),
        realism_autoencoder="results/realism/autoencoder.csv",
        realism_two_sample="results/realism/two_sample.csv",
        realism_figures=expand("results/realism/{cls}.png", cls=SETTINGS.classes),
        manifest=MANIFEST,
        near_duplicates="results/splits/near_duplicates.csv",
        audit_summary="results/audit/summary.csv",
        audit_findings="results/audit/findings.csv",
        audit_verdict="results/audit/verdict.txt",
        shards=all_shard_dirs(),
        filters=filter_tables(),
        loras=expand(
            "results/lora/{arm}/{lora}", arm=SETTINGS.arms, lora=SETTINGS.lora_names
        ),
        # Every classifier's dataset: the expansion ratio it really trained with.
        datasets=[
            f"results/datasets/{d['variant']}/fold{d['fold']}.csv"
            for d in DATASET_TABLES
        ],
    output:
        metrics="results/report/metrics.csv",
        summary="results/report/summary.csv",
        bootstrap="results/report/bootstrap.csv",
        primary_contrast="results/report/primary_contrast.csv",
        test_sets="results/report/test_sets.csv",
        expansion="results/report/expansion.csv",
        modes="results/report/modes.csv",
        filter="results/report/filter.csv",
        robustness_pooled="results/report/robustness_pooled.csv",
        fidelity="results/report/fidelity.csv",
        robustness="results/report/robustness.csv",
        quality="results/report/quality.csv",
        adjective_effect="results/report/adjective_effect.csv",
        near_copies="results/report/near_copies.csv",
        realism="results/report/realism.csv",
        realism_tests="results/report/realism_tests.csv",
        autoencoder="results/report/autoencoder.csv",
        runtimes="results/report/runtimes.csv",
        readable=report(
            "results/report/summary.md",
            caption="../report/summary.rst",
            category="1. Summary",
        ),
        html=report(
            "results/report/index.html",
            caption="../report/index.rst",
            category="1. Summary",
        ),
        fig_grid=report(
            "results/report/figures/image_grid.png",
            caption="../report/image_grid.rst",
            category="2. Synthetic images",
        ),
        fig_lora_loss=report(
            "results/report/figures/lora_loss.png",
            caption="../report/lora_loss.rst",
            category="2. Synthetic images",
            subcategory="LoRA training",
        ),
        fig_lora_validation=report(
            "results/report/figures/lora_validation.png",
            caption="../report/lora_validation.rst",
            category="2. Synthetic images",
            subcategory="LoRA training",
        ),
        fig_scores=report(
            "results/report/figures/scores.png",
            caption="../report/scores.rst",
            category="3. Scores",
        ),
        fig_confusion=report(
            "results/report/figures/confusion.png",
            caption="../report/confusion.rst",
            category="3. Scores",
        ),
        fig_robustness=report(
            "results/report/figures/robustness.png",
            caption="../report/robustness.rst",
            category="4. Robustness",
        ),
        fig_runtimes=report(
            "results/report/figures/runtimes.png",
            caption="../report/runtimes.rst",
            category="5. Run time",
        ),
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{BENCH}/report.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        classes=SETTINGS.classes,
        # A shared LoRA's validation images are shown by class: its training prompt -> class.
        prompt_classes={
            SETTINGS.prompts.training_prompt(cls): cls for cls in SETTINGS.classes
        },
        bootstrap=config["evaluation"]["bootstrap"],
        seed=config["seed"],
        benchmarks=BENCH,
        near_duplicate_distance=config["dataset"]["near_duplicate_distance"],
        mixed_label_groups=config["dataset"]["mixed_label_groups"],
        lora_scope=SETTINGS.lora_scope,
        pretrain_corpus=SETTINGS.pretrain_corpus,
        contrast=SETTINGS.contrast.params(),
        datasets=DATASET_TABLES,
    script:
        "../scripts/report.py"
