import os
import re
import tomllib
from dataclasses import asdict
from pathlib import Path

from snakemake.logging import logger
from snakemake.utils import min_version

min_version("9.0")


def workflow_version():
    """The version of this workflow: its repository's pyproject.toml (read through Snakemake's
    source cache, so it is found for a clone, a module and a deployed workflow alike).
    """
    with open(workflow.source_path("../../pyproject.toml"), "rb") as handle:
        return tomllib.load(handle)["project"]["version"]


def require_meddap(version):
    """The logic lives in the meddap package, imported from the environment that runs Snakemake
    (and, with --use-conda, installed by workflow/envs/meddap.yaml): it must be there, at this
    workflow's version. Otherwise stop with one line that says what to install."""
    try:
        import meddap
    except ImportError:
        found = "it is not installed"
    else:
        if meddap.__version__ == version:
            return
        found = f"found meddap {meddap.__version__} at {Path(meddap.__file__).parent}"
    # A local workflow (a clone, or a module given by path): its repository root; a remote one: its tag.
    rules_dir = workflow.current_basedir.get_path_or_uri(secret_free=True)
    root = Path(rules_dir).parents[1] if Path(rules_dir).is_dir() else None
    source = (
        root
        if root and (root / "src" / "meddap").is_dir()
        else f"git+<this workflow's repository>@v{version}"
    )
    raise WorkflowError(
        f"This workflow needs the meddap package {version} ({found}): pip install '{source}'"
    )


WORKFLOW_VERSION = workflow_version()
require_meddap(WORKFLOW_VERSION)

from meddap.audit.verify import VerifyError, verify_results
from meddap.config.loading import validate_config
from meddap.config.resolve import ConfigError, resolve
from meddap.data.dataset import DatasetError, dataset_index, dataset_state
from meddap.data.folder_checks import (
    byte_identical_copies,
    check_image_files,
    refuse_copies,
)
from meddap.diffusion.base_models import HUB, SINGLE_FILE
from meddap.evidence.modes import FILTERED_SUFFIX, TEXT_TO_IMAGE_MODE
from meddap.provenance.lineage import CACHE_VARIABLE, DEFAULT_CACHE, DigestCache
from meddap.runtime.gpu_slots import CLASSIFIER, DIFFUSION, SETTINGS_VARIABLE
from meddap.runtime.warm import stop_servers
from meddap.settings.choices import PHANTOM_CORPUS
from meddap.settings.kinds import SYNTHETIC, TestSetKind
from meddap.settings.plan import CLASSIC, GUIDED, ORIGINAL, TEXT_TO_IMAGE
from meddap.settings.prompts import prompt_words

try:  # the schema (its defaults filled in), then what it cannot express: one line naming the key
    validate_config(config, workflow.source_path("../schemas/config.schema.yaml"))
    SETTINGS = resolve(config)
except (ConfigError, ValueError) as error:
    raise WorkflowError(f"Invalid configuration: {error}") from None
for warning in SETTINGS.warnings:
    logger.warning(f"meddap: {warning}")


def stop_warm_servers():
    """Stop the warm servers this folder's jobs started (they stop by themselves when idle, too)."""
    stopped = stop_servers(os.getcwd())
    if stopped:
        logger.info(f"meddap: stopped warm server(s) {stopped}")


def check_cuda():
    """device: cuda where the jobs run here: a usable CUDA device, or stop before any job (and so
    before Snakemake deletes a job's previous output). Jobs sent to a cluster run elsewhere: the
    submit host needs no GPU."""
    if config["device"] != "cuda" or not (
        workflow.is_main_process and workflow.local_exec
    ):
        return
    from meddap.runtime.devices import cuda_problem

    problem = cuda_problem()
    if problem:
        raise WorkflowError(
            f"Invalid configuration: device: cuda, but {problem}; "
            "use device: auto (the GPU when there is one) or cpu, or run on a GPU machine or cluster"
        )


check_cuda()

PLAN = SETTINGS.plan
ENV = "../envs/meddap.yaml"
LOGS = "results/logs"
BENCH = "results/benchmarks"
THREADS = config["resources"]["threads_per_job"]

# File digests are cached by path, size and mtime_ns (here at parse time and in the jobs' lineage records).
os.environ.setdefault(CACHE_VARIABLE, DEFAULT_CACHE)
# How local GPU jobs share the GPUs (resources.gpu_*): through the environment, not params, since a
# job's device changes none of its outputs. The GPU jobs name their kind in `resources: gpu_slot`.
os.environ[SETTINGS_VARIABLE] = SETTINGS.gpu_slots.to_env()


