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

from meddap.diffusion.sampling import generate_images, prepare_for_generation, set_scheduler, to_grey_rgb
from meddap.runtime.atomic import atomic_path, write_json
from meddap.runtime.seeding import derive_seed
from meddap.settings.choices import GUIDANCE_REFERENCES
from meddap.settings.stages import RuntimeSettings, SamplingSettings

log = logging.getLogger(__name__)

METADATA_COLUMNS = ["file", "class", "adjective", "prompt", "seed", "shard", "index"]


def image_seed(seed: int, cls: str, adjective: str, shard: int, index: int, arm: str = "") -> int:
    """The seed of image ``index`` of a shard; depends on nothing else. Each generative arm
    (fold) draws its own noise, so the folds' synthetic sets are independent draws."""
    if not arm:
        return derive_seed(seed, "synthetic", cls, adjective, shard, index)
    return derive_seed(seed, "synthetic", arm, cls, adjective, shard, index)


def guided_image_seed(seed: int, arm: str, cls: str, adjective: str, shard: int, index: int) -> int:
    """The seed of image ``index`` of a guided shard (its noise and its strength draw): a stream of
    its own, so guided and text-to-image images never share noise."""
    return derive_seed(seed, "guided", arm, cls, adjective, shard, index)


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
    guides: list[str] | None = None,
    strengths: list[float] | None = None,
) -> pd.DataFrame:
    """Write PNGs + metadata.csv + provenance.json + lineage.json (the LoRA and base model the
    images came from, and for a guided shard its guides, with their digests) into ``out_dir``
    atomically (whole folder). ``guides`` and ``strengths``: one per image of a guided shard."""
    from PIL import Image

    from meddap.provenance.lineage import write_lineage

    rows = []
    with atomic_path(out_dir) as temporary:
        temporary.mkdir()
        for index, (array, seed) in enumerate(zip(images, seeds)):
            name = f"{cls}_{adjective}_s{shard:03d}_{index:04d}.png"
            Image.fromarray(array, mode="RGB").save(temporary / name)
            rows.append((name, cls, adjective, prompt, seed, shard, index))
        metadata = pd.DataFrame(rows, columns=METADATA_COLUMNS)
        if guides is not None:
            if not len(guides) == len(strengths or []) == len(images):
                raise ValueError(f"{len(images)} images need one guide and one strength each")
            metadata["derived_from"] = guides
            metadata["strength"] = strengths
        metadata.to_csv(temporary / "metadata.csv", index=False)
        write_json(temporary / "provenance.json", provenance)
        # A guide is listed once however many images it starts: the audit walks each one.
        write_lineage(temporary, "shard", images=sorted(set(guides or [])), inputs=lineage_inputs or {})
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
    pipeline, reference_unet, compiled = _sampling_pipeline(base_model, lora_dir, sampling, runtime)
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
    info = _shard_info(cls, adjective, shard, prompt, negative_prompt, len(images), sampling, compiled, lora_dir)
    info.update({"base_model": str(base_model), "seed": seed, "arm": arm, **(provenance or {})})
    return write_shard(out_dir, images, cls, adjective, prompt, seeds, shard, info, _lineage(lora_dir, base_model))


def _sampling_pipeline(base_model, lora_dir, sampling: SamplingSettings, runtime: RuntimeSettings):
    """(pipeline with the LoRA fused and the scheduler set, the base UNet as guidance reference or
    None, whether the UNet was compiled)."""
    from meddap.diffusion.base_models import load_pipeline
    from meddap.diffusion.lora import apply_lora
    from meddap.runtime.devices import pick_device, pick_dtype

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
    return pipeline, reference_unet, compiled


def _lineage(lora_dir, base_model) -> dict[str, str]:
    """What a shard's images came from, for its lineage.json (the audit walks both)."""
    return {"lora": str(lora_dir), "base_model": str(base_model)}


def _shard_info(cls, adjective, shard, prompt, negative_prompt, images, sampling, compiled, lora_dir) -> dict:
    return {
        "class": cls,
        "adjective": adjective,
        "shard": shard,
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "images": images,
        "resolution": sampling.resolution,
        "steps": sampling.steps,
        "guidance_scale": sampling.guidance_scale,
        "guidance_reference": sampling.guidance_reference,
        "scheduler": sampling.scheduler,
        "grayscale": sampling.grayscale,
        "compiled": compiled,
        "lora": str(lora_dir),
        "lora_scale": sampling.lora_scale,
    }


def generate_guided_shard(
    base_model: str,
    lora_dir: str | Path,
    out_dir: str | Path,
    cls: str,
    adjective: str,
    shard: int,
    prompt: str,
    shard_size: int,
    first_index: int,
    candidates: list[str],
    strength: float | list[float],
    seed: int,
    sampling: SamplingSettings,
    arm: str,
    runtime: RuntimeSettings = RuntimeSettings(),
    negative_prompt: str = "",
    provenance: dict | None = None,
) -> pd.DataFrame:
    """Draw ``shard_size`` guided images of one (arm, class, adjective, shard): image ``i`` starts
    from guide ``assign_guides(candidates, first_index + i)`` (``candidates``: the arm's training
    originals of the class; ``first_index``: the shard's first position in its stream), noised to
    its strength and denoised with the prompt and the class LoRA. Writes the shard folder, whose
    metadata and lineage name every guide."""
    from meddap.diffusion.denoising import images_to_tensor
    from meddap.diffusion.guided import assign_guides, draw_strengths, generate_guided_images, guide_offset

    seeds = [guided_image_seed(seed, arm, cls, adjective, shard, index) for index in range(shard_size)]
    strengths = draw_strengths(strength, seeds)
    offset = guide_offset(seed, arm, cls, adjective, len(candidates))
    guides = assign_guides(candidates, first_index, shard_size, offset)
    pipeline, reference_unet, compiled = _sampling_pipeline(base_model, lora_dir, sampling, runtime)
    guide_images = images_to_tensor(guides, sampling.resolution)
    images = generate_guided_images(
        pipeline, prompt, guide_images, seeds, strengths, sampling, negative_prompt, reference_unet
    )
    if sampling.grayscale:
        images = [to_grey_rgb(image) for image in images]
    info = _shard_info(cls, adjective, shard, prompt, negative_prompt, len(images), sampling, compiled, lora_dir)
    info.update(
        {
            "base_model": str(base_model),
            "seed": seed,
            "arm": arm,
            "strength": strength,
            "guide_candidates": len(set(candidates)),
            "first_index": first_index,
            **(provenance or {}),
        }
    )
    lineage = _lineage(lora_dir, base_model)
    return write_shard(out_dir, images, cls, adjective, prompt, seeds, shard, info, lineage, guides, strengths)


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
