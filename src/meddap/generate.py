"""Generate one shard of labelled synthetic images: (class, adjective, shard) -> PNGs + metadata.csv.

The shard is generated in batches with the class LoRA fused into the UNet and the prompt
embeddings computed once. Each image has its own ``torch.Generator`` seeded from
(seed, class, adjective, shard, index), so an image does not depend on the batch size or on
the other images, and regenerating a shard reproduces it.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from meddap.atomic import atomic_path, write_json
from meddap.choices import GUIDANCE_REFERENCES
from meddap.seeding import derive_seed
from meddap.stages import RuntimeSettings, SamplingSettings

log = logging.getLogger(__name__)

# generation.scheduler -> diffusers class (keyed by meddap.choices.SCHEDULERS, checked by a test)
SCHEDULER_CLASSES = {
    "dpm": "DPMSolverMultistepScheduler",
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "unipc": "UniPCMultistepScheduler",
}
METADATA_COLUMNS = ["file", "class", "adjective", "prompt", "seed", "shard", "index"]


def image_seed(seed: int, cls: str, adjective: str, shard: int, index: int, arm: str = "") -> int:
    """The seed of image ``index`` of a shard; depends on nothing else. Each generative arm
    (fold) draws its own noise, so the folds' synthetic sets are independent draws."""
    if not arm:
        return derive_seed(seed, "synthetic", cls, adjective, shard, index)
    return derive_seed(seed, "synthetic", arm, cls, adjective, shard, index)


