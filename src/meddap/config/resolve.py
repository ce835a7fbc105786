"""Resolve a schema-validated config into what the DAG needs: classes, counts, plan, test sets.

Checks that JSON Schema cannot express live here and in ``meddap.config.checks``, each failing
with a ``ConfigError`` whose message names the config key and what to do.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from meddap.config.checks import (
    ConfigError,
    check_job_limit,
    check_seed,
    check_template,
    check_unique,
    check_unseen_is_apart,
)
from meddap.config.filtering import check_judge_architecture, filter_settings_of
from meddap.data.arms import arm_for_fold
from meddap.data.dataset import list_class_images, split_counts
from meddap.diffusion.base_models import (
    HUB,
    PRETRAIN,
    SINGLE_FILE,
    BaseModelError,
    BaseModelSource,
    base_model_source,
    unchecked_base_model_source,
)
from meddap.runtime.gpu_slots import GpuSlotSettings
from meddap.runtime.versions import library_versions
from meddap.settings.choices import FOLD_SCOPE, PHANTOM_CORPUS, SHARED_LORA, SPLIT_ARM
from meddap.settings.kinds import (
    INTERNAL,
    RESERVED_TEST_SET_NAMES,
    SYNTHETIC,
    TestSet,
    TestSetKind,
    unseen_test_set,
)
from meddap.settings.plan import ADJECTIVE, CLASSIC, GUIDED, MIXED, ORIGINAL, TEXT_TO_IMAGE, Plan, ratio_label
from meddap.settings.prompts import NO_ADJECTIVE
from meddap.settings.stages import (
    ClassifierSettings,
    ContrastSettings,
    EvaluationSettings,
    FilterSettings,
    LoraSettings,
    PretrainSettings,
    PromptSettings,
    RuntimeSettings,
    SamplingSettings,
    check_strengths,
)


@dataclass
class Settings:
    classes: list[str]
    class_counts: dict[str, int]
    train_counts: dict[str, int]
    plan: Plan
    unseen: dict[str, str]
    base_model: str
    phantom: bool
    architectures: list[str]
    folds: int = 2
    replicates: int = 1  # classifier.replicates: classifiers (seeds) per (variant, arch, fold); shapes the DAG
    lora_scope: str = FOLD_SCOPE
    lora_mode: str = "per_class"
    base_source: BaseModelSource | None = None  # what base_model.path names (meddap.diffusion.base_models)
    # What each stage's jobs read (meddap.settings.stages): built here once, passed to jobs through params.
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    # Not a job's params (a GPU's id changes no output): the jobs read it from the environment (common.smk).
    gpu_slots: GpuSlotSettings = field(default_factory=GpuSlotSettings)
    prompts: PromptSettings = field(default_factory=PromptSettings)
    pretraining: PretrainSettings | None = None
    lora: LoraSettings = field(default_factory=LoraSettings)
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    # generation.strength as a tuple (one value or the list each guided image draws from): guided
    # shards' params only, so that a change reruns no text-to-image shard.
    strength: tuple[float, ...] = (0.5,)
    # generation.filter (None: no filtered variants): the filter jobs' params.
    filter: FilterSettings | None = None
    classifier: ClassifierSettings = field(default_factory=ClassifierSettings)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    contrast: ContrastSettings = field(default_factory=ContrastSettings)
    # Said at parse time, not errors: e.g. a generation adjective the small model was not taught.
    warnings: list[str] = field(default_factory=list)
    # The phantom devices that rule simulate_phantom simulates: dataset.root's and each unseen set's.
    phantom_devices: list[str] = field(default_factory=list)

    @property
    def pretrain(self) -> bool:
        """Whether the embedded small model is built and pretrained (rule pretrain_base)."""
        return self.pretraining is not None

    @property
    def pretrain_corpus(self) -> str | None:
        return self.pretraining.corpus if self.pretraining else None

    @property
    def test_sets(self) -> list[TestSet]:
        """Every test set: the internal split, each unseen set, the synthetic images."""
        return [INTERNAL, *(unseen_test_set(name, root) for name, root in self.unseen.items()), SYNTHETIC]

    @property
    def indexed_test_sets(self) -> list[TestSet]:
        """The test sets indexed as results/test_sets/<name>.csv (the synthetic images are indexed per arm)."""
        return [test_set for test_set in self.test_sets if test_set.kind != TestSetKind.SYNTHETIC]

    def test_set(self, name: str) -> TestSet:
        for test_set in self.test_sets:
            if test_set.name == name:
                return test_set
        raise KeyError(f"unknown test set {name!r}; known: {[t.name for t in self.test_sets]}")

    @property
    def arms(self) -> list[str]:
        """The generative arms: one per fold ("fold<k>"), or one for the whole split ("split")."""
        return (
            [arm_for_fold(fold, self.lora_scope) for fold in range(self.folds)]
            if self.lora_scope == FOLD_SCOPE
            else [SPLIT_ARM]
        )

    def arm(self, fold: int) -> str:
        """The arm whose synthetic images train fold ``fold``'s classifiers."""
        return arm_for_fold(fold, self.lora_scope)

    @property
    def lora_names(self) -> list[str]:
        """One LoRA per class, or one shared by every class (lora.mode)."""
        return [SHARED_LORA] if self.lora_mode == "shared" else list(self.classes)

    def lora_prompts(self, lora: str) -> dict[str, str]:
        """The training prompt of each class a LoRA learns: its own class, or every class (shared)."""
        classes = self.classes if lora == SHARED_LORA else [lora]
        return {cls: self.prompts.training_prompt(cls) for cls in classes}

    def lora_for_class(self, cls: str) -> str:
        return SHARED_LORA if self.lora_mode == "shared" else cls

    def jobs_per_rule(self) -> dict[str, int]:
        """Jobs per rule that the default target (rule all) plans in an empty folder, as
        ``snakemake --dry-run`` counts them (tests/test_cost_plan.py compares the two); rules
        without a job are left out. The one count of the DAG's size: limits.max_jobs and
        ``meddap plan`` read it."""
        arms, variants = len(self.arms), self.plan.variants()
        shards = arms * len(self.plan.all_shards(TEXT_TO_IMAGE))
        guided_shards = arms * len(self.plan.all_shards(GUIDED))
        filtered_streams = {v.stream for v in variants if v.filtered}
        trainings = len(variants) * len(self.architectures) * self.folds * self.replicates
        kind = self.base_source.kind if self.base_source else None
        jobs = {
            "simulate_phantom": len(self.phantom_devices),
            "simulate_pretrain_corpus": int(self.pretrain_corpus == PHANTOM_CORPUS),
            "split": 1,
            "index_test_set": len(self.indexed_test_sets),
            "pretrain_base": int(self.pretrain),
            "convert_base_model": int(kind == SINGLE_FILE),
            "download_base_model": int(kind == HUB),
            "train_lora": arms * len(self.lora_names),
            "check_generation_inputs": shards + guided_shards,
            "generate_shard": shards,
            "generate_guided_shard": guided_shards,
            "index_synthetic": arms,
            "augment_classic": self.folds if any(v.kind == CLASSIC for v in variants) else 0,
            "train_judge": arms if filtered_streams else 0,
            "filter_shards": arms * len(filtered_streams),
            "merge_dataset": len(variants) * self.folds,
            "train_classifier": trainings,
            "evaluate": trainings,
            "synthetic_quality": len(self.architectures),
            "realism": 1,
            "audit": 1,
            "report": 1,
            "all": 1,
        }
        return {rule: count for rule, count in jobs.items() if count}


