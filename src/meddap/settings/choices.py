"""The allowed values of every enum-like setting, in one place.

The config schema's enums are checked against these (tests/test_stages.py), and the code's
registries (schedulers, corruptions, variant families, ...) are keyed by them, so a value added in
one place and forgotten in another fails a test instead of a job.
"""

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
MIXED_LABEL_GROUPS = ("keep", "drop")
PRETRAIN_CORPORA = ("phantom", "dataset")
PREDICTION_TYPES = ("epsilon", "v_prediction")
LORA_MODES = ("per_class", "shared")
LORA_SCOPES = ("fold", "split")
SCHEDULERS = ("dpm", "ddim", "pndm", "euler", "unipc")
GUIDANCE_REFERENCES = ("lora", "base")
VARIANT_FAMILIES = ("adjective", "mixed", "guided", "classic")
FILTERABLE_FAMILIES = VARIANT_FAMILIES[:3]  # generation.filter.families: the synthetic ones
LR_SCHEDULES = ("onecycle", "constant")
SELECTION_METRICS = ("macro_f1", "accuracy")
CONTRAST_METRICS = ("macro_f1", "balanced_accuracy", "macro_auroc", "accuracy")
P_ADJUST_METHODS = ("holm", "bh")  # the validation score that picks a classifier's epoch
# Adjectives with an image operation (meddap.diffusion.adjectives), which a pretraining corpus can teach.
TEACHABLE_ADJECTIVES = (
    "bright",
    "dark",
    "high-contrast",
    "low-contrast",
    "posterized",
    "solarized",
    "sheared",
    "colorful",
    "stylized",
)
CORRUPTIONS = (
    "speckle_noise",
    "motion_blur",
    "brightness_up",
    "brightness_down",
    "contrast_down",
    "jpeg_compression",
    "pixelate",
)

# Config key (dotted; [] = the items of a list) -> its allowed values.
SCHEMA_ENUMS = {
    "device": DEVICES,
    "precision": PRECISIONS,
    "dataset.mixed_label_groups": MIXED_LABEL_GROUPS,
    "base_model.pretrain.corpus": PRETRAIN_CORPORA,
    "base_model.pretrain.prediction_type": PREDICTION_TYPES,
    "base_model.pretrain.adjectives[]": TEACHABLE_ADJECTIVES,
    "lora.mode": LORA_MODES,
    "lora.scope": LORA_SCOPES,
    "lora.validation.scheduler": SCHEDULERS,
    "generation.scheduler": SCHEDULERS,
    "generation.guidance_reference": GUIDANCE_REFERENCES,
    "generation.variant_families[]": VARIANT_FAMILIES,
    "generation.filter.families[]": FILTERABLE_FAMILIES,
    "classifier.lr_schedule": LR_SCHEDULES,
    "classifier.selection_metric": SELECTION_METRICS,
    "evaluation.corruptions[]": CORRUPTIONS,
    "evaluation.primary_contrast.metric": CONTRAST_METRICS,
    "evaluation.p_adjust": P_ADJUST_METHODS,
}

# lora.scope: "fold" trains one generative arm (LoRAs + shards) per cross-validation fold on that
# fold's training originals only; "split" trains one arm on the whole training split (cheaper,
# but its synthetic images were learnt from every fold's validation images).
FOLD_SCOPE, SPLIT_SCOPE = LORA_SCOPES
SPLIT_ARM = "split"
SHARED_LORA = "shared"
# base_model.pretrain.corpus: "phantom" simulates a separate corpus (never part of the dataset);
# "dataset" pretrains on the training split, which reaches every fold's validation images.
PHANTOM_CORPUS, DATASET_CORPUS = PRETRAIN_CORPORA
