"""USLoRA: LoRA adapters on the UNet's attention projections, one per class.

Follows the diffusers/peft idiom: ``LoraConfig`` + ``unet.add_adapter``; saved with
``StableDiffusionPipeline.save_lora_weights`` (``pytorch_lora_weights.safetensors``), so
``pipe.load_lora_weights(folder)`` reads it. VAE latents (both flips) and the prompt's text
embedding are computed once and cached; LoRA parameters stay fp32 under mixed precision; a
checkpoint every N steps lets a killed job resume where it stopped.

Beside the weights, the LoRA folder holds its training history: ``loss.csv`` (one row per
optimisation step) and, at every checkpoint step and the last step, a few validation images
from the LoRA's prompt(s) with fixed seeds (``validation/``, listed in ``validation.csv``), so
the images of successive checkpoints are comparable. The checkpoint carries the history so far,
so a resumed run writes the same history as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from meddap.diffusion.base_models import load_pipeline
from meddap.diffusion.denoising import encode_latents, encode_text, images_to_tensor, train_denoiser, training_scheduler
from meddap.diffusion.sampling import set_scheduler
from meddap.provenance.lineage import write_lineage
from meddap.runtime.atomic import atomic_path, write_json
from meddap.runtime.seeding import derive_seed
from meddap.settings.stages import LoraSettings, LoraValidationSettings, RuntimeSettings

log = logging.getLogger(__name__)

DEFAULT_TARGET_MODULES = LoraSettings.target_modules  # the attention projections, as USLoRA
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
LOSS_FILE = "loss.csv"
VALIDATION_FILE = "validation.csv"
VALIDATION_DIR = "validation"


class LoraError(ValueError):
    """A LoRA cannot be trained or applied; the message says why and what to do."""


def add_lora(unet, rank: int, alpha: float, target_modules: list[str] | tuple[str, ...]) -> None:
    """Add a LoRA adapter (gaussian init, as the diffusers examples) to ``unet`` in place."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=list(target_modules))
    try:
        unet.add_adapter(config)
    except ValueError as error:
        raise LoraError(
            f"lora.target_modules {list(target_modules)} match no layer of this UNet ({error}). "
            "Use attention projection names such as to_q, to_k, to_v, to_out.0."
        ) from error


def lora_share(unet) -> tuple[int, int, float]:
    """(trainable LoRA parameters, UNet base parameters, share) with the adapter added."""
    trainable = sum(p.numel() for p in unet.parameters() if p.requires_grad)
    base = sum(p.numel() for name, p in unet.named_parameters() if "lora_" not in name)
    return trainable, base, trainable / base


def _config_digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# lora_info.json marks files whose up weights carry alpha / rank (see save_lora).
ALPHA_FOLDED = "alpha_folded_into_weights"


def save_lora(unet, out_dir: Path, rank: int, alpha: float) -> None:
    """Save in diffusers' format with the scale alpha / rank folded into the up (B) weights.

    A diffusers-format file carries no alpha, so every reader (diffusers' ``load_lora_weights``,
    ComfyUI, kohya-based tools) assumes alpha = rank, i.e. scale 1. Folding the scale into the
    weights makes the file mean exactly what was trained in every one of them, where adapter
    metadata would be read by recent diffusers only.
    """
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    scale = float(alpha) / float(rank)
    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    state = {key: (value * scale if _is_up_weight(key) else value) for key, value in state.items()}
    StableDiffusionPipeline.save_lora_weights(out_dir, unet_lora_layers=state, safe_serialization=True)


def _is_up_weight(key: str) -> bool:
    return any(part in key for part in ("lora_B", "lora.up", "lora_up"))


def validation_steps(steps: int, checkpoint_every: int) -> list[int]:
    """The steps that get validation images: every checkpoint step below ``steps``, and the last."""
    return [*range(checkpoint_every, steps, checkpoint_every), steps] if checkpoint_every else [steps]


