"""Local GPU jobs each get a device (or a slot of one) of their own (meddap.runtime.gpu_slots), on fake devices."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meddap.runtime import gpu_slots
from meddap.runtime.gpu_slots import CLASSIFIER, DIFFUSION, GpuSlotSettings, acquire

ROOT = Path(__file__).resolve().parents[1]
FAKE = GpuSlotSettings(devices=("0", "1"), per_gpu={CLASSIFIER: 2, DIFFUSION: 1})

# One job: take a slot, record what it got and when, hold it, record the end (then exit, releasing it).
WORKER = """
import json, logging, os, sys, time
from meddap.runtime.gpu_slots import GpuSlotSettings, acquire
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
kind, hold, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
lease = acquire(kind, GpuSlotSettings.from_env(os.environ), poll=0.02)
start = time.time()
record = {"kind": kind, "device": lease.device, "slots": list(lease.slots), "reason": lease.reason,
          "visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start, "pid": os.getpid()}
with open(out + ".acquired", "w") as f:
    json.dump(record, f)
time.sleep(hold)
record["end"] = time.time()
with open(out, "w") as f:
    json.dump(record, f)
"""


def job_env(tmp_path: Path, settings: GpuSlotSettings, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in gpu_slots.GIVEN_VARIABLES}
    env.update(
        PYTHONPATH=str(ROOT / "src"),
        **{gpu_slots.SETTINGS_VARIABLE: settings.to_env(), gpu_slots.LOCK_DIR_VARIABLE: str(tmp_path / "locks")},
    )
    env.update(extra)
    return env


def start_job(tmp_path: Path, env: dict, kind: str, hold: float, name: str) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / f"{name}.json"
    stderr = open(tmp_path / f"{name}.log", "w")
    process = subprocess.Popen([sys.executable, "-c", WORKER, kind, str(hold), str(out)], env=env, stderr=stderr)
    return process, out


def wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_concurrent_jobs_share_gpus_only_up_to_their_slots(tmp_path):
    """8 classifier and 4 diffusion jobs at once on two fake GPUs: at any moment a GPU holds at most
    two classifiers or one diffusion job, each job saw only its device, and both GPUs were used."""
    env = job_env(tmp_path, FAKE)
    jobs = [(CLASSIFIER, f"c{i}") for i in range(8)] + [(DIFFUSION, f"d{i}") for i in range(4)]
    started = [start_job(tmp_path, env, kind, 0.3, name) for kind, name in jobs]
    for process, _ in started:
        assert process.wait(timeout=60) == 0
    records = [json.loads(out.read_text()) for _, out in started]
    assert all(r["device"] in ("0", "1") and r["visible"] == r["device"] for r in records)
    units = {CLASSIFIER: 1, DIFFUSION: 2}  # of 2 per GPU
    peak = 0
    for r in records:  # at each job's start, what else runs on its device
        running = [o for o in records if o["device"] == r["device"] and o["start"] <= r["start"] < o["end"]]
        assert sum(units[o["kind"]] for o in running) <= 2, running
        if r["kind"] == DIFFUSION:
            assert [o["pid"] for o in running] == [r["pid"]], "a diffusion job shared its GPU"
        peak = max(peak, sum(1 for o in records if o["start"] <= r["start"] < o["end"]))
    assert {r["device"] for r in records} == {"0", "1"}
    assert peak >= 3, "the jobs did not run side by side"  # two GPUs, two classifiers each
    # Shared jobs on one device hold different slots.
    for r in records:
        for o in records:
            if o is not r and o["device"] == r["device"] and o["start"] <= r["start"] < o["end"]:
                assert not set(o["slots"]) & set(r["slots"])


def test_sharing_jobs_spread_over_idle_gpus_first(tmp_path):
    folder = {gpu_slots.LOCK_DIR_VARIABLE: str(tmp_path / "locks")}
    with acquire(CLASSIFIER, FAKE, dict(folder)) as first, acquire(CLASSIFIER, FAKE, dict(folder)) as second:
        assert {first.device, second.device} == {"0", "1"}


def test_a_killed_holder_frees_its_gpu_for_a_waiting_job(tmp_path):
    env = job_env(tmp_path, GpuSlotSettings(devices=("0",)))
    holder, holder_out = start_job(tmp_path, env, DIFFUSION, 600, "holder")
    try:
        wait_for(lambda: Path(f"{holder_out}.acquired").exists())
        waiter, waiter_out = start_job(tmp_path, env, DIFFUSION, 0, "waiter")
        wait_for(lambda: "waiting for a free diffusion slot" in (tmp_path / "waiter.log").read_text())
        time.sleep(0.3)
        assert not Path(f"{waiter_out}.acquired").exists(), "the waiter did not wait"
        holder.send_signal(signal.SIGKILL)
        assert waiter.wait(timeout=20) == 0
        assert json.loads(waiter_out.read_text())["device"] == "0"
        assert (tmp_path / "waiter.log").read_text().count("GPU: waiting") == 1  # logged once
    finally:
        holder.kill()
        holder.wait()


def test_a_waiting_whole_gpu_job_is_not_overtaken_by_sharing_jobs(tmp_path):
    """A diffusion job queued for a GPU holding one classifier: a new classifier does not take the free slot."""
    settings = GpuSlotSettings(devices=("0",))
    env = job_env(tmp_path, settings)
    folder = {gpu_slots.LOCK_DIR_VARIABLE: env[gpu_slots.LOCK_DIR_VARIABLE]}
    running = acquire(CLASSIFIER, settings, dict(folder))
    waiter, waiter_out = start_job(tmp_path, env, DIFFUSION, 0, "waiter")
    wait_for(lambda: "waiting" in (tmp_path / "waiter.log").read_text())
    picker = gpu_slots._Picker(CLASSIFIER, settings, ["0"], Path(folder[gpu_slots.LOCK_DIR_VARIABLE]))
    assert picker.try_all() is None, "a classifier overtook the waiting diffusion job"
    running.release()
    assert waiter.wait(timeout=20) == 0
    assert picker.try_all() is not None  # the diffusion job is done: the GPU is free again


@pytest.mark.parametrize(
    "given",
    [
        {"SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "3"},
        {"SLURM_JOB_GPUS": "2,3"},
    ],
)
def test_given_devices_are_kept_and_nothing_is_locked(tmp_path, given):
    folder = tmp_path / "locks"
    environ = {gpu_slots.LOCK_DIR_VARIABLE: str(folder), **given}
    lease = acquire(DIFFUSION, FAKE, environ, detect=lambda: pytest.fail("devices detected"))
    assert lease.device is None and not lease.locks and "given" in lease.reason
    assert environ == {gpu_slots.LOCK_DIR_VARIABLE: str(folder), **given}
    assert not folder.exists()


def test_an_exported_cuda_visible_devices_is_the_pool_outside_slurm(tmp_path):
    environ = {gpu_slots.LOCK_DIR_VARIABLE: str(tmp_path / "locks"), "CUDA_VISIBLE_DEVICES": "2,3"}
    first = acquire(DIFFUSION, GpuSlotSettings(), dict(environ), detect=lambda: pytest.fail("devices detected"))
    second_env = dict(environ)
    second = acquire(DIFFUSION, GpuSlotSettings(), second_env, detect=lambda: pytest.fail("devices detected"))
    assert {first.device, second.device} == {"2", "3"} and second_env["CUDA_VISIBLE_DEVICES"] == second.device
    empty = acquire(CLASSIFIER, GpuSlotSettings(), {**environ, "CUDA_VISIBLE_DEVICES": ""}, detect=lambda: ["0"])
    assert (empty.device, empty.reason) == (None, "no GPU")
    first.release(), second.release()


def test_without_a_gpu_nothing_happens(tmp_path):
    environ = {gpu_slots.LOCK_DIR_VARIABLE: str(tmp_path / "locks")}
    lease = acquire(CLASSIFIER, GpuSlotSettings(), environ, detect=lambda: [])
    assert (lease.device, lease.reason) == (None, "no GPU")
    cpu = acquire(CLASSIFIER, GpuSlotSettings(devices=("0",), enabled=False), environ)
    assert (cpu.device, cpu.reason) == (None, "device: cpu")
    assert "CUDA_VISIBLE_DEVICES" not in environ and not (tmp_path / "locks").exists()
    with pytest.raises(ValueError, match="unknown GPU job kind"):
        acquire("vae", GpuSlotSettings(), environ, detect=lambda: [])


def test_detect_devices_parses_and_needs_no_torch(monkeypatch):
    monkeypatch.setattr(gpu_slots.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    listing = "GPU 0: A (UUID: GPU-a)\nGPU 1: B (UUID: GPU-b)\n  MIG 1g.10gb Device 0: (UUID: MIG-c)\n"
    assert gpu_slots.detect_devices(lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=listing)) == ["0", "1"]

    def fails(*args, **kwargs):
        raise subprocess.CalledProcessError(9, "nvidia-smi")

    assert gpu_slots.detect_devices(fails) == []
    monkeypatch.setattr(gpu_slots.shutil, "which", lambda name: None)
    assert gpu_slots.detect_devices(lambda *a, **k: pytest.fail("ran nvidia-smi")) == []
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, meddap.runtime.gpu_slots, meddap.config.resolve; print('torch' in sys.modules)",
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "False"


def test_settings_from_config_reach_the_jobs_through_the_environment():
    config = {
        "device": "auto",
        "resources": {
            "gpu_devices": [0, "GPU-x"],
            "gpu_slots": {"classifier": 4, "diffusion": 2},
            "gpu_lock_dir": "/l",
        },
    }
    settings = GpuSlotSettings.from_config(config)
    assert settings.devices == ("0", "GPU-x") and settings.units == 4 and settings.enabled
    assert GpuSlotSettings.from_env({gpu_slots.SETTINGS_VARIABLE: settings.to_env()}) == settings
    assert GpuSlotSettings.from_env({}) == GpuSlotSettings()
    assert GpuSlotSettings.from_config({"device": "cpu", "resources": {}}).enabled is False
    assert settings.folder({gpu_slots.LOCK_DIR_VARIABLE: "/t"}) == Path("/t")
    assert settings.folder({}) == Path("/l")
    assert GpuSlotSettings().folder({}) == Path(f"/tmp/meddap-gpu-locks-{os.getuid()}")


def test_every_gpu_rule_names_its_slot_kind():
    """A rule asking Snakemake for a GPU also says which kind of slot its job takes (and no other rule does)."""
    kinds = {}
    for path in (ROOT / "workflow" / "rules").glob("*.smk"):
        for rule, body in re.findall(r"rule (\w+):(.*?)(?=\n\s*rule |\Z)", path.read_text(), flags=re.S):
            if "gpu=1" in body or "gpu_slot=" in body:
                kinds[rule] = re.search(r"gpu_slot=(\w+)", body).group(1) if "gpu_slot=" in body else None
    assert kinds == {
        "pretrain_base": "DIFFUSION",
        "train_lora": "DIFFUSION",
        "generate_shard": "DIFFUSION",
        "generate_guided_shard": "DIFFUSION",
        "realism": "DIFFUSION",
        "train_classifier": "CLASSIFIER",
        "train_judge": "CLASSIFIER",
        "filter_shards": "CLASSIFIER",
    }


def test_the_slurm_profile_sends_every_gpu_rule_to_a_gpu():
    """A rule that takes a GPU slot here gets a GPU on a cluster too: the shipped SLURM profile gives
    it `gpu: 1` on the GPU partition (a guided shard on a CPU node would run for hours)."""
    import yaml

    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    gpu_rules = set()
    for path in (ROOT / "workflow" / "rules").glob("*.smk"):
        for rule, body in re.findall(r"rule (\w+):(.*?)(?=\n\s*rule |\Z)", path.read_text(), flags=re.S):
            if "gpu_slot=" in body:
                gpu_rules.add(rule)
    for rule in sorted(gpu_rules):
        resources = profile["set-resources"].get(rule, {})
        assert resources.get("gpu") == 1 and resources.get("slurm_partition") == "GPU_PARTITION", rule
        assert profile["set-threads"].get(rule) == resources["cpus_per_task"], rule


def test_a_rule_scripts_start_takes_the_slot_its_resources_name(tmp_path):
    """The hook every rule script runs first: a GPU rule's job gets a device; another rule's job none."""
    code = """
import os, sys
from types import SimpleNamespace
from meddap.runtime.rulescript import start
kind = sys.argv[3] or None
resources = SimpleNamespace(gpu_slot=kind) if kind else SimpleNamespace()
job = SimpleNamespace(rule="r", threads=1, wildcards={}, log=[sys.argv[2]], resources=resources)
start(job)
print(os.environ.get("CUDA_VISIBLE_DEVICES"))
"""
    env = job_env(tmp_path, GpuSlotSettings(devices=("7",)))
    for kind, visible in ((DIFFUSION, "7"), ("", "None")):
        log = tmp_path / f"{kind or 'cpu'}.log"
        args = [sys.executable, "-c", code, "", str(log), kind]
        result = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
        assert result.stdout.strip() == visible
        assert ("GPU: device 7" in log.read_text()) == bool(kind)
