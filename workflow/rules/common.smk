import re
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")

# The logic lives in the meddap package; it is importable without installation too (conda envs).
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from meddap.settings import ConfigError, resolve  # noqa: E402

validate(config, workflow.source_path("../schemas/config.schema.yaml"))
try:
    SETTINGS = resolve(config)
except (ConfigError, ValueError) as error:
    raise WorkflowError(f"Invalid configuration: {error}") from None

PLAN = SETTINGS.plan
ENV = "../envs/meddap.yaml"
LOGS = "results/logs"
BENCH = "results/benchmarks"
THREADS = config["resources"]["threads_per_job"]


def alternation(names):
    """A wildcard regex that matches exactly these names."""
    return "|".join(
        re.escape(str(name)) for name in sorted(names, key=len, reverse=True)
    )


wildcard_constraints:
    cls=alternation(SETTINGS.classes),
    adjective=alternation(PLAN.adjectives),
    shard=r"\d{3}",
    variant=alternation([v.name for v in PLAN.variants()]),
    arch=alternation(SETTINGS.architectures),
    fold=r"\d+",
    test_set=alternation(SETTINGS.test_sets),
    device=r"[A-Za-z0-9][A-Za-z0-9_.-]*",


# ------------------------------------------------------------------ paths
MANIFEST = "results/splits/manifest.csv"
BASE_MODEL = SETTINGS.base_model


def shard_dir(cls, adjective, shard):
    return f"results/synthetic/{cls}/{adjective}/shard{int(shard):03d}"


def all_shard_dirs():
    return [shard_dir(c, a, s) for c, a, s in PLAN.all_shards()]


def variant_shard_dirs(wildcards):
    return [
        shard_dir(c, a, s)
        for c, a, s in PLAN.shards_for(PLAN.variant(wildcards.variant))
    ]


SHARED_LORA = "shared"


def lora_dir(wildcards):
    """The LoRA that generates a class: its own, or the one shared by all classes."""
    if config["lora"]["mode"] == "shared":
        return f"results/lora/{SHARED_LORA}"
    return f"results/lora/{wildcards.cls}"


def variant_classic_dirs(wildcards):
    """The classic-augmentation folders (one per fold) that a classic_x<ratio> variant draws from."""
    if PLAN.variant(wildcards.variant).kind != "classic":
        return []
    return expand("results/classic/fold{fold}", fold=range(config["dataset"]["folds"]))


def dataset_root_input(wildcards):
    """The dataset folder: a rule output for the phantom, an existing folder otherwise."""
    return config["dataset"]["root"]


def base_model_input(wildcards):
    """The base model folder as an input when this workflow builds it (else nothing to wait for)."""
    return [BASE_MODEL] if SETTINGS.pretrain else []


def test_set_inputs(wildcards):
    if wildcards.test_set == "test":
        return [MANIFEST]
    if wildcards.test_set == "synthetic":
        return all_shard_dirs()
    return [SETTINGS.unseen[wildcards.test_set]]


def evaluation_test_sets(wildcards):
    """The test-set tables one classifier is scored on: synthetic images only for `original`."""
    return [
        f"results/test_sets/{test_set}.csv"
        for test_set in SETTINGS.test_sets
        if test_set != "synthetic" or wildcards.variant == "original"
    ]


def evaluation_targets():
    """One evaluation folder per trained classifier (variant, arch, fold)."""
    return [
        f"results/evaluation/{variant.name}/{arch}/fold{fold}"
        for variant in PLAN.variants()
        for arch in SETTINGS.architectures
        for fold in range(config["dataset"]["folds"])
    ]


def report_outputs():
    return [
        "results/report/metrics.csv",
        "results/report/summary.csv",
        "results/report/bootstrap.csv",
        "results/report/fidelity.csv",
        "results/report/robustness.csv",
        "results/report/quality.csv",
        "results/report/summary.md",
        "results/report/index.html",
    ]