def to_grey_rgb(image: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma, repeated in three channels (the layout of grey ultrasound PNGs)."""
    luma = np.round(image[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114]))
    return np.repeat(np.clip(luma, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def set_scheduler(pipeline, name: str) -> None:
    import diffusers

    if name not in SCHEDULER_CLASSES:
        raise ValueError(f"generation.scheduler {name!r} unknown; choose one of {sorted(SCHEDULER_CLASSES)}")
    scheduler_class = getattr(diffusers, SCHEDULER_CLASSES[name])
    pipeline.scheduler = scheduler_class.from_config(pipeline.scheduler.config)


def prepare_for_generation(pipeline, reference_unet=None, compile_unet: bool = False) -> bool:
    """Device-specific speed-ups that leave the images unchanged in kind: channels_last for the
    convolutions on CUDA, and optionally ``torch.compile`` of the UNet(s) there (compiled once per
    batch shape; keep the shard a multiple of the batch to compile once). SDPA attention is
    diffusers' default on PyTorch 2. Returns whether the UNet(s) were compiled."""
    device = pipeline._execution_device
    if device.type != "cuda":
        return False
    torch.backends.cudnn.benchmark = True  # fixed shapes per shard: let cuDNN pick its fastest convolutions
    unets = [module for module in (pipeline.unet, reference_unet) if module is not None]
    for module in (*unets, pipeline.vae):
        module.to(memory_format=torch.channels_last)
    if compile_unet:
        for module in unets:
            module.compile(dynamic=False)  # in place: the pipeline keeps the same module object
    return compile_unet


@torch.no_grad()
def generate_images(
    pipeline,
    prompt: str,
    seeds: list[int],
    resolution: int,
    steps: int,
    guidance_scale: float,
    batch_size: int,
    negative_prompt: str = "",
    reference_unet=None,
) -> list[np.ndarray]:
    """uint8 RGB arrays, one per seed, generated in batches of ``batch_size``.

    Classifier-free guidance: eps = eps_ref + g * (eps_cond - eps_ref). ``eps_ref`` is the
    pipeline's own UNet on the negative prompt (standard CFG), or ``reference_unet`` (the base
    model without the LoRA) when given, so that guidance amplifies what the class LoRA changed.
    Initial latents come from one CPU generator per image: an image does not depend on the batch.
    """
    from tqdm import tqdm

    device = pipeline._execution_device
    unet, vae = pipeline.unet, pipeline.vae
    use_guidance = guidance_scale != 1.0
    prompt_embeds, negative_embeds = pipeline.encode_prompt(prompt, device, 1, True, negative_prompt=negative_prompt)
    scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
    latent_shape = (unet.config.in_channels, resolution // scale_factor, resolution // scale_factor)
    images: list[np.ndarray] = []
    for start in tqdm(range(0, len(seeds), batch_size), desc=f"generate {prompt}", mininterval=5):
        batch_seeds = seeds[start : start + batch_size]
        n = len(batch_seeds)
        scheduler = pipeline.scheduler.__class__.from_config(pipeline.scheduler.config)
        scheduler.set_timesteps(steps, device=device)
        noise = torch.stack(
            [torch.randn(latent_shape, generator=torch.Generator("cpu").manual_seed(s)) for s in batch_seeds]
        )
        latents = (noise * scheduler.init_noise_sigma).to(device, unet.dtype)
        cond = prompt_embeds.expand(n, -1, -1)
        uncond = negative_embeds.expand(n, -1, -1)
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(latents, t)
            if not use_guidance:
                eps = unet(model_input, t, cond).sample
            elif reference_unet is None:
                both = unet(torch.cat([model_input, model_input]), t, torch.cat([uncond, cond])).sample
                eps_ref, eps_cond = both.chunk(2)
                eps = eps_ref + guidance_scale * (eps_cond - eps_ref)
            else:
                eps_cond = unet(model_input, t, cond).sample
                eps_ref = reference_unet(model_input, t, uncond).sample
                eps = eps_ref + guidance_scale * (eps_cond - eps_ref)
            latents = scheduler.step(eps, t, latents).prev_sample
        decoded = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
        batch = ((decoded.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        images.extend(batch)
    return images


def write_shard(
    out_dir: str | Path,
    images: list[np.ndarray],
    cls: str,
    adjective: str,
    prompt: str,
    seeds: list[int],
    shard: int,
    provenance: dict,
    lineage_inputs: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Write PNGs + metadata.csv + provenance.json + lineage.json (the LoRA and base model the
    images came from) into ``out_dir`` atomically (whole folder)."""
    from PIL import Image

    from meddap.lineage import write_lineage

    rows = []
    with atomic_path(out_dir) as temporary:
        temporary.mkdir()
        for index, (array, seed) in enumerate(zip(images, seeds)):
            name = f"{cls}_{adjective}_s{shard:03d}_{index:04d}.png"
            Image.fromarray(array, mode="RGB").save(temporary / name)
            rows.append((name, cls, adjective, prompt, seed, shard, index))
        metadata = pd.DataFrame(rows, columns=METADATA_COLUMNS)
        metadata.to_csv(temporary / "metadata.csv", index=False)
        write_json(temporary / "provenance.json", provenance)
        write_lineage(temporary, "shard", inputs=lineage_inputs or {})
    return metadata


def generate_shard(
    base_model: str,
    lora_dir: str | Path,
    out_dir: str | Path,
    cls: str,
    adjective: str,
    shard: int,
    prompt: str,
    shard_size: int,
    seed: int,
    sampling: SamplingSettings,
    runtime: RuntimeSettings = RuntimeSettings(),
    negative_prompt: str = "",
    arm: str = "",
    provenance: dict | None = None,
) -> pd.DataFrame:
    """Draw ``shard_size`` images of one (arm, class, adjective, shard) with the class LoRA; write the shard folder."""
    from meddap.base_models import load_pipeline
    from meddap.devices import pick_device, pick_dtype
    from meddap.lora import apply_lora

    torch_device = pick_device(runtime.device)
    pipeline = load_pipeline(base_model, torch_device, pick_dtype(torch_device, runtime.precision))
    if sampling.guidance_reference not in GUIDANCE_REFERENCES:
        raise ValueError(
            f"generation.guidance_reference {sampling.guidance_reference!r}: use one of {GUIDANCE_REFERENCES}"
        )
    reference_unet = copy.deepcopy(pipeline.unet) if sampling.guidance_reference == "base" else None
    apply_lora(pipeline, lora_dir, sampling.lora_scale)
    set_scheduler(pipeline, sampling.scheduler)
    compiled = prepare_for_generation(pipeline, reference_unet, sampling.compile)
    seeds = [image_seed(seed, cls, adjective, shard, index, arm) for index in range(shard_size)]
    images = generate_images(
        pipeline,
        prompt,
        seeds,
        sampling.resolution,
        sampling.steps,
        sampling.guidance_scale,
        sampling.batch_size,
        negative_prompt,
        reference_unet,
    )
    if sampling.grayscale:
        images = [to_grey_rgb(image) for image in images]
    info = {
        "class": cls,
        "adjective": adjective,
        "shard": shard,
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "images": len(images),
        "resolution": sampling.resolution,
        "steps": sampling.steps,
        "guidance_scale": sampling.guidance_scale,
        "guidance_reference": sampling.guidance_reference,
        "scheduler": sampling.scheduler,
        "grayscale": sampling.grayscale,
        "compiled": compiled,
        "lora": str(lora_dir),
        "lora_scale": sampling.lora_scale,
        "base_model": str(base_model),
        "seed": seed,
        "arm": arm,
        **(provenance or {}),
    }
    lineage = {"lora": str(lora_dir), "base_model": str(base_model)}
    return write_shard(out_dir, images, cls, adjective, prompt, seeds, shard, info, lineage)


def read_shards(shard_dirs: list[str | Path]) -> pd.DataFrame:
    """All rows of the shards' metadata.csv with a ``path`` column, in shard then index order."""
    frames = []
    for shard_dir in shard_dirs:
        metadata_path = Path(shard_dir) / "metadata.csv"
        if not metadata_path.is_file():
            raise FileNotFoundError(f"{metadata_path} is missing: the shard is incomplete; regenerate it.")
        frame = pd.read_csv(metadata_path)
        frame["path"] = [str(Path(shard_dir) / name) for name in frame["file"]]
        missing = [path for path in frame["path"] if not Path(path).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{missing[0]} is listed in {metadata_path} but missing ({len(missing)} of the shard's "
                f"{len(frame)} images): regenerate the shard with "
                f"snakemake --cores all --forcerun {shard_dir}"
            )
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=[*METADATA_COLUMNS, "path"])
    return (
        pd.concat(frames, ignore_index=True)
        .sort_values(["class", "adjective", "shard", "index"], kind="stable")
        .reset_index(drop=True)
    )
