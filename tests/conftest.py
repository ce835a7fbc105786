"""Shared fixtures: the repository root, the shared BUSI subset, a no-network guard."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUSI = (REPO / ".." / "shared" / "data" / "busi").resolve()

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail any test that opens a network connection (AF_UNIX sockets stay allowed)."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"network access attempted: {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield


@pytest.fixture
def busi_root() -> Path:
    if not (BUSI / "benign").is_dir():
        pytest.skip("../shared/data/busi is not present beside the checkout")
    return BUSI


@pytest.fixture(scope="session")
def small_pipeline_dir(tmp_path_factory) -> Path:
    """A randomly initialised small SD pipeline folder (no training), saved with save_pretrained."""
    import torch
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    from meddap.diffusion import SD_SCHEDULE, SmallModelSpec, build_small_components, prompt_words

    torch.manual_seed(0)
    spec = SmallModelSpec(image_size=32)
    vae, text_encoder, tokenizer, unet = build_small_components(spec, prompt_words(["benign", "malignant", "normal"], ["none", "bright"]), seed=0)
    pipeline = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=PNDMScheduler(**SD_SCHEDULE, skip_prk_steps=True, steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    out = tmp_path_factory.mktemp("small_sd") / "pipeline"
    pipeline.save_pretrained(out, safe_serialization=True)
    return out
