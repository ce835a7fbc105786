"""Where the Stable Diffusion base model comes from, and how it becomes the folder jobs read.

``base_model.path`` names one of three things, told apart at parse time:

* a diffusers folder (``model_index.json``): every job reads it in place;
* a single-file SD v1.x checkpoint (``.safetensors``, the original CompVis key layout in which
  most fine-tuned models are shared): rule ``convert_base_model`` converts it once, offline,
  into ``results/base_model`` with ``StableDiffusionPipeline.from_single_file`` and component
  configs inferred from the file's tensor shapes (the SD v1.x architecture of ``meddap.diffusion.sd15``);
* a hub id (only with ``allow_hub: true`` and a ``base_model.revision`` pin): rule
  ``download_base_model`` downloads it once into ``results/base_model``; every other job is
  offline.

With ``base_model.pretrain.enabled`` the small model is built instead (``pretrain_base``).
A single file holds no tokenizer: CLIP ViT-L/14's (SD v1.x's) is rebuilt offline from the BPE
vocabulary that open_clip ships, or read from ``base_model.tokenizer``.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# Stable Diffusion 1.x and 2.x (epsilon or v-prediction) share this pipeline class; SDXL, SD3,
# Flux or a ControlNet folder have other UNets, text encoders or transformers.
SUPPORTED_PIPELINES = ("StableDiffusionPipeline",)


class BaseModelError(ValueError):
    """The configured base model cannot be used; the message names the folder and the remedy."""


FOLDER, SINGLE_FILE, HUB, PRETRAIN = "folder", "single_file", "hub", "pretrain"
BASE_MODEL_DIR = "results/base_model"  # what convert/download/pretrain write and every job reads
SOURCE_FILE = "source.json"  # in BASE_MODEL_DIR: where the folder came from
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
# The files of a diffusers SD folder that a pipeline needs: configs, tokenizer and safetensors
# weights (no pickles, no fp16/EMA/ONNX/Flax duplicates).
HUB_FILES = [
    "model_index.json",
    "scheduler/*.json",
    "tokenizer/*",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
]
WEIGHT_FILES = {
    "unet": "diffusion_pytorch_model.safetensors",
    "vae": "diffusion_pytorch_model.safetensors",
    "text_encoder": "model.safetensors",
}

# Original (CompVis/LDM) single-file key layout of SD v1.x.
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer."
CLIP_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
CLIP_MERGES = 49152 - 256 - 2  # CLIP ViT-L/14 uses the first 48894 merges of its BPE file


@dataclass(frozen=True)
class BaseModelSource:
    """The base model as configured: its kind, the user's path or hub id, and the folder jobs read."""

    kind: str
    location: str | None
    folder: str
    revision: str | None = None
    tokenizer: str | None = None

    @property
    def built_here(self) -> bool:
        """Whether a rule of this workflow writes the folder (else it is the user's, read in place)."""
        return self.kind != FOLDER


