"""What the benchmark runs on: the config's default sizes, the model (embedded small SD built with
random weights), simulated training images and, for generation alone, an untrained LoRA."""

from __future__ import annotations

from pathlib import Path

BENCH_CLASS = "benign"
REPO_CONFIG = Path(__file__).resolve().parents[3] / "config" / "config.yaml"


# ---------------------------------------------------------------- config defaults
def load_config(path: str | None) -> dict:
    """The workflow config (for default sizes); {} when there is none."""
    import yaml

    candidates = [Path(path)] if path else [Path("config/config.yaml"), REPO_CONFIG]
    for candidate in candidates:
        if candidate.is_file():
            return yaml.safe_load(candidate.read_text()) or {}
    if path:
        raise FileNotFoundError(f"--config {path} does not exist")
    return {}


def section(config: dict, *keys: str) -> dict:
    for key in keys:
        config = (config or {}).get(key) or {}
    return config


# ---------------------------------------------------------------- inputs: model, images, LoRA
def build_embedded_pipeline(out_dir: Path, config: dict, seed: int) -> Path:
    """The embedded small SD of the config's size, random weights, saved with save_pretrained."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    from meddap.diffusion.denoising import SD_SCHEDULE
    from meddap.diffusion.small_model import SmallModelSpec, build_small_components
    from meddap.settings.prompts import prompt_words

    pretrain = section(config, "base_model", "pretrain")
    spec = SmallModelSpec.from_config(
        {**(pretrain.get("small") or {}), "image_size": int(pretrain.get("image_size", 64))}
    )
    classes = list(section(config, "dataset").get("classes") or ["benign", "malignant", "normal"])
    adjectives = list(section(config, "generation").get("adjectives") or ["none"])
    vae, text_encoder, tokenizer, unet = build_small_components(spec, prompt_words(classes, adjectives), seed)
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler(**SD_SCHEDULE, skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def make_training_images(out_dir: Path, n: int, seed: int, image_size: int) -> list[str]:
    """``n`` simulated breast-ultrasound images of one class (meddap.data.phantom)."""
    from meddap.data.phantom import device_from_config, simulate_device_dataset

    records = simulate_device_dataset(
        out_dir, device_from_config("linear-L12", None), {BENCH_CLASS: n}, seed, image_size, progress=False
    )
    return [record["path"] for record in records]


def untrained_lora(pipeline_dir: Path, out_dir: Path, rank: int, alpha: float, targets: list[str]) -> Path:
    """A freshly initialised LoRA (for --skip-training): speed does not depend on its values."""
    from diffusers import UNet2DConditionModel

    from meddap.diffusion.lora import add_lora, save_lora

    unet = UNet2DConditionModel.from_pretrained(pipeline_dir, subfolder="unet")
    add_lora(unet, rank, alpha, targets)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_lora(unet, out_dir, rank, alpha)
    return out_dir