class TrainingHistory:
    """Per-step losses and learning rates (index = step - 1) and the validation images so far."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.learning_rates: list[float] = []
        self.validation_rows: list[dict] = []
        self.validation_images: dict[str, np.ndarray] = {}

    def loss_table(self) -> pd.DataFrame:
        steps = range(1, len(self.losses) + 1)
        return pd.DataFrame({"step": steps, "loss": self.losses, "lr": self.learning_rates[: len(self.losses)]})

    def write(self, folder: Path) -> None:
        from PIL import Image

        self.loss_table().to_csv(folder / LOSS_FILE, index=False)
        pd.DataFrame(self.validation_rows, columns=["step", "prompt", "image", "seed", "file"]).to_csv(
            folder / VALIDATION_FILE, index=False
        )
        if self.validation_images:
            (folder / VALIDATION_DIR).mkdir()
        for name, array in self.validation_images.items():
            Image.fromarray(array).save(folder / name)

    @classmethod
    def read(cls, folder: Path) -> TrainingHistory:
        from PIL import Image

        history = cls()
        losses = pd.read_csv(folder / LOSS_FILE)
        history.losses, history.learning_rates = losses["loss"].tolist(), losses["lr"].tolist()
        history.validation_rows = pd.read_csv(folder / VALIDATION_FILE).to_dict("records")
        history.validation_images = {
            row["file"]: np.asarray(Image.open(folder / row["file"]).convert("RGB")) for row in history.validation_rows
        }
        return history


def render_validation(
    pipeline,
    prompts: list[str],
    seeds: list[int],
    resolution: int,
    settings: LoraValidationSettings,
    step: int,
    history: TrainingHistory,
) -> None:
    """Add ``settings.images`` images per prompt at ``step`` to ``history``, leaving training untouched.

    The global RNGs are forked (their state after equals their state before), the latents come
    from per-image generators seeded with ``seeds`` (the same at every checkpoint) and the UNet
    runs in eval mode without gradients, then goes back to train mode.
    """
    from meddap.diffusion.sampling import generate_images, to_grey_rgb

    device = pipeline._execution_device
    dtype = pipeline.unet.dtype
    use_amp = device.type == "cuda" and dtype in (
        torch.float16,
        torch.bfloat16,
    )  # fp32 LoRA layers on a half-precision UNet
    pipeline.unet.eval()
    try:
        with (
            torch.random.fork_rng(devices=[torch.cuda.current_device()] if device.type == "cuda" else []),
            torch.autocast(device.type, dtype=dtype, enabled=use_amp),
        ):
            for prompt_index, prompt in enumerate(prompts):
                images = generate_images(
                    pipeline, prompt, seeds, resolution, settings.steps, settings.guidance_scale, batch_size=len(seeds)
                )
                for index, (seed, image) in enumerate(zip(seeds, images)):
                    name = f"{VALIDATION_DIR}/step{step:05d}_{prompt_index * len(seeds) + index:02d}.png"
                    history.validation_rows.append(
                        {"step": step, "prompt": prompt, "image": index, "seed": seed, "file": name}
                    )
                    history.validation_images[name] = to_grey_rgb(image) if settings.grayscale else image
    finally:
        pipeline.unet.train()


def prompt_conditions(
    pipeline, prompts: list[str], flip: bool, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(condition, uncondition) of ``train_denoiser`` for images trained with ``prompts`` (one per image).

    ``condition`` is the one text embedding of a single distinct prompt, broadcast over every
    latent, or else one embedding per latent: each image's prompt, then the same again for the
    flipped copies when ``flip``. ``uncondition`` is the empty prompt's. Both fp32 on the CPU.
    """
    distinct = sorted(set(prompts))
    embeddings = encode_text(pipeline.tokenizer, pipeline.text_encoder, distinct, device).float().cpu()
    if len(distinct) == 1:
        condition = embeddings  # one embedding broadcast over every image
    else:
        per_image = torch.tensor([distinct.index(p) for p in prompts])
        condition = embeddings[torch.cat([per_image, per_image]) if flip else per_image]
    uncondition = encode_text(pipeline.tokenizer, pipeline.text_encoder, [""], device).float().cpu()
    return condition, uncondition


