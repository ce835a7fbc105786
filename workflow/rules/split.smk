rule split:
    """Index dataset.root and split it: held-out test split + stratified folds."""
    input:
        dataset_root_input,
    output:
        manifest=MANIFEST,
        counts="results/splits/counts.csv",
        near_duplicates="results/splits/near_duplicates.csv",
        lineage="results/splits/lineage.json",
    log:
        f"{LOGS}/split.log",
    benchmark:
        f"{BENCH}/split.tsv"
    priority: 3  # upstream of pretrain_base, the critical path: before the original classifiers
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        classes=SETTINGS.classes,
        exclude=config["dataset"]["exclude"],
        # The dataset's images (paths and contents): a changed image reruns the split.
        dataset=DATASET_STATE,
        test_fraction=config["dataset"]["test_fraction"],
        folds=config["dataset"]["folds"],
        near_duplicate_distance=config["dataset"]["near_duplicate_distance"],
        mixed_label_groups=config["dataset"]["mixed_label_groups"],
        seed=config["seed"],
        expected_train_counts=SETTINGS.train_counts,
        min_size=max(
            config["lora"]["resolution"],
            config["generation"]["resolution"],
            config["classifier"]["image_size"],
        ),
    script:
        "../scripts/split.py"


rule index_test_set:
    """A test set as a (path, class) table: the internal test split or an unseen set."""
    input:
        unpack(test_set_inputs),
    output:
        "results/test_sets/{test_set}.csv",
    log:
        f"{LOGS}/index_test_set/{{test_set}}.log",
    benchmark:
        f"{BENCH}/index_test_set/{{test_set}}.tsv"
    priority: 3  # upstream of pretrain_base, the critical path: before the original classifiers
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        kind=lambda wc: str(SETTINGS.test_set(wc.test_set).kind),
        # An unseen set's images (paths and contents): a changed image reindexes it.
        files=lambda wc: UNSEEN_STATES.get(wc.test_set, ""),
        classes=SETTINGS.classes,
        exclude=config["dataset"]["exclude"],
        max_distance=config["dataset"]["near_duplicate_distance"],
    script:
        "../scripts/index_test_set.py"