def dataset_fingerprint():
    """What split reads of dataset.root, as one string (a digest of its images' relative paths and
    contents; "as simulated" for an untouched phantom): a changed, added, removed or renamed
    image changes split's params and so reruns it and what depends on it."""
    cache = DigestCache(os.environ[CACHE_VARIABLE])
    try:
        state = dataset_state(
            config["dataset"]["root"],
            SETTINGS.classes,
            config["dataset"]["exclude"],
            cache,
            simulated=SETTINGS.phantom,
        )
    except DatasetError as error:  # e.g. an image that cannot be read
        raise WorkflowError(f"Invalid data: {error}") from None
    finally:
        cache.save()
    return state


def image_digests(root, classes, cache):
    """path -> sha256 of a folder's class images (cached: a stat per file after the first parse)."""
    entries = dataset_index(root, classes, config["dataset"]["exclude"], cache)
    return {str(Path(root) / entry["path"]): entry["sha256"] for entry in entries}


def check_data_folders():
    """Your own images, before any job: every file an image (its header read, cached) and not
    tiny, and no unseen set holding a byte-identical copy of a dataset image. The phantom's
    folders are simulated by a rule and checked by its tests."""
    if SETTINGS.phantom:
        return
    resolution = max(SETTINGS.lora.resolution, SETTINGS.classifier.image_size)
    cache = DigestCache(os.environ[CACHE_VARIABLE])
    dataset = image_digests(config["dataset"]["root"], SETTINGS.classes, cache)
    try:
        for warning in check_image_files(list(dataset), resolution, cache).warnings:
            logger.warning(f"meddap: {warning}")
        for name, root in SETTINGS.unseen.items():
            try:
                digests = (
                    image_digests(root, None, cache) if Path(root).is_dir() else {}
                )
            except DatasetError:
                continue  # index_test_set reports it, naming the folder
            what = f"unseen set {name!r}"
            for warning in check_image_files(
                list(digests), resolution, cache, what
            ).warnings:
                logger.warning(f"meddap: {warning}")
            refuse_copies(name, byte_identical_copies(dataset, digests))
    except DatasetError as error:
        raise WorkflowError(f"Invalid data: {error}") from None
    finally:
        cache.save()


DATASET_STATE = dataset_fingerprint()
check_data_folders()


def unseen_fingerprints():
    """The same for each unseen set in a folder (its images are read by every evaluation)."""
    cache = DigestCache(os.environ[CACHE_VARIABLE])
    states = {}
    for name, root in SETTINGS.unseen.items():
        if not (SETTINGS.phantom or Path(root).is_dir()):
            continue  # a CSV of paths: the file itself is the input
        try:
            states[name] = dataset_state(
                root,
                None,
                config["dataset"]["exclude"],
                cache,
                simulated=SETTINGS.phantom,
            )
        except DatasetError as error:  # the job reports it, naming the folder
            states[name] = f"unreadable: {error}"
    cache.save()
    return states


UNSEEN_STATES = unseen_fingerprints()


def forced(target):
    """Whether the command line forces ``target`` (--forceall, or --forcerun naming it or its rule)."""
    settings = workflow.dag_settings
    if settings.forceall:
        return True
    for item in settings.forcerun:
        item = str(item).rstrip("/")
        if item == target:
            return True
        if workflow.is_rule(item) and workflow.get_rule(item).is_producer(target):
            return True
    return False


def producible(target):
    """Whether a rule of this config's workflow makes ``target`` (an intermediate of another config,
    e.g. a fold arm's shard after lora.scope: split, is not this run's concern)."""
    return any(rule.is_producer(target) for rule in workflow.rules)


def check_intermediates():
    """Snakemake does not regenerate an intermediate deleted while its consumers are complete, nor
    see a file changed inside an output folder. So when the default target's DAG is built (a dry run
    too): every intermediate the results record (meddap verify) is present and unchanged, or the run
    stops naming each one with the command that regenerates it. Left to Snakemake: targets the
    command line forces, what is stale only because what it was made from changed (a rerun of that
    input reruns it; your images are digested into the params of the split and the test-set
    indexes), and intermediates this config does not make."""
    if not (workflow.is_main_process and Path("results").is_dir()) or workflow.touch:
        return
    try:
        findings = verify_results("results")
    except VerifyError:
        return  # no recorded intermediates yet
    stale = [
        finding
        for finding in findings
        if finding.path.startswith("results/")
        and not finding.upstream
        and not forced(finding.target)
        and producible(finding.target)
    ]
    if stale:
        targets = sorted({finding.target for finding in stale})
        lines = [finding.line() for finding in stale[:20]]
        if len(stale) > 20:
            lines.append(
                f"... and {len(stale) - 20} more (meddap verify lists them all)"
            )
        raise WorkflowError(
            f"results/ holds {len(stale)} missing or changed intermediate(s) that Snakemake would take as "
            "they are:\n"
            + "\n".join(lines)
            + f"\nregenerate them all: snakemake --cores all --forcerun {' '.join(targets)}"
        )