def train_lora(
    base_model: str,
    image_paths: list[str],
    prompt: str | Sequence[str],
    out_dir: str | Path,
    settings: LoraSettings = LoraSettings(),
    seed: int = 0,
    runtime: RuntimeSettings = RuntimeSettings(),
    checkpoint_dir: str | Path | None = None,
    provenance: dict | None = None,
    on_step: Callable[[int, float | None], None] | None = None,
) -> dict:
    """Train one LoRA on ``image_paths`` with ``prompt``; write it to ``out_dir`` atomically.

    ``prompt`` is one prompt for every image (a LoRA per class) or one per image (one LoRA shared
    by all classes, each image trained with its own class prompt, as in the original method).
    ``settings.validation``: ``images`` images per distinct prompt at every checkpoint step and
    the last step (see ``validation_steps``), ``steps`` sampling steps with ``scheduler`` and
    classifier-free ``guidance_scale`` against the empty prompt.
    ``on_step(step, loss)`` follows the training loop: it is called with ``(start_step, None)`` as
    the loop starts (0, or the checkpoint's step when resuming), then with each optimisation
    step's number and loss once that step's checkpoint and validation images are written. An
    exception it raises stops the training there, as a killed job would.
    """
    from diffusers.training_utils import cast_training_params
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file, save_file

    from meddap.runtime.devices import pick_device, pick_dtype

    if not image_paths:
        raise LoraError(f"no training images for the LoRA prompt {prompt!r}")
    prompts = [prompt] * len(image_paths) if isinstance(prompt, str) else list(prompt)
    if len(prompts) != len(image_paths):
        raise LoraError(f"{len(prompts)} prompts for {len(image_paths)} images: give one prompt, or one per image")
    distinct = sorted(set(prompts))
    validation = settings.validation
    torch_device = pick_device(runtime.device)
    dtype = pick_dtype(torch_device, runtime.precision)
    pipeline = load_pipeline(base_model, torch_device, dtype)
    unet, vae = pipeline.unet, pipeline.vae
    rank, target_modules, steps = settings.rank, settings.target_modules, settings.steps
    alpha = float(settings.alpha if settings.alpha is not None else rank)
    torch.manual_seed(derive_seed(seed, "lora-init"))  # the adapter's gaussian init is seeded too
    add_lora(unet, rank, alpha, target_modules)
    cast_training_params(unet, dtype=torch.float32)  # LoRA weights train in fp32
    trainable, base, share = lora_share(unet)
    log.info(
        "LoRA rank %d on %s: %d trainable parameters = %.4f%% of the UNet's %d",
        rank,
        list(target_modules),
        trainable,
        100 * share,
        base,
    )

    images = images_to_tensor(image_paths, settings.resolution)
    if settings.flip:
        images = torch.cat([images, images.flip(-1)])
    means, stds = encode_latents(vae, images)
    scaling = vae.config.scaling_factor
    condition, uncondition = prompt_conditions(pipeline, prompts, settings.flip, torch_device)
    noise_scheduler = training_scheduler(pipeline)  # the base model's schedule and prediction type
    if validation.images:
        set_scheduler(pipeline, validation.scheduler)  # the VAE stays: it decodes the validation images
        validation_seeds = [derive_seed(seed, "lora-validation", index) for index in range(validation.images)]
    else:
        del pipeline.vae  # not needed once latents are cached

    parameters = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=1e-2)
    run_digest = _config_digest(
        {
            "base": str(base_model),
            "images": sorted(zip(image_paths, prompts)),
            "prompt": distinct,
            "rank": rank,
            "alpha": alpha,
            "targets": list(target_modules),
            "steps": steps,
            "batch": settings.batch_size,
            "lr": settings.lr,
            "res": settings.resolution,
            "flip": settings.flip,
            "seed": seed,
            "dropout": settings.condition_dropout,
            "bias": settings.timestep_bias,
            "validation": validation.params(),
        }
    )
    start_step = 0
    history = TrainingHistory()
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
    if checkpoint_dir and (checkpoint_dir / "state.json").is_file():
        state = json.loads((checkpoint_dir / "state.json").read_text())
        if state.get("digest") == run_digest:
            set_peft_model_state_dict(unet, load_file(checkpoint_dir / "lora.safetensors"))
            optimizer.load_state_dict(torch.load(checkpoint_dir / "optimizer.pt", weights_only=True))
            history = TrainingHistory.read(checkpoint_dir)
            start_step = int(state["step"])
            log.info("resuming LoRA training from checkpoint %s at step %d", checkpoint_dir, start_step)
        else:
            log.info("ignoring checkpoint %s: it belongs to another configuration", checkpoint_dir)

    render_at = set(validation_steps(steps, settings.checkpoint_every)) if validation.images else set()

    def after_step(step: int, opt) -> None:
        history.learning_rates.append(opt.param_groups[0]["lr"])
        if step in render_at:
            render_validation(pipeline, distinct, validation_seeds, settings.resolution, validation, step, history)
        if checkpoint_dir and settings.checkpoint_every and step % settings.checkpoint_every == 0 and step < steps:
            with atomic_path(checkpoint_dir) as temporary:
                temporary.mkdir()
                save_file(
                    {k: v.contiguous() for k, v in get_peft_model_state_dict(unet).items()},
                    temporary / "lora.safetensors",
                )
                torch.save(opt.state_dict(), temporary / "optimizer.pt")
                history.write(temporary)  # the losses and images so far, for a resumed run's history
                (temporary / "state.json").write_text(json.dumps({"step": step, "digest": run_digest}))
        if on_step is not None:
            on_step(step, history.losses[-1])

    if on_step is not None:
        on_step(start_step, None)
    losses = train_denoiser(
        unet,
        means * scaling,
        stds * scaling,
        condition,
        uncondition,
        steps,
        settings.batch_size,
        settings.lr,
        seed,
        parameters=parameters,
        condition_dropout=settings.condition_dropout,
        timestep_bias=settings.timestep_bias,
        noise_scheduler=noise_scheduler,
        description=f"LoRA {distinct[0] if len(distinct) == 1 else f'{len(distinct)} prompts'}",
        start_step=start_step,
        optimizer=optimizer,
        on_step=after_step,
        losses=history.losses,  # filled from the checkpoint on resume: the list holds every step
    )
    info = {
        "prompt": distinct[0] if len(distinct) == 1 else distinct,
        "images": len(image_paths),
        "rank": rank,
        "alpha": alpha,
        "target_modules": list(target_modules),
        "trainable_parameters": trainable,
        "unet_parameters": base,
        "trainable_share": share,
        "steps": steps,
        "prediction_type": noise_scheduler.config.prediction_type,
        "resumed_from_step": start_step,
        "final_loss": float(sum(losses[-20:]) / len(losses[-20:])) if losses else None,
        "validation_images": len(history.validation_rows),
        "device": str(torch_device),
        "dtype": str(dtype),
        **(provenance or {}),
    }
    info[ALPHA_FOLDED] = True
    with atomic_path(out_dir) as temporary:
        temporary.mkdir()
        save_lora(unet, temporary, rank, alpha)
        write_json(temporary / "lora_info.json", info)
        history.write(temporary)
        write_lineage(temporary, "lora", images=image_paths, inputs={"base_model": base_model})
    if checkpoint_dir and checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir)
    return info


