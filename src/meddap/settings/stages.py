"""Typed settings of each stage, built once at parse time by ``meddap.config.resolve.resolve``.

A rule passes the one its job needs through ``params`` as plain data (``.params()``, which
Snakemake hashes, so changing a setting reruns exactly the jobs that read it); the rule script
rebuilds it with ``from_params`` and hands it to the library. Only what changes a job's output
is here: the shape of the DAG (classes, folds, variants, architectures) lives in ``Settings`` and
the plan, and threads live in the rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from meddap.runtime.params import StageSettings
from meddap.settings.kinds import INTERNAL_TEST


@dataclass(frozen=True)
class RuntimeSettings(StageSettings):
    """Where and in which precision the GPU stages run (config: device, precision)."""

    device: str = "auto"
    precision: str = "auto"


@dataclass(frozen=True)
class PromptSettings(StageSettings):
    """The prompt wording (config: prompts); jobs get the prompt strings they use, not this."""

    template: str = "{article} {adjective}ultrasound photo of {subject} in breast"
    subjects: dict = field(default_factory=dict)
    negative: str = ""

    def prompt(self, cls: str, adjective: str) -> str:
        from meddap.settings.prompts import build_prompt

        return build_prompt(cls, adjective, self.template, self.subjects)

    def training_prompt(self, cls: str) -> str:
        from meddap.settings.prompts import training_prompt

        return training_prompt(cls, self.template, self.subjects)


@dataclass(frozen=True)
class PretrainSettings(StageSettings):
    """The embedded small model's pretraining (config: base_model.pretrain)."""

    corpus: str = "phantom"
    adjectives: tuple[str, ...] = ("bright",)
    adjective_share: float = 0.5
    prediction_type: str = "epsilon"
    image_size: int = 64
    vae_steps: int = 300
    unet_steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    small: dict = field(default_factory=dict)


@dataclass(frozen=True)
class LoraValidationSettings(StageSettings):
    """Images rendered at each LoRA checkpoint (config: lora.validation)."""

    images: int = 0
    steps: int = 20
    guidance_scale: float = 5.0
    scheduler: str = "dpm"
    grayscale: bool = False


@dataclass(frozen=True)
class LoraSettings(StageSettings):
    """How one LoRA trains (config: lora, less mode and scope, which shape the DAG)."""

    rank: int = 4
    alpha: float | None = None
    target_modules: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    resolution: int = 64
    steps: int = 500
    batch_size: int = 8
    lr: float = 1e-4
    flip: bool = True
    checkpoint_every: int = 0
    timestep_bias: float = 1.0
    condition_dropout: float = 0.0
    validation: LoraValidationSettings = field(default_factory=LoraValidationSettings)


@dataclass(frozen=True)
class SamplingSettings(StageSettings):
    """How a shard's images are drawn (config: generation, less the plan's adjectives, ratios,
    variant families and shard size, so a new ratio does not redraw the shards)."""

    resolution: int = 64
    steps: int = 30
    guidance_scale: float = 7.5
    guidance_reference: str = "lora"
    scheduler: str = "dpm"
    batch_size: int = 16
    lora_scale: float = 1.0
    grayscale: bool = False
    compile: bool = False


def check_strengths(strength: float | Sequence[float]) -> tuple[float, ...]:
    """generation.strength as a tuple of values in [0, 1] (one value: every image uses it)."""
    values = (strength,) if isinstance(strength, int | float) else tuple(strength)
    if not values:
        raise ValueError("generation.strength: give one value or a non-empty list, each from 0 to 1")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise ValueError(f"generation.strength {value!r}: each strength is a number from 0 to 1")
    return tuple(float(value) for value in values)


@dataclass(frozen=True)
class FilterSettings(StageSettings):
    """Which synthetic images a filtered variant keeps (config: generation.filter).

    An image is dropped when the judge (a classifier trained on the arm's training originals only)
    puts it in another class with at least ``judge_confidence``, or when its perceptual hash is
    within ``near_copy_bits`` bits of one of those originals (-1: no near-copy check). Shards read
    by filtered variants hold ``oversample`` times the planned count, so the kept images fill it."""

    judge_confidence: float = 0.9
    near_copy_bits: int = 10
    oversample: float = 1.5
    judge_architecture: str = "resnet18"

    def reason(self, label: str, predicted: str, confidence: float, near_copy_distance: int) -> str:
        """Why an image of class ``label`` is dropped ("" if kept): the judge's verdict first."""
        if predicted != label and confidence >= self.judge_confidence:
            return WRONG_CLASS
        if self.near_copy_bits >= 0 and near_copy_distance <= self.near_copy_bits:
            return NEAR_COPY
        return ""


# Why a filtered variant drops an image (FilterSettings.reason; the report counts them per class).
WRONG_CLASS = "judged another class"
NEAR_COPY = "near-copy of a training original"


@dataclass(frozen=True)
class ClassifierSettings(StageSettings):
    """How one classifier trains (config: classifier, less the architectures: one job per architecture)."""

    image_size: int = 64
    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    pretrained: bool = False
    class_weighting: bool = True
    blur_augmentation: bool = True
    intensity_augmentation: bool = True
    geometric_augmentation: bool = True
    lr_schedule: str = "onecycle"
    selection_metric: str = "macro_f1"
    compile: bool = False  # torch.compile the training steps (CUDA; the CPU runs eager either way)


@dataclass(frozen=True)
class EvaluationSettings(StageSettings):
    """What the evaluate job measures (config: evaluation, less bootstrap and knn_k: the report's and quality's)."""

    positive_class: str | None = "malignant"
    specificity: float = 0.9
    corruptions: tuple[str, ...] = ()
    severities: tuple[int, ...] = ()


@dataclass(frozen=True)
class ContrastSettings(StageSettings):
    """The primary contrast declared in the config, and the correction of every other comparison
    (config: evaluation.primary_contrast, evaluation.p_adjust): the report's."""

    variant: str | None = None  # None until resolved (meddap.config.resolve): mixed_x1 vs classic_x1 where planned
    baseline: str | None = None
    metric: str = "macro_f1"
    test_set: str = INTERNAL_TEST
    p_adjust: str = "holm"