def checked(outputs):
    """The default target's inputs, after check_intermediates (run when the DAG is built, where the
    command line's --forcerun is known)."""

    def inputs(wildcards):
        check_intermediates()
        return outputs

    return inputs


def alternation(names):
    """A wildcard regex that matches exactly these names."""
    return "|".join(
        re.escape(str(name)) for name in sorted(names, key=len, reverse=True)
    )


wildcard_constraints:
    cls=alternation(SETTINGS.classes),
    adjective=alternation(PLAN.adjectives),
    stream=alternation([TEXT_TO_IMAGE, GUIDED]),
    shard=r"\d{3}",
    variant=alternation([v.name for v in PLAN.variants()]),
    arch=alternation(SETTINGS.architectures),
    fold=r"\d+",
    replicate=r"\d+",
    arm=alternation(SETTINGS.arms),
    lora=alternation(SETTINGS.lora_names),
    test_set=alternation([test_set.name for test_set in SETTINGS.indexed_test_sets]),
    device=r"[A-Za-z0-9][A-Za-z0-9_.-]*",


# ------------------------------------------------------------------ paths
MANIFEST = "results/splits/manifest.csv"
BASE_MODEL = SETTINGS.base_model
PRETRAIN_CORPUS = "resources/phantom/pretrain-corpus"
FOLDS = list(range(SETTINGS.folds))
# What each dataset-variant table is, as data (the report reads them in this order).
DATASET_TABLES = [
    {"variant": v.name, "fold": f} for v in PLAN.variants() for f in FOLDS
]
REPLICATES = list(range(SETTINGS.replicates))


def shard_dir(arm, cls, adjective, shard, stream=TEXT_TO_IMAGE):
    """A shard folder: results/synthetic/... (text-to-image) or results/guided/... (guided)."""
    return f"results/{stream}/{arm}/{cls}/{adjective}/shard{int(shard):03d}"


def arm_shard_dirs(arm):
    """Every text-to-image shard of one generative arm."""
    return [shard_dir(arm, c, a, s) for c, a, s in PLAN.all_shards()]


def arm_test_set_inputs(arm):
    """index_synthetic's inputs: the arm's text-to-image shards, and its shards and filter tables of
    the other generation modes."""
    inputs = {"text_to_image": arm_shard_dirs(arm)}
    for name, mode in other_generation_modes().items():
        inputs[name] = mode["shards"][arm] + (
            [mode["verdicts"][arm]] if mode["verdicts"] else []
        )
    return inputs


def arm_other_modes(arm):
    """mode -> {"shards": the arm's shard folders, "verdicts": its filter table or None}."""
    return {
        name: {"shards": mode["shards"][arm], "verdicts": mode["verdicts"].get(arm)}
        for name, mode in other_generation_modes().items()
    }


def all_shard_dirs():
    return [path for arm in SETTINGS.arms for path in arm_shard_dirs(arm)]


def fold_shard_dirs(wildcards):
    """The shards a variant's classifier of one fold trains on: those of the fold's arm, in the
    variant's stream (text-to-image or guided)."""
    arm = SETTINGS.arm(int(wildcards.fold))
    variant = PLAN.variant(wildcards.variant)
    return [
        shard_dir(arm, c, a, s, variant.stream) for c, a, s in PLAN.shards_for(variant)
    ]


def lora_dir(wildcards):
    """The LoRA that generates a class in an arm: its own, or the one shared by all classes."""
    return f"results/lora/{wildcards.arm}/{SETTINGS.lora_for_class(wildcards.cls)}"


def generation_inputs_check(stream):
    """The check that a shard's LoRA and base model load, done before the shard job starts (one
    per shard of each stream, so a check run for a new shard reruns no other shard)."""

    def check(wildcards):
        return (
            f"results/checks/generation_inputs/{stream}/{wildcards.arm}/{wildcards.cls}/"
            f"{wildcards.adjective}/shard{wildcards.shard}.ok"
        )

    return check


def fold_verdicts(wildcards):
    """The filter's verdicts on the fold's arm's shards, for a filtered variant."""
    variant = PLAN.variant(wildcards.variant)
    if not variant.filtered:
        return []
    return [f"results/filter/{variant.stream}/{SETTINGS.arm(int(wildcards.fold))}.csv"]