PHANTOM_DIR = "resources/phantom"  # simulate_phantom writes <device>/ here


def _csv_rows(path: Path) -> int:
    import pandas as pd

    return len(pd.read_csv(path))


def resolve(config: dict, check_architectures: bool = True, check_base_model: bool = True) -> Settings:
    """``check_base_model`` False: a base_model.path that is not at hand is taken for what its name
    says (a cost plan before the model is downloaded, ``meddap plan``)."""
    dataset, phantom = config["dataset"], config["phantom"]
    check_seed(config["seed"])
    check_unique("dataset.classes", list(dataset["classes"] or []))
    check_unique("classifier.architectures", list(config["classifier"]["architectures"]))
    check_unique("generation.adjectives", list(config["generation"]["adjectives"]))
    check_template(config["prompts"]["template"], list(config["generation"]["adjectives"]))
    # The base model first: a wrong path should not wait for a dataset scan.
    base = config["base_model"]
    try:
        base_source = base_model_source(base, config["allow_hub"])
    except BaseModelError:
        if check_base_model:
            raise
        base_source = unchecked_base_model_source(base, config["allow_hub"])
    pretraining = PretrainSettings.from_params(base["pretrain"]) if base_source.kind == PRETRAIN else None
    if pretraining and pretraining.corpus == PHANTOM_CORPUS and not phantom["enabled"]:
        raise ConfigError(
            "base_model.pretrain.corpus: phantom needs phantom.enabled: true; with your own data set "
            "base_model.path to a Stable Diffusion folder, or pretrain on your data with corpus: dataset"
        )

    if phantom["enabled"]:
        if Path(dataset["root"]).parent != Path(PHANTOM_DIR):
            raise ConfigError(
                f"phantom.enabled: true simulates dataset.root under {PHANTOM_DIR}/, but dataset.root is "
                f"{dataset['root']!r}: set phantom.enabled: false to use your own images (or dataset.root: "
                f"{PHANTOM_DIR}/{phantom['train_device']})"
            )
        counts = dict(phantom["images_per_class"])
        classes = list(dataset["classes"] or sorted(counts))
        missing = [c for c in classes if c not in counts]
        if missing:
            raise ConfigError(f"dataset.classes {missing} have no count in phantom.images_per_class")
        from meddap.data.phantom import CLASSES as PHANTOM_CLASSES

        unknown = [c for c in classes if c not in PHANTOM_CLASSES]
        if unknown:
            raise ConfigError(f"phantom.images_per_class: the phantom simulates {list(PHANTOM_CLASSES)}, not {unknown}")
        if phantom["train_device"] not in phantom["devices"]:
            raise ConfigError(
                f"phantom.train_device {phantom['train_device']!r} "
                f"is not in phantom.devices {sorted(phantom['devices'])}"
            )
        class_counts = {c: int(counts[c]) for c in classes}
    else:
        # Real data: index the folder now, so a missing or empty dataset.root stops the run at once.
        images = list_class_images(dataset["root"], dataset["classes"], dataset["exclude"])
        dataset_images = {Path(p).resolve() for paths in images.values() for p in paths}
        classes = list(images)
        class_counts = {c: len(paths) for c, paths in images.items()}
    if config["lora"]["mode"] == "shared" and "shared" in classes:
        raise ConfigError(
            "lora.mode: shared stores its LoRA as results/lora/shared, but a class is named 'shared'; "
            "rename the class folder"
        )
    if len(classes) < 2:
        raise ConfigError(
            f"dataset.classes: found {len(classes)} class(es) {classes}; a classifier needs at least two class folders"
        )
    positive = config["evaluation"]["positive_class"]
    if positive is not None and positive not in classes:
        raise ConfigError(f"evaluation.positive_class {positive!r} is not one of the classes {classes} (or null)")
    train_counts = {c: split_counts(n, dataset["test_fraction"])[1] for c, n in class_counts.items()}
    folds = int(dataset["folds"])
    for cls, n_train in train_counts.items():
        if n_train < folds:
            raise ConfigError(
                f"dataset.folds={folds} but class {cls!r} has only {n_train} training images; "
                "lower dataset.folds or add images"
            )
    # What a fold's classifiers (and its arm's LoRAs) train on: the training split less one fold.
    # Folds differ by at most one image per class (more with near-duplicate groups); ratios count
    # against the larger share, and the report shows the effective ratio of every fold.
    fold_train_counts = {c: n - n // folds for c, n in train_counts.items()}

    generation = config["generation"]
    for adjective in generation["adjectives"]:
        if adjective in (ORIGINAL, MIXED, CLASSIC, GUIDED):
            raise ConfigError(f"generation.adjectives: {adjective!r} is reserved for a variant name; rename it")
    for ratio in generation["ratios"]:
        if not (ratio > 0 and math.isfinite(ratio)):
            raise ConfigError(f"generation.ratios: {ratio!r} must be a positive number")
    # Variants are named by their ratio's label (x1, x0.5): two ratios with one label would be one variant.
    labels: dict[str, list] = {}
    for ratio in generation["ratios"]:
        labels.setdefault(ratio_label(ratio), []).append(ratio)
    for label, same in labels.items():
        if len(same) > 1:
            raise ConfigError(
                f"generation.ratios: {same} all name the variants *_{label}; list each ratio once "
                "(ratios are told apart by their shortest decimal form)"
            )
    plan = Plan(
        classes=classes,
        train_counts=fold_train_counts,
        adjectives=list(generation["adjectives"]),
        ratios=[float(r) for r in generation["ratios"]],
        shard_size=int(generation["shard_size"]),
        families=tuple(generation["variant_families"]),
        filtered_families=tuple(generation["filter"]["families"]),
        oversample=float(generation["filter"]["oversample"]),
    )
    for ratio in plan.ratios:
        empty = [cls for cls in classes if plan.synthetic_count(cls, ratio) == 0]
        if empty:
            raise ConfigError(
                f"generation.ratios: {ratio:g} x the {[fold_train_counts[c] for c in empty]} training images of "
                f"{empty} rounds to 0 synthetic images; use a larger ratio"
            )
    if GUIDED in plan.families and config["lora"]["scope"] != FOLD_SCOPE:
        raise ConfigError(
            f"generation.variant_families: guided needs lora.scope: {FOLD_SCOPE} (a guided image starts from one "
            f"of its fold's training originals; with lora.scope: {config['lora']['scope']} there is no fold to "
            "take them from); set lora.scope: fold or drop guided"
        )
    filter_settings = filter_settings_of(generation["filter"], plan, config)
    n_arms = folds if config["lora"]["scope"] == FOLD_SCOPE else 1
    planned = n_arms * sum(
        len(plan.adjectives) * plan.images_per_adjective(cls, stream)
        for cls in classes
        for stream in (TEXT_TO_IMAGE, GUIDED)
    )
    limit = config["limits"]["max_synthetic_images"]
    if planned > limit:
        raise ConfigError(
            f"generation.ratios {plan.ratios} plan {planned:,} synthetic images, more than limits.max_synthetic_images "
            f"({limit:,}); lower the ratios or raise the limit"
        )

    unseen = {}
    for entry in config["unseen"]:
        if entry["name"] in RESERVED_TEST_SET_NAMES or entry["name"] in unseen:
            raise ConfigError(
                f"unseen: the name {entry['name']!r} is reserved or repeated; give each unseen set its own name"
            )
        unseen[entry["name"]] = entry["root"]
        root = Path(entry["root"])
        if not phantom["enabled"] and root.exists():
            check_unseen_is_apart(entry["name"], root, dataset_images)
        if root.is_file() and root.suffix.lower() == ".csv" and _csv_rows(root) == 0:
            raise ConfigError(
                f"unseen set {entry['name']!r}: {root} lists no images (a header only); fill it or remove the entry"
            )
        if root.is_dir():  # checkable now (a simulated set appears only when its rule runs)
            extra = sorted(
                d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name not in classes
            )
            if extra:
                raise ConfigError(
                    f"unseen set {entry['name']!r} ({root}) has class folder(s) {extra} that are not training classes "
                    f"{classes}; an unseen set may hold a subset of the classes only. Remove or rename them."
                )

    architectures = list(config["classifier"]["architectures"])
    if check_architectures:
        from meddap.classify.architectures import classification_architectures

        known = set(classification_architectures())
        unknown = [a for a in architectures if a not in known]
        if unknown:
            raise ConfigError(
                f"classifier.architectures: unknown {unknown}; "
                "use torchvision names such as densenet121, resnet34, squeezenet1_1, resnet18"
            )
        check_judge_architecture(filter_settings, known)
    settings = Settings(
        classes=classes,
        class_counts=class_counts,
        train_counts=train_counts,
        plan=plan,
        unseen=unseen,
        base_model=base_source.folder,
        base_source=base_source,
        phantom=bool(phantom["enabled"]),
        architectures=architectures,
        folds=folds,
        replicates=int(config["classifier"]["replicates"]),
        lora_scope=config["lora"]["scope"],
        lora_mode=config["lora"]["mode"],
        runtime=RuntimeSettings.from_params(config),
        gpu_slots=GpuSlotSettings.from_config(config),
        prompts=PromptSettings.from_params(config["prompts"]),
        pretraining=pretraining,
        lora=LoraSettings.from_params(config["lora"]),
        sampling=SamplingSettings.from_params(config["generation"]),
        strength=_strength(config["generation"]["strength"]),
        filter=filter_settings,
        classifier=ClassifierSettings.from_params(config["classifier"]),
        evaluation=EvaluationSettings.from_params(config["evaluation"]),
        contrast=_primary_contrast(config["evaluation"], plan, unseen),
        warnings=_untaught_adjectives(plan.adjectives, pretraining),
        phantom_devices=_phantom_devices(dataset["root"], unseen) if phantom["enabled"] else [],
    )
    check_job_limit(settings.jobs_per_rule(), config["limits"]["max_jobs"])
    return settings


def _strength(strength) -> tuple[float, ...]:
    try:
        return check_strengths(strength)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _phantom_devices(root: str, unseen: dict[str, str]) -> list[str]:
    """The devices simulate_phantom writes: those whose folder (resources/phantom/<device>) is
    dataset.root or an unseen set's root."""
    folders = {Path(folder) for folder in (root, *unseen.values())}
    return sorted(
        folder.name for folder in folders if folder.parent == Path(PHANTOM_DIR) and folder.name != "pretrain-corpus"
    )


def _primary_contrast(evaluation: dict, plan: Plan, unseen: dict[str, str]) -> ContrastSettings:
    """evaluation.primary_contrast, checked against what the config plans: declared in advance, it
    must name comparisons that will exist."""
    contrast = ContrastSettings.from_params({**evaluation["primary_contrast"], "p_adjust": evaluation["p_adjust"]})
    variants = [variant.name for variant in plan.variants()]
    if contrast.variant is None:  # the paper's question: does the mix of adjectives beat more classic copies?
        synthetic = [v for v in plan.variants() if v.kind in (MIXED, ADJECTIVE, GUIDED)]
        mixed = [v for v in synthetic if v.kind == MIXED]
        preferred = [v for v in mixed if v.ratio == 1.0] or mixed or synthetic
        contrast = dataclasses.replace(contrast, variant=preferred[0].name if preferred else ORIGINAL)
    if contrast.variant not in variants:  # before its ratio is looked up for the default baseline
        raise ConfigError(
            f"evaluation.primary_contrast.variant {contrast.variant!r} is not a planned variant {variants}; "
            "name one of them (generation.ratios and variant_families decide which exist)"
        )
    if contrast.baseline is None:
        ratio = plan.variant(contrast.variant).ratio
        classic = [v.name for v in plan.variants() if v.kind == CLASSIC and v.ratio == ratio]
        contrast = dataclasses.replace(contrast, baseline=classic[0] if classic else ORIGINAL)
    for key in ("variant", "baseline"):
        if getattr(contrast, key) not in variants:
            raise ConfigError(
                f"evaluation.primary_contrast.{key} {getattr(contrast, key)!r} is not a planned variant {variants}; "
                "name one of them (generation.ratios and variant_families decide which exist)"
            )
    if contrast.variant == contrast.baseline:
        raise ConfigError("evaluation.primary_contrast: variant and baseline are the same; compare two variants")
    test_sets = [INTERNAL.name, *unseen]
    if contrast.test_set not in test_sets:
        raise ConfigError(f"evaluation.primary_contrast.test_set {contrast.test_set!r} is not one of {test_sets}")
    return contrast


def _untaught_adjectives(adjectives: list[str], pretraining: PretrainSettings | None) -> list[str]:
    """A generation adjective the small model's corpus does not teach is only a word to it: its shards
    resemble the plain prompt's. Said, not refused: teaching it retrains the base model (and the DAG)."""
    if pretraining is None:
        return []
    untaught = [a for a in adjectives if a != NO_ADJECTIVE and a not in pretraining.adjectives]
    if not untaught:
        return []
    return [
        f"generation.adjectives {untaught}: not taught by the small base model's corpus "
        f"(base_model.pretrain.adjectives {list(pretraining.adjectives)}), so their shards will look like "
        "'none' shards; add them there to teach them (this retrains the base model)"
    ]


def used_config(config: dict) -> dict:
    """The validated config less what this run does not use, for the records of a run: the phantom's
    keys when the dataset is not simulated and the small model's pretraining keys when the base model
    is not built here (each section reduced to ``enabled: false``), so a study on real data and a real
    checkpoint records no embedded-default setting it never read."""
    import copy

    used = copy.deepcopy(config)
    if not config["phantom"]["enabled"]:
        used["phantom"] = {"enabled": False}
    if not config["base_model"]["pretrain"]["enabled"]:
        used["base_model"]["pretrain"] = {"enabled": False}
    return used


def provenance(config: dict, seed: int | None = None) -> dict:
    """Seed, library versions and the settings the run used (``used_config``)."""
    return {
        "seed": config["seed"] if seed is None else seed,
        "versions": library_versions(),
        "config": used_config(config),
    }
