"""Shared fixtures: the repository root, the shared BUSI subset, a no-network guard."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUSI = (REPO / ".." / "shared" / "data" / "busi").resolve()
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
TINY = REPO / "tests" / "configs" / "tiny.yaml"
DEFAULT = REPO / "config" / "config.yaml"


def snakemake_command(workdir: Path, *args: str, configs=(DEFAULT, TINY)) -> list[str]:
    return [
        SNAKEMAKE,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        *map(str, configs),
        *args,
    ]


def digest_tree(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, keyed by its relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def snakemake(
    workdir: Path, *args: str, configs=(DEFAULT, TINY), check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run the workflow in ``workdir`` (results land there) and return the finished process;
    ``env``: variables to set for it."""
    command = snakemake_command(workdir, *args, configs=configs)
    result = subprocess.run(command, capture_output=True, text=True, cwd=workdir, env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def planned_jobs(output: str) -> dict[str, int]:
    """The 'job count' table of a dry run (or of a run's plan): rule -> jobs."""
    table = output.split("Job stats:")[-1] if "Job stats:" in output else output
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


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

    from meddap.diffusion.denoising import SD_SCHEDULE
    from meddap.diffusion.small_model import SmallModelSpec, build_small_components
    from meddap.settings.prompts import prompt_words

    torch.manual_seed(0)
    spec = SmallModelSpec(image_size=32)
    vae, text_encoder, tokenizer, unet = build_small_components(
        spec, prompt_words(["benign", "malignant", "normal"], ["none", "bright"]), seed=0
    )
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler(**SD_SCHEDULE, skip_prk_steps=True, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    out = tmp_path_factory.mktemp("small_sd") / "pipeline"
    pipeline.save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One complete run of the tiny config, shared by the tests that only read its outputs.

    Under pytest-xdist (`make test` runs 2 workers) the workers share one run: the first to
    need it runs it under a file lock in the session's common temporary folder; the others wait
    and read the same folder. A marker written after the run tells a finished run from a
    half-done one (a worker killed mid-run leaves no marker, so the next one starts afresh).
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        workdir = tmp_path_factory.mktemp("tiny_run")
        snakemake(workdir, "--cores", "2")
        return workdir
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent  # common to every worker of this session
    workdir, complete = shared / "tiny_run", shared / "tiny_run.complete"
    with FileLock(str(shared / "tiny_run.lock")):
        if not complete.is_file():
            if workdir.exists():
                shutil.rmtree(workdir)
            workdir.mkdir()
            snakemake(workdir, "--cores", "2")
            complete.write_text(worker)
    return workdir


def pytest_collection_modifyitems(config, items):
    """Longest tests first (SLURM, then the end-to-end runs). `make test` hands whole files to its
    two xdist workers in this order (`--dist loadfile --no-loadscope-reorder`), so the SLURM file
    and the BUSI run start at once and the short files fill in around them."""

    def rank(item) -> int:
        if item.get_closest_marker("slurm"):
            return 0
        return 1 if item.get_closest_marker("slow") else 2

    items.sort(key=rank)  # stable: file order within each rank