def base_model_source(base: dict, allow_hub: bool) -> BaseModelSource:
    """Tell the configured base model's kind apart and check it, with a one-line error naming the key."""
    path, revision, tokenizer = base["path"], base.get("revision"), base.get("tokenizer")
    if base["pretrain"]["enabled"]:
        if path:
            raise BaseModelError(
                "base_model.path and base_model.pretrain.enabled are both set: "
                "use your model (pretrain.enabled: false) or build the small one (path: null)"
            )
        return BaseModelSource(PRETRAIN, None, BASE_MODEL_DIR)
    if not path:
        raise BaseModelError("base_model.path is not set and base_model.pretrain.enabled is false: set one of them")
    if revision and not (not Path(path).exists() and HUB_ID.match(path)):
        raise BaseModelError(
            f"base_model.revision is set but base_model.path {path!r} is not a hub id: remove the revision"
        )
    if tokenizer and not str(path).endswith(".safetensors"):
        raise BaseModelError("base_model.tokenizer is only read for a single-file .safetensors checkpoint: remove it")
    local = Path(path)
    if local.is_dir():
        check_base_model_folder(local)
        return BaseModelSource(FOLDER, str(path), str(path))
    if local.suffix in PICKLE_SUFFIXES:
        raise BaseModelError(
            f"base_model.path {path!r} is a pickled checkpoint, which meddap does not unpickle (it can run code): "
            "use the .safetensors file of the model, or a diffusers folder"
        )
    if local.suffix == ".safetensors":
        if not local.is_file():
            raise BaseModelError(
                f"base_model.path {path!r} does not exist: point it at a single-file SD v1.x .safetensors checkpoint"
            )
        check_single_file(local)
        if tokenizer:
            check_tokenizer_folder(tokenizer)
        elif importlib.util.find_spec("open_clip") is None:
            raise BaseModelError(
                "a single-file checkpoint holds no tokenizer: install open_clip_torch (it ships CLIP's vocabulary) "
                "or set base_model.tokenizer to a folder with CLIP's tokenizer files"
            )
        return BaseModelSource(SINGLE_FILE, str(path), BASE_MODEL_DIR, tokenizer=tokenizer)
    if allow_hub and HUB_ID.match(str(path)):
        if not revision:
            raise BaseModelError(
                f"base_model.revision is not set for the hub id {path!r}: pin the commit (or tag) to download, "
                "so that a rerun uses the same weights"
            )
        return BaseModelSource(HUB, str(path), BASE_MODEL_DIR, revision=str(revision))
    hint = "" if allow_hub else " (a hub id needs allow_hub: true and base_model.revision)"
    raise BaseModelError(
        f"base_model.path {str(path)!r} does not exist{hint}. Point it at a local diffusers Stable Diffusion "
        "folder (with model_index.json) or a single-file SD v1.x .safetensors checkpoint, "
        "or enable base_model.pretrain."
    )


def unchecked_base_model_source(base: dict, allow_hub: bool) -> BaseModelSource:
    """The base model's kind from the configured path alone, checking nothing on disk: for a cost
    plan made before the model is at hand (``meddap plan``); a run checks it (base_model_source)."""
    path = base["path"]
    if base["pretrain"]["enabled"] or not path:
        return BaseModelSource(PRETRAIN, None, BASE_MODEL_DIR)
    if str(path).endswith(".safetensors"):
        return BaseModelSource(SINGLE_FILE, str(path), BASE_MODEL_DIR, tokenizer=base.get("tokenizer"))
    if allow_hub and not Path(path).exists() and HUB_ID.match(str(path)):
        return BaseModelSource(HUB, str(path), BASE_MODEL_DIR, revision=base.get("revision"))
    return BaseModelSource(FOLDER, str(path), str(path))


# ---------------------------------------------------------------- diffusers folders: check and load
def check_base_model_folder(path: str | Path) -> Path:
    """Raise a clear error unless ``path`` is a diffusers Stable Diffusion folder."""
    path = Path(path)
    if not path.is_dir():
        raise BaseModelError(
            f"base_model.path {str(path)!r} does not exist. Point it at a local diffusers Stable "
            "Diffusion v1.x folder (with model_index.json), or enable base_model.pretrain."
        )
    index = path / "model_index.json"
    if not index.is_file():
        raise BaseModelError(
            f"base_model.path {str(path)!r} is not a diffusers pipeline folder (no model_index.json). "
            "Convert a single-file checkpoint with diffusers' convert script or use the folder layout."
        )
    components = json.loads(index.read_text())
    pipeline_class = components.get("_class_name")
    if pipeline_class not in SUPPORTED_PIPELINES:
        raise BaseModelError(
            f"base model folder {str(path)!r} holds a {pipeline_class} (model_index.json); meddap trains LoRAs on "
            f"Stable Diffusion 1.x/2.x ({', '.join(SUPPORTED_PIPELINES)}) only. Point base_model.path at such a folder."
        )
    missing = [
        name
        for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
        if name not in components or not (path / name).is_dir()
    ]
    if missing:
        raise BaseModelError(
            f"base model folder {str(path)!r} lacks component(s) {missing}; it must be a full SD v1.x pipeline folder."
        )
    return path