def other_generation_modes():
    """The generation modes besides text-to-image that realism and class fidelity measure apart: mode ->
    {"stream": its shards' stream, "shards": arm -> shard folders, "verdicts": arm -> the filter's
    table (a filtered mode: the images it kept), or {}}."""
    modes = {}
    if PLAN.all_shards(GUIDED):
        modes[GUIDED] = {"stream": GUIDED, "verdicts": {}}
    for stream in sorted({v.stream for v in PLAN.variants() if v.filtered}):
        name = TEXT_TO_IMAGE_MODE if stream == TEXT_TO_IMAGE else GUIDED
        modes[name + FILTERED_SUFFIX] = {
            "stream": stream,
            "verdicts": {
                arm: f"results/filter/{stream}/{arm}.csv" for arm in SETTINGS.arms
            },
        }
    for mode in modes.values():
        mode["shards"] = {
            arm: [
                shard_dir(arm, c, a, s, mode["stream"])
                for c, a, s in PLAN.all_shards(mode["stream"])
            ]
            for arm in SETTINGS.arms
        }
    return modes


def filter_tables():
    """Every filter table (one per arm and stream that a filtered variant reads)."""
    streams = sorted({v.stream for v in PLAN.variants() if v.filtered})
    return [f"results/filter/{s}/{arm}.csv" for s in streams for arm in SETTINGS.arms]


def fold_classic_dir(wildcards):
    """The classic-augmentation folder of the fold, for a classic_x<ratio> variant."""
    if PLAN.variant(wildcards.variant).kind != CLASSIC:
        return []
    return [f"results/classic/fold{wildcards.fold}"]


def dataset_root_input(wildcards):
    """The dataset folder: a rule output for the phantom, an existing folder otherwise."""
    return config["dataset"]["root"]


def base_model_input(wildcards):
    """The base model folder as an input when a rule writes it (pretrained, converted or downloaded);
    the user's own folder is read in place."""
    return [BASE_MODEL] if SETTINGS.base_source.built_here else []


def pretrain_corpus_input(wildcards):
    """What the small base model pretrains on: the simulated corpus, or (when asked) the manifest."""
    return PRETRAIN_CORPUS if SETTINGS.pretrain_corpus == PHANTOM_CORPUS else MANIFEST


def test_set_inputs(wildcards):
    """What a test set is indexed from: the split manifest, or an unseen set's folder (with the
    manifest, whose images it must not hold near-copies of)."""
    test_set = SETTINGS.test_set(wildcards.test_set)
    if test_set.kind == TestSetKind.INTERNAL:
        return {"manifest": MANIFEST}
    return {"source": test_set.root, "manifest": MANIFEST}


def synthetic_test_set(fold):
    return f"results/test_sets/{SYNTHETIC.name}/{SETTINGS.arm(int(fold))}.csv"


def evaluation_test_sets(wildcards):
    """Test set -> table for one classifier: the internal split, every unseen set, and for
    `original` the synthetic images of its fold's arm (class fidelity)."""
    tables = {}
    for test_set in SETTINGS.test_sets:
        if test_set.kind != TestSetKind.SYNTHETIC:
            tables[test_set] = f"results/test_sets/{test_set.name}.csv"
        elif PLAN.variant(wildcards.variant).kind == ORIGINAL:
            tables[test_set] = synthetic_test_set(wildcards.fold)
    return tables


def evaluation_labels(wildcards):
    """What one evaluate job evaluates, as plain data for its metrics.json: the plan's data on
    the variant (family, adjective, ratio), the architecture, the fold and the replicate.
    """
    variant = PLAN.variant(wildcards.variant)
    return {
        **variant.labels(),
        "arch": wildcards.arch,
        "fold": int(wildcards.fold),
        "replicate": int(wildcards.replicate),
    }


def classifier_dir(variant, arch, fold, replicate):
    """One trained classifier: variant, architecture, fold and replicate (seed) are folder levels,
    each also recorded as a value in its model.json (and its evaluations' metrics.json).
    """
    return f"results/classifiers/{variant}/{arch}/fold{fold}/rep{replicate}"


def classifier_dirs():
    return [
        classifier_dir(variant.name, arch, fold, replicate)
        for variant in PLAN.variants()
        for arch in SETTINGS.architectures
        for fold in FOLDS
        for replicate in REPLICATES
    ]


def evaluation_targets():
    """One evaluation folder per trained classifier (variant, arch, fold, replicate)."""
    return [
        path.replace("results/classifiers/", "results/evaluation/", 1)
        for path in classifier_dirs()
    ]


def report_outputs():
    return [
        "results/audit/summary.csv",
        "results/report/metrics.csv",
        "results/report/summary.csv",
        "results/report/bootstrap.csv",
        "results/report/fidelity.csv",
        "results/report/robustness.csv",
        "results/report/quality.csv",
        "results/report/realism.csv",
        "results/report/summary.md",
        "results/report/index.html",
    ]
