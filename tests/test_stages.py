"""Settings travel typed: every config key of a stage is a field of its settings object (or shapes
the DAG), params round-trip, and every enum in the schema is the one list in meddap.settings.choices that
the code's registries are keyed by."""

import dataclasses

import pytest
import yaml
from snakemake.utils import validate

from meddap.config.resolve import resolve
from meddap.settings import choices
from meddap.settings.stages import (
    ClassifierSettings,
    EvaluationSettings,
    FilterSettings,
    LoraSettings,
    PretrainSettings,
    PromptSettings,
    SamplingSettings,
)

SCHEMA = "workflow/schemas/config.schema.yaml"
# Config keys that are no job's setting: they shape the DAG (classes, variants, jobs) or go to
# one rule's params directly (bootstrap: report, knn_k: synthetic_quality; strength:
# generate_guided_shard, so a new strength redraws no text-to-image shard; primary_contrast and
# p_adjust: the report's ContrastSettings, tested below).
DAG_KEYS = {
    "lora": {"mode", "scope"},
    # filter: FilterSettings (its own section below); its families shape the DAG
    "generation": {"adjectives", "ratios", "variant_families", "shard_size", "strength", "filter"},
    "generation.filter": {"families"},
    "classifier": {"architectures", "replicates"},
    "evaluation": {"bootstrap", "knn_k", "primary_contrast", "p_adjust"},
    "base_model.pretrain": {"enabled"},
}
STAGES = {
    "lora": LoraSettings,
    "generation": SamplingSettings,
    "classifier": ClassifierSettings,
    "evaluation": EvaluationSettings,
    "base_model.pretrain": PretrainSettings,
    "prompts": PromptSettings,
    "generation.filter": FilterSettings,
}


def schema_section(schema: dict, dotted: str) -> dict:
    node = schema
    for key in dotted.split("."):
        node = node["properties"][key]
    return node


def default_config() -> dict:
    config = yaml.safe_load(open("config/config.yaml"))
    validate(config, SCHEMA)
    return config


@pytest.mark.parametrize("section", sorted(STAGES))
def test_every_config_key_of_a_stage_is_a_typed_field_or_shapes_the_dag(section):
    schema = yaml.safe_load(open(SCHEMA))
    keys = set(schema_section(schema, section)["properties"])
    fields = {field.name for field in dataclasses.fields(STAGES[section])}
    assert keys - DAG_KEYS.get(section, set()) == fields
    assert not fields & DAG_KEYS.get(section, set())


def test_stage_settings_round_trip_through_params():
    settings = resolve(default_config())
    for stage in (
        settings.lora,
        settings.sampling,
        settings.classifier,
        settings.evaluation,
        settings.pretraining,
        settings.runtime,
        settings.prompts,
    ):
        params = stage.params()
        assert yaml.safe_load(yaml.safe_dump(params)) == params  # plain data Snakemake can hash
        assert type(stage).from_params(params) == stage
    assert settings.lora.validation.images == 2 and settings.lora.target_modules == ("to_q", "to_k", "to_v", "to_out.0")
    assert settings.prompts.prompt("benign", "bright") == "a bright ultrasound photo of benign tumor in breast"
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.sampling.steps = 3


def enums(node, path=""):
    """(dotted key, enum) of every enum in a schema node; list items get a [] suffix."""
    if "enum" in node:
        yield path, tuple(node["enum"])
    for key, child in node.get("properties", {}).items():
        yield from enums(child, f"{path}.{key}" if path else key)
    if "items" in node:
        yield from enums(node["items"], path + "[]")


def test_schema_enums_are_the_choices_the_code_knows():
    from meddap.classify.robustness import CORRUPTIONS
    from meddap.data.dataset import MIXED_LABEL_ACTIONS
    from meddap.diffusion.sampling import SCHEDULER_CLASSES
    from meddap.settings.choices import DATASET_CORPUS, FOLD_SCOPE, PHANTOM_CORPUS, SPLIT_SCOPE
    from meddap.settings.plan import CLASSIC, MIXED

    schema = yaml.safe_load(open(SCHEMA))
    assert dict(enums(schema)) == choices.SCHEMA_ENUMS
    assert set(SCHEDULER_CLASSES) == set(choices.SCHEDULERS)
    assert set(CORRUPTIONS) == set(choices.CORRUPTIONS)
    assert set(MIXED_LABEL_ACTIONS) == set(choices.MIXED_LABEL_GROUPS)
    assert {MIXED, CLASSIC} < set(choices.VARIANT_FAMILIES)
    assert (FOLD_SCOPE, SPLIT_SCOPE) == choices.LORA_SCOPES and (
        PHANTOM_CORPUS,
        DATASET_CORPUS,
    ) == choices.PRETRAIN_CORPORA


def test_the_primary_contrast_is_declared_and_resolved_at_parse_time():
    """Left null it is mixed_x1 vs classic_x1 where both are planned (the paper's question), falling
    back to what the config plans; named, it must exist."""
    from meddap.config.resolve import ConfigError
    from meddap.settings.stages import ContrastSettings

    schema = yaml.safe_load(open(SCHEMA))
    keys = set(schema_section(schema, "evaluation.primary_contrast")["properties"]) | {"p_adjust"}
    assert keys == {field.name for field in dataclasses.fields(ContrastSettings)}

    def contrast(**changes):
        config = default_config()
        for section, values in changes.items():
            config[section] = {**config[section], **values}
        return resolve(config).contrast

    assert contrast().params() == {
        "variant": "mixed_x1",
        "baseline": "original",
        "metric": "macro_f1",
        "test_set": "test",
        "p_adjust": "holm",
    }  # no classic in the embedded default
    both = contrast(generation={"ratios": [0.5, 1, 2], "variant_families": ["mixed", "classic"]})
    assert (both.variant, both.baseline) == ("mixed_x1", "classic_x1")
    half = contrast(generation={"ratios": [0.5], "variant_families": ["adjective", "classic"]})
    assert (half.variant, half.baseline) == ("none_x0.5", "classic_x0.5")
    # The primary contrast can name any mode: guided against text-to-image, or guided alone against classic.
    modes = contrast(evaluation={"primary_contrast": {"variant": "guided_x1", "baseline": "mixed_x1"}})
    assert (modes.variant, modes.baseline) == ("guided_x1", "mixed_x1")
    guided = contrast(generation={"variant_families": ["guided", "classic"]})
    assert (guided.variant, guided.baseline) == ("guided_x1", "classic_x1")
    with pytest.raises(ConfigError, match=r"primary_contrast.baseline 'classic_x1' is not a planned variant"):
        contrast(evaluation={"primary_contrast": {"variant": None, "baseline": "classic_x1"}})
    with pytest.raises(ConfigError, match="primary_contrast.test_set 'elsewhere'"):
        contrast(evaluation={"primary_contrast": {"variant": None, "baseline": None, "test_set": "elsewhere"}})
