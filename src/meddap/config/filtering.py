"""generation.filter as ``FilterSettings``, with the checks JSON Schema cannot express: filtered
variants must be leak-free (one judge per fold) and must have variants to filter."""

from __future__ import annotations

from meddap.config.checks import ConfigError
from meddap.settings.choices import FOLD_SCOPE
from meddap.settings.plan import Plan
from meddap.settings.stages import FilterSettings


def filter_settings_of(section: dict, plan: Plan, config: dict) -> FilterSettings | None:
    """generation.filter as settings (None when off), refused where it cannot be leak-free or has
    nothing to filter."""
    if not section["families"]:
        return None
    if config["lora"]["scope"] != FOLD_SCOPE:
        raise ConfigError(
            f"generation.filter needs lora.scope: {FOLD_SCOPE} (its judge trains on one fold's training originals; "
            f"with lora.scope: {config['lora']['scope']} the shards serve every fold, so no judge can leave out the "
            "validation fold); set lora.scope: fold or generation.filter.families: []"
        )
    absent = [family for family in section["families"] if family not in plan.families]
    if absent:
        raise ConfigError(
            f"generation.filter.families: {absent} not in generation.variant_families {list(plan.families)}; "
            "filter only families that run"
        )
    if not any(variant.filtered for variant in plan.variants()):  # mixed with one adjective: no variant
        raise ConfigError(
            f"generation.filter.families {section['families']} plan no variant to filter (mixed needs two adjectives); "
            "name a family that has variants, or set generation.filter.families: []"
        )
    architectures = list(config["classifier"]["architectures"])
    return FilterSettings(
        judge_confidence=float(section["judge_confidence"]),
        near_copy_bits=int(section["near_copy_bits"]),
        oversample=float(section["oversample"]),
        judge_architecture=section["judge_architecture"] or architectures[0],
    )


def check_judge_architecture(settings: FilterSettings | None, known: set[str]) -> None:
    """The judge's architecture is a torchvision classifier (``known``)."""
    if settings and settings.judge_architecture not in known:
        raise ConfigError(
            f"generation.filter.judge_architecture: unknown {settings.judge_architecture!r}; "
            "use a torchvision name such as resnet18, or null for the first of classifier.architectures"
        )