def check_lora_scale(lora_dir: str | Path) -> None:
    """Refuse a meddap LoRA saved before alpha was folded into its weights with alpha != rank:
    every reader would apply it at rank / alpha of its trained strength."""
    info_path = Path(lora_dir) / "lora_info.json"
    if not info_path.is_file():
        return  # not made by meddap: a diffusers-format file means what it says
    info = json.loads(info_path.read_text())
    if (
        not info.get(ALPHA_FOLDED)
        and info.get("alpha") is not None
        and float(info["alpha"]) != float(info.get("rank", info["alpha"]))
    ):
        raise LoraError(
            f"{lora_dir} was saved by an older meddap without its alpha/rank scale ({info['alpha']}/{info['rank']}): "
            "it would load at the wrong strength. Retrain it: delete the folder and rerun (rule train_lora)."
        )


def apply_lora(pipeline, lora_dir: str | Path, scale: float = 1.0) -> None:
    """Load the LoRA at ``lora_dir`` into ``pipeline`` and fuse it into the UNet weights."""
    from meddap.provenance.file_checks import check_safetensors, retrain_hint

    lora_dir = Path(lora_dir)
    if not (lora_dir / LORA_WEIGHT_NAME).is_file():
        raise LoraError(f"{lora_dir} has no {LORA_WEIGHT_NAME}; train the LoRA first (rule train_lora).")
    # A truncated file: one line naming it and the retraining command, not a safetensors error mid-job.
    check_safetensors(lora_dir / LORA_WEIGHT_NAME, retrain_hint(lora_dir, "train_lora"))
    check_lora_scale(lora_dir)
    try:
        pipeline.load_lora_weights(str(lora_dir), weight_name=LORA_WEIGHT_NAME, adapter_name="meddap")
    except (RuntimeError, ValueError, KeyError) as error:
        raise LoraError(
            f"LoRA {lora_dir / LORA_WEIGHT_NAME} does not fit this base model ({str(error).splitlines()[0][:300]}). "
            "It was probably trained on another base model: retrain it (delete the folder and rerun)."
        ) from error
    pipeline.fuse_lora(lora_scale=scale, adapter_names=["meddap"])
    pipeline.unload_lora_weights()  # fused weights stay; the adapter layers go