def load_pipeline(path: str | Path, device: torch.device, dtype: torch.dtype | None = None):
    """``StableDiffusionPipeline.from_pretrained`` on a local diffusers folder (checked first with
    ``check_base_model_folder``), with the hub offline, moved to the torch ``device``, in ``dtype``
    (default fp32).

    Hub ids and single files never reach here: rules download_base_model / convert_base_model
    turn them into a local folder once.
    """
    import torch
    from diffusers import StableDiffusionPipeline

    check_base_model_folder(path)
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"  # a local folder never touches the network
    try:
        pipeline = StableDiffusionPipeline.from_pretrained(
            str(path),
            dtype=dtype if dtype is not None else torch.float32,
            safety_checker=None,
            requires_safety_checker=False,
            local_files_only=True,
        )
    finally:
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)


# ---------------------------------------------------------------- single-file checkpoints
def single_file_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape, from the safetensors header only (no weights are read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except Exception as error:  # safetensors raises its own error types for a corrupt header
        raise BaseModelError(f"base_model.path {str(path)!r} is not a readable safetensors file ({error})") from None


def check_single_file(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Refuse anything but a full SD v1.x checkpoint (UNet, VAE and CLIP text encoder), naming what was found."""
    shapes = single_file_shapes(path)
    name = f"base_model.path {str(path)!r}"
    if any(key.startswith("conditioner.embedders.") for key in shapes):
        found = "an SDXL checkpoint"
    elif any(key.startswith("cond_stage_model.model.") for key in shapes):
        found = "an SD 2.x checkpoint (OpenCLIP text encoder)"
    elif UNET_PREFIX + "input_blocks.0.0.weight" not in shapes:
        found = "no Stable Diffusion UNet (model.diffusion_model.* keys); a LoRA or another model family?"
    elif shapes[UNET_PREFIX + "input_blocks.0.0.weight"][1] != 4:
        found = (
            f"a UNet with {shapes[UNET_PREFIX + 'input_blocks.0.0.weight'][1]} input channels "
            "(inpainting or depth model)"
        )
    elif TEXT_PREFIX + "text_model.embeddings.token_embedding.weight" not in shapes:
        found = "no CLIP text encoder (cond_stage_model.transformer.* keys)"
    elif VAE_PREFIX + "encoder.conv_in.weight" not in shapes:
        found = "no VAE (first_stage_model.* keys)"
    else:
        return shapes
    raise BaseModelError(
        f"{name} holds {found}; a single file must be a full SD v1.x checkpoint. For other models give a "
        "diffusers folder of a StableDiffusionPipeline (SD 1.x/2.x)."
    )


def _blocks(shapes: dict, prefix: str, pattern: str) -> list[int]:
    found = {int(m.group(1)) for key in shapes if (m := re.match(re.escape(prefix) + pattern, key))}
    return sorted(found)


def single_file_configs(shapes: dict[str, tuple[int, ...]]) -> dict[str, dict]:
    """The diffusers component configs of an SD v1.x checkpoint, its widths read from its tensor shapes.

    Depth, block types and attention layout are SD v1.x's (``meddap.diffusion.sd15``); the channel widths
    come from the file, so full-size and reduced-width checkpoints both convert.
    """
    from meddap.diffusion.sd15 import SD15_SCHEDULER, SD15_TEXT, SD15_UNET, SD15_VAE

    unet_levels = len(SD15_UNET["block_out_channels"])
    per_level = SD15_UNET["layers_per_block"] + 1
    unet_widths = tuple(
        shapes[f"{UNET_PREFIX}input_blocks.{per_level * level + 1}.0.in_layers.2.weight"][0]
        for level in range(unet_levels)
    )
    cross_attention = shapes[f"{UNET_PREFIX}input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"][1]
    vae_levels = _blocks(shapes, VAE_PREFIX + "encoder.down.", r"(\d+)\.")
    vae_widths = tuple(shapes[f"{VAE_PREFIX}encoder.down.{level}.block.0.conv1.weight"][0] for level in vae_levels)
    latent_channels = shapes[f"{VAE_PREFIX}quant_conv.weight"][0] // 2
    vocab_size, text_width = shapes[TEXT_PREFIX + "text_model.embeddings.token_embedding.weight"]
    text_layers = len(_blocks(shapes, TEXT_PREFIX + "text_model.encoder.layers.", r"(\d+)\."))
    return {
        "unet": {
            "_class_name": "UNet2DConditionModel",
            **SD15_UNET,
            "block_out_channels": unet_widths,
            "cross_attention_dim": cross_attention,
        },
        "vae": {
            "_class_name": "AutoencoderKL",
            **SD15_VAE,
            "block_out_channels": vae_widths,
            "down_block_types": ("DownEncoderBlock2D",) * len(vae_widths),
            "up_block_types": ("UpDecoderBlock2D",) * len(vae_widths),
            "latent_channels": latent_channels,
        },
        "text_encoder": {
            **SD15_TEXT,
            "vocab_size": vocab_size,
            "hidden_size": text_width,
            "intermediate_size": shapes[TEXT_PREFIX + "text_model.encoder.layers.0.mlp.fc1.weight"][0],
            "num_hidden_layers": text_layers,
            "num_attention_heads": max(1, text_width // 64),  # CLIP's heads are 64 wide
            "projection_dim": text_width,
            "max_position_embeddings": shapes[TEXT_PREFIX + "text_model.embeddings.position_embedding.weight"][0],
        },
        # SD v1.x trains with epsilon prediction on the scaled-linear schedule.
        "scheduler": {"_class_name": "PNDMScheduler", **SD15_SCHEDULER, "prediction_type": "epsilon"},
    }


def check_tokenizer_folder(folder: str | Path) -> Path:
    folder = Path(folder)
    if not (
        (folder / "tokenizer.json").is_file()
        or ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file())
    ):
        raise BaseModelError(
            f"base_model.tokenizer {str(folder)!r} holds no CLIP tokenizer "
            "(tokenizer.json, or vocab.json and merges.txt): "
            "point it at the tokenizer/ folder of an SD v1.x diffusers model, or leave it null"
        )
    return folder


def clip_vit_l14_tokenizer():
    """CLIP ViT-L/14's tokenizer (SD v1.x's), built offline from the BPE vocabulary open_clip ships.

    The vocabulary is CLIP's own construction: the 256 byte symbols, the same with the
    end-of-word mark, one token per merge, then the start and end tokens (49408 in all).
    """
    from transformers import CLIPTokenizer

    from meddap.diffusion.tokenizer import bytes_to_unicode

    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError(
            "open_clip_torch is not installed: it ships CLIP's vocabulary (pip install open_clip_torch)"
        )
    bpe_file = Path(spec.submodule_search_locations[0]) / CLIP_BPE_FILE
    lines = gzip.open(bpe_file, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : CLIP_MERGES + 1]]
    symbols = list(bytes_to_unicode().values())
    tokens = (
        symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    )
    return CLIPTokenizer(vocab={token: i for i, token in enumerate(tokens)}, merges=merges, model_max_length=77)


def write_config_folder(shapes: dict, out_dir: Path, tokenizer_folder: str | Path | None = None) -> Path:
    """A diffusers folder with the component configs and tokenizer but no weights
    (``from_single_file``'s ``config``)."""
    from transformers import CLIPTextConfig, CLIPTokenizer

    configs = single_file_configs(shapes)
    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_folder)) if tokenizer_folder else clip_vit_l14_tokenizer()
    for name in ("unet", "vae"):
        (out_dir / name).mkdir(parents=True)
        (out_dir / name / "config.json").write_text(json.dumps(configs[name], indent=2))
    (out_dir / "scheduler").mkdir()
    (out_dir / "scheduler" / "scheduler_config.json").write_text(json.dumps(configs["scheduler"], indent=2))
    text_config = CLIPTextConfig(
        **configs["text_encoder"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    text_config.architectures = ["CLIPTextModel"]
    text_config.save_pretrained(out_dir / "text_encoder")
    tokenizer.save_pretrained(out_dir / "tokenizer")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (out_dir / "model_index.json").write_text(json.dumps(index, indent=2))
    return out_dir


def convert_single_file(
    checkpoint: str | Path, out_dir: str | Path, tokenizer_folder: str | Path | None = None
) -> dict:
    """Convert a single-file SD v1.x checkpoint into a diffusers folder at ``out_dir`` (atomically, offline)."""
    from diffusers import StableDiffusionPipeline

    from meddap.provenance.lineage import file_digest, write_lineage
    from meddap.runtime.atomic import atomic_path

    checkpoint = Path(checkpoint)
    shapes = check_single_file(checkpoint)
    with tempfile.TemporaryDirectory() as scratch:
        configs = write_config_folder(shapes, Path(scratch) / "configs", tokenizer_folder)
        pipeline = StableDiffusionPipeline.from_single_file(
            str(checkpoint),
            config=str(configs),
            local_files_only=True,
            safety_checker=None,
            requires_safety_checker=False,
        )
    unet = pipeline.unet
    source = {
        "kind": SINGLE_FILE,
        "checkpoint": str(checkpoint),
        "sha256": file_digest(checkpoint),
        "tokenizer": str(tokenizer_folder) if tokenizer_folder else "CLIP ViT-L/14 (open_clip's BPE vocabulary)",
        "unet_block_out_channels": list(unet.config.block_out_channels),
        "unet_parameters": sum(p.numel() for p in unet.parameters()),
    }
    with atomic_path(out_dir) as temporary:
        pipeline.save_pretrained(temporary, safe_serialization=True)
        (Path(temporary) / SOURCE_FILE).write_text(json.dumps(source, indent=2))
        # A downloaded or converted model's pretraining data is unknown to meddap: no images.
        write_lineage(temporary, "base_model", inputs={"checkpoint": checkpoint}, source=source)
    check_base_model_folder(out_dir)
    return source


# ---------------------------------------------------------------- hub ids
def download_base_model(repo_id: str, revision: str, out_dir: str | Path) -> dict:
    """Download a hub SD pipeline at a pinned revision, safetensors weights only, into ``out_dir``."""
    from huggingface_hub import HfApi, snapshot_download

    from meddap.provenance.lineage import write_lineage
    from meddap.runtime.atomic import atomic_path

    commit = HfApi().model_info(repo_id, revision=revision).sha
    with atomic_path(out_dir) as temporary:
        snapshot_download(repo_id, revision=commit, local_dir=temporary, allow_patterns=HUB_FILES)
        missing = [
            f"{part}/{name}" for part, name in WEIGHT_FILES.items() if not (Path(temporary) / part / name).is_file()
        ]
        if missing:
            raise BaseModelError(
                f"{repo_id}@{revision} has no safetensors weights {missing}; meddap loads no pickled weights: "
                "pick a revision with safetensors files"
            )
        check_base_model_folder(temporary)
        source = {"kind": HUB, "repo_id": repo_id, "revision": revision, "commit": commit}
        (Path(temporary) / SOURCE_FILE).write_text(json.dumps(source, indent=2))
        write_lineage(temporary, "base_model", inputs={"hub": f"{repo_id}@{commit}"}, source=source)
    return source
