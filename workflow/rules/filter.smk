rule train_judge:
    """The filter's judge of one generative arm (generation.filter): a classifier trained on the
    arm's training originals only, for classifier.epochs with the last epoch kept (no validation
    rows, so no validation image trains or selects it); its lineage lists those originals.
    """
    input:
        manifest=MANIFEST,
    output:
        directory("results/judges/{arm}"),
    log:
        f"{LOGS}/train_judge/{{arm}}.log",
    benchmark:
        f"{BENCH}/train_judge/{{arm}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        mem_mb=6000,
        runtime=240,
        gpu=1,
        gpu_slot=CLASSIFIER,
    params:
        classifier=SETTINGS.classifier.params(),
        architecture=SETTINGS.filter.judge_architecture if SETTINGS.filter else None,
        classes=SETTINGS.classes,
        seed=config["seed"],
        device=SETTINGS.runtime.device,
    script:
        "../scripts/train_judge.py"


rule filter_shards:
    """The judge's verdict on every image of one arm's shards of a stream: its class and
    confidence, the perceptual-hash distance to the nearest training original, kept or why not.
    """
    input:
        shards=lambda wc: [
            shard_dir(wc.arm, c, a, s, wc.stream)
            for c, a, s in PLAN.all_shards(wc.stream)
        ],
        judge="results/judges/{arm}",
        manifest=MANIFEST,
    output:
        "results/filter/{stream}/{arm}.csv",
    log:
        f"{LOGS}/filter_shards/{{stream}}/{{arm}}.log",
    benchmark:
        f"{BENCH}/filter_shards/{{stream}}/{{arm}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=1,
        gpu_slot=CLASSIFIER,
    params:
        filter=SETTINGS.filter.params() if SETTINGS.filter else None,
        device=SETTINGS.runtime.device,
    script:
        "../scripts/filter_shards.py"
