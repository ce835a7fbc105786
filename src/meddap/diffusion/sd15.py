"""A Stable Diffusion v1.5-architecture pipeline with random weights, at full or reduced width.

The component configurations are those of stable-diffusion-v1-5/stable-diffusion-v1-5 (unet/, vae/,
text_encoder/ and scheduler/ config.json); ``width_divisor`` divides every channel width (and
the text encoder's) while the depth, block types, attention layout and schedules stay. A folder
written by ``build_sd15_pipeline`` is what a downloaded SD v1.5 checkpoint looks like to the
workflow, so tests can prove that the loader, LoRA training and generation accept one, and the
benchmark can time full-size arithmetic without downloading weights. The tokenizer is the
offline one (meddap.diffusion.tokenizer.build_tokenizer): the real CLIP BPE vocabulary cannot be built
offline, and the text encoder keeps SD's 49408-token embedding table all the same.
"""

from __future__ import annotations

from pathlib import Path

import torch

SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
)
SD15_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)
SD15_TEXT = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
)
SD15_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    skip_prk_steps=True,
    steps_offset=1,
    set_alpha_to_one=False,
)


def sd15_components(width_divisor: int = 1, tokenizer_words: list[str] | None = None, seed: int = 0):
    """(vae, text_encoder, tokenizer, unet, scheduler) of the SD v1.5 architecture, random weights."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from meddap.diffusion.tokenizer import build_tokenizer

    if width_divisor < 1 or any(
        (c // width_divisor) % 32 or c % width_divisor for c in SD15_UNET["block_out_channels"]
    ):
        raise ValueError(
            f"width_divisor must keep the UNet widths whole multiples of 32 (1, 2, 5 or 10), got {width_divisor}"
        )
    torch.manual_seed(seed)

    def multiple_of(width: float, step: int) -> int:
        return max(step, int(round(width / step)) * step)

    unet_config = {
        **SD15_UNET,
        "block_out_channels": tuple(c // width_divisor for c in SD15_UNET["block_out_channels"]),
    }
    text_width = multiple_of(SD15_TEXT["hidden_size"] / width_divisor, 64)  # CLIP heads are 64 wide
    unet_config["cross_attention_dim"] = text_width
    vae_config = {
        **SD15_VAE,
        "block_out_channels": tuple(multiple_of(c / width_divisor, 32) for c in SD15_VAE["block_out_channels"]),
    }
    tokenizer = build_tokenizer(tokenizer_words or ["benign", "malignant", "normal", "tumor", "no"])
    text_config = CLIPTextConfig(
        **{
            **SD15_TEXT,
            "hidden_size": text_width,
            "intermediate_size": 4 * text_width,
            "projection_dim": text_width,
            "num_attention_heads": text_width // 64,
        },
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    unet = UNet2DConditionModel(**unet_config)
    vae = AutoencoderKL(**vae_config)
    text_encoder = CLIPTextModel(text_config)
    return vae, text_encoder, tokenizer, unet, PNDMScheduler(**SD15_SCHEDULER)


def build_sd15_pipeline(
    out_dir: str | Path, width_divisor: int = 1, tokenizer_words: list[str] | None = None, seed: int = 0
) -> Path:
    """Write a random-weight SD v1.5-architecture pipeline folder with ``save_pretrained``."""
    from meddap.diffusion.pipeline_folder import save_pipeline_folder

    return save_pipeline_folder(out_dir, *sd15_components(width_divisor, tokenizer_words, seed))


# ---------------------------------------------------------------- the original single-file layout
# SD v1.x as CompVis released it: one state dict, UNet under model.diffusion_model., VAE under
# first_stage_model., CLIP under cond_stage_model.transformer. (the layout of most shared
# fine-tunes). Written here so tests can prove that such a file converts (meddap.diffusion.base_models).
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _unet_key(key: str, layers_per_block: int, up_attention_levels: set[int]) -> str:
    per_level = layers_per_block + 1
    parts = key.split(".")
    for diffusers_name, original in _UNET_TOP.items():
        if key.startswith(diffusers_name + "."):
            return original + key[len(diffusers_name) :]
    if parts[0] == "down_blocks":
        level, kind = int(parts[1]), parts[2]
        if kind == "downsamplers":  # down_blocks.L.downsamplers.0.conv.* -> input_blocks.N.0.op.*
            return ".".join([f"input_blocks.{per_level * (level + 1)}.0.op", *parts[5:]])
        block = f"input_blocks.{per_level * level + int(parts[3]) + 1}"
        rest = parts[4:]
    elif parts[0] == "up_blocks":
        level, kind = int(parts[1]), parts[2]
        if kind == "upsamplers":  # after the resnet (and the attention, where the level has one)
            slot = 2 if level in up_attention_levels else 1
            return ".".join([f"output_blocks.{per_level * level + layers_per_block}.{slot}.conv", *parts[5:]])
        block = f"output_blocks.{per_level * level + int(parts[3])}"
        rest = parts[4:]
    elif parts[0] == "mid_block":
        kind, index = parts[1], int(parts[2])
        block = f"middle_block.{1 if kind == 'attentions' else 2 * index}"
        return ".".join(
            [block, *([_UNET_RESNET.get(parts[3], parts[3])] if kind == "resnets" else [parts[3]]), *parts[4:]]
        )
    else:
        raise KeyError(f"no original-layout name for UNet key {key!r}")
    if kind == "resnets":
        return ".".join([block, "0", _UNET_RESNET[rest[0]], *rest[1:]])
    return ".".join([block, "1", *rest])  # attentions: the transformer keeps its names


def _vae_key(key: str, levels: int) -> str:
    coder, rest = key.split(".", 1)
    parts = rest.split(".")
    if coder not in ("encoder", "decoder"):
        return key  # quant_conv, post_quant_conv
    if parts[0] == "conv_norm_out":
        return ".".join([coder, "norm_out", *parts[1:]])
    if parts[0] in ("down_blocks", "up_blocks"):
        level = (
            int(parts[1]) if coder == "encoder" else levels - 1 - int(parts[1])
        )  # the decoder counts up from the bottom
        name = "down" if coder == "encoder" else "up"
        if parts[2] in ("downsamplers", "upsamplers"):
            return ".".join([coder, f"{name}.{level}", "downsample" if coder == "encoder" else "upsample", *parts[4:]])
        layer = parts[4] if parts[4] != "conv_shortcut" else "nin_shortcut"
        return ".".join([coder, f"{name}.{level}.block.{parts[3]}", layer, *parts[5:]])
    if parts[0] == "mid_block" and parts[1] == "resnets":
        layer = parts[3] if parts[3] != "conv_shortcut" else "nin_shortcut"
        return ".".join([coder, f"mid.block_{int(parts[2]) + 1}", layer, *parts[4:]])
    if parts[0] == "mid_block" and parts[1] == "attentions":
        inner = ".".join(parts[3:-1])
        return ".".join([coder, "mid.attn_1", _VAE_ATTENTION[inner], parts[-1]])
    return key  # conv_in, conv_out


def original_layout_state_dict(unet, vae, text_encoder) -> dict[str, torch.Tensor]:
    """The SD v1.x single-file state dict of diffusers components (the inverse of diffusers' ``from_single_file``)."""
    layers = unet.config.layers_per_block
    up_attention = {i for i, kind in enumerate(unet.config.up_block_types) if kind.startswith("CrossAttn")}
    state = {}
    for key, value in unet.state_dict().items():
        state["model.diffusion_model." + _unet_key(key, layers, up_attention)] = value
    levels = len(vae.config.block_out_channels)
    for key, value in vae.state_dict().items():
        original = _vae_key(key, levels)
        if ".mid.attn_1." in original and original.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]  # LDM's attention projections are 1x1 convolutions
        state["first_stage_model." + original] = value
    for key, value in text_encoder.state_dict().items():
        # transformers 5 drops CLIPTextModel's text_model. level from its state dict; the file keeps it.
        state["cond_stage_model.transformer." + (key if key.startswith("text_model.") else "text_model." + key)] = value
    return {key: value.detach().contiguous().clone() for key, value in state.items()}


def write_single_file(pipeline_dir: str | Path, out_file: str | Path) -> Path:
    """Write a diffusers SD v1.x folder as one original-layout ``.safetensors`` checkpoint."""
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    pipeline = StableDiffusionPipeline.from_pretrained(
        str(pipeline_dir), safety_checker=None, requires_safety_checker=False, local_files_only=True
    )
    out_file = Path(out_file)
    save_file(original_layout_state_dict(pipeline.unet, pipeline.vae, pipeline.text_encoder), str(out_file))
    return out_file
