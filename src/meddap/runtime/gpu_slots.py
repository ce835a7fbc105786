"""One GPU, or one slot of a GPU, per local job: chosen before torch is imported.

Snakemake gives local jobs no GPU id (snakemake issue #281): with ``resources: {gpu: 4}`` it
starts four GPU jobs at once and each one's "cuda" is cuda:0. So each GPU rule names its job kind
(``resources: gpu_slot="classifier"`` or ``"diffusion"``) and its script's start calls
``acquire_for_job``, which takes a device of its own and sets ``CUDA_VISIBLE_DEVICES`` to it
(the job's "cuda" is then cuda:0 of that one device).

Locks are ``fcntl.flock`` locks on files in a per-user, machine-wide folder (two workflows on one
workstation share it), so a crashed or ``kill -9``'ed job frees its slot with its process. Per
device ``d``:

- ``gpu<d>.lock``: a job of a kind that takes the whole GPU (``per_gpu`` 1) holds it exclusively,
  a job that shares the GPU holds it shared;
- ``gpu<d>.slot<i>``: the GPU's share units (the least common multiple of the shared kinds'
  ``per_gpu``); a sharing job holds ``units / per_gpu`` of them exclusively;
- ``gpu<d>.turnstile``: a whole-GPU job that waits queues here, so sharing jobs stop starting on
  that device and it gets its turn (briefly held by every job while it picks the device).

A job that finds no free device waits (logging once) and polls. Where the devices are already
given (a SLURM job: ``SLURM_JOB_ID`` or ``SLURM_JOB_GPUS`` set) nothing is locked and the
environment is kept. Outside SLURM, a ``CUDA_VISIBLE_DEVICES`` the user exported names the pool the
jobs share (where ``resources.gpu_devices`` is null). Where there is no GPU (``nvidia-smi -L``
lists none and no devices are configured) or ``device: cpu``, nothing happens: the job runs on the CPU.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from meddap.runtime.params import StageSettings

CLASSIFIER = "classifier"  # train_classifier
DIFFUSION = "diffusion"  # pretrain_base, train_lora, generate_shard
KINDS = (CLASSIFIER, DIFFUSION)
SETTINGS_VARIABLE = "MEDDAP_GPU_SLOTS"  # the settings as JSON, set at parse time (common.smk) for the jobs
LOCK_DIR_VARIABLE = "MEDDAP_GPU_LOCK_DIR"  # overrides resources.gpu_lock_dir (tests)
# Set by SLURM: the devices are given, nothing is locked.
GIVEN_VARIABLES = ("SLURM_JOB_GPUS", "SLURM_JOB_ID")
POLL_SECONDS = 0.5

logger = logging.getLogger(__name__)


def default_lock_dir() -> str:
    """Machine-wide and per user: every workflow of this user on this machine shares it."""
    return f"/tmp/meddap-gpu-locks-{os.getuid()}"


@dataclass(frozen=True)
class GpuSlotSettings(StageSettings):
    """Which GPUs local jobs share and how (config: resources.gpu_devices, gpu_slots, gpu_lock_dir)."""

    devices: tuple[str, ...] | None = None  # CUDA_VISIBLE_DEVICES values; None: what `nvidia-smi -L` lists
    # Jobs of each kind that share one GPU (1: the job has the GPU to itself).
    per_gpu: dict = field(default_factory=lambda: {CLASSIFIER: 2, DIFFUSION: 1})
    lock_dir: str | None = None  # None: default_lock_dir()
    enabled: bool = True  # False with device: cpu (no job needs a GPU)

    @classmethod
    def from_config(cls, config: dict) -> GpuSlotSettings:
        resources = config.get("resources", {})
        devices = resources.get("gpu_devices")
        return cls(
            devices=None if devices is None else tuple(str(d) for d in devices),
            per_gpu={**cls().per_gpu, **dict(resources.get("gpu_slots") or {})},
            lock_dir=resources.get("gpu_lock_dir"),
            enabled=config.get("device", "auto") != "cpu",
        )

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str]) -> GpuSlotSettings:
        text = environ.get(SETTINGS_VARIABLE)
        return cls.from_params(json.loads(text)) if text else cls()

    def to_env(self) -> str:
        return json.dumps(self.params(), sort_keys=True)

    def jobs_per_gpu(self, kind: str) -> int:
        if kind not in self.per_gpu:
            raise ValueError(f"unknown GPU job kind {kind!r}; one of {sorted(self.per_gpu)}")
        return int(self.per_gpu[kind])

    @property
    def units(self) -> int:
        """Share units of one GPU: every sharing kind takes a whole number of them."""
        return math.lcm(*(int(n) for n in self.per_gpu.values() if int(n) > 1))

    def folder(self, environ: MutableMapping[str, str]) -> Path:
        return Path(environ.get(LOCK_DIR_VARIABLE) or self.lock_dir or default_lock_dir())


def detect_devices(run: Callable = subprocess.run) -> list[str]:
    """The GPUs' indices as `nvidia-smi -L` lists them, without importing torch ([] without a driver)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return re.findall(r"^GPU (\d+):", listing, flags=re.MULTILINE)


def given_devices(environ: MutableMapping[str, str]) -> str | None:
    """What says the devices are already chosen (a SLURM job), or None."""
    for name in GIVEN_VARIABLES:
        if name in environ:
            return f"{name}={environ[name]}"
    return None


def pool(settings: GpuSlotSettings, environ: MutableMapping[str, str], detect: Callable[[], list[str]]) -> list[str]:
    """The devices jobs share: the configured list, else the user's CUDA_VISIBLE_DEVICES (e.g.
    ``CUDA_VISIBLE_DEVICES=2,3 snakemake ...`` shares GPUs 2 and 3), else every GPU the driver lists."""
    if settings.devices is not None:
        return list(settings.devices)
    if "CUDA_VISIBLE_DEVICES" in environ:
        return [d.strip() for d in environ["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
    return detect()


def _file_name(device: str) -> str:
    return "gpu" + re.sub(r"[^A-Za-z0-9._-]", "_", device)


class _Lock:
    """One open lock file; released by close (or by the process's end, however it ends)."""

    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def take(self, mode: int) -> bool:
        try:
            fcntl.flock(self.fd, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@dataclass
class Lease:
    """What a job got: a device and slots (held until release or exit), or why it needs none."""

    kind: str | None
    device: str | None = None
    slots: tuple[int, ...] = ()
    reason: str = ""  # why nothing is locked (given devices, no GPU, device: cpu)
    locks: list = field(default_factory=list, repr=False)

    def release(self) -> None:
        for lock in self.locks:
            lock.close()
        self.locks.clear()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class _Picker:
    """Tries the devices without blocking; keeps a whole-GPU job's place in one device's queue."""

    def __init__(self, kind: str, settings: GpuSlotSettings, devices: list[str], folder: Path):
        self.kind, self.devices, self.folder = kind, devices, folder
        self.whole = settings.jobs_per_gpu(kind) == 1
        self.units = settings.units
        self.need = 0 if self.whole else self.units // settings.jobs_per_gpu(kind)
        self.queued: tuple[str, _Lock] | None = None  # (device, its turnstile) while a whole job waits

    def path(self, device: str, suffix: str) -> Path:
        return self.folder / f"{_file_name(device)}.{suffix}"

    def try_all(self) -> Lease | None:
        # Idle devices first (sharing jobs spread over the GPUs), then any with a free slot.
        for idle_only in (True, False) if not self.whole else (False,):
            for device in self.devices:
                lease = self.try_device(device, idle_only)
                if lease:
                    if self.queued:
                        self.queued[1].close()
                        self.queued = None
                    return lease
        return None

    def try_device(self, device: str, idle_only: bool) -> Lease | None:
        mine = self.queued is not None and self.queued[0] == device
        turnstile = self.queued[1] if mine else _Lock(self.path(device, "turnstile"))
        if not mine and not turnstile.take(fcntl.LOCK_EX):
            turnstile.close()  # a whole-GPU job waits for this device
            return None
        lease = self.try_locks(device, idle_only)
        if lease is None and self.whole and self.queued is None:
            self.queued = (device, turnstile)  # wait here for the device's current jobs to end
        elif not mine:
            turnstile.close()
        return lease

    def try_locks(self, device: str, idle_only: bool) -> Lease | None:
        main = _Lock(self.path(device, "lock"))
        if self.whole or idle_only:
            if not main.take(fcntl.LOCK_EX):
                main.close()
                return None
            if self.whole:
                return Lease(self.kind, device, tuple(range(self.units)), locks=[main])
        # Shared from here (an idle device's exclusive lock turns shared; under the turnstile no
        # whole-GPU job can take it in between).
        if not main.take(fcntl.LOCK_SH):
            main.close()
            return None
        held: list[tuple[int, _Lock]] = []
        for index in range(self.units):
            slot = _Lock(self.path(device, f"slot{index}"))
            if slot.take(fcntl.LOCK_EX):
                held.append((index, slot))
                if len(held) == self.need:
                    return Lease(self.kind, device, tuple(i for i, _ in held), locks=[main] + [s for _, s in held])
            else:
                slot.close()
        for _, slot in held:
            slot.close()
        main.close()
        return None

    def close(self) -> None:
        if self.queued:
            self.queued[1].close()
            self.queued = None


def takes_device(
    kind: str | None, environ: MutableMapping[str, str] = os.environ, detect: Callable[[], list[str]] = detect_devices
) -> bool:
    """Whether a job of ``kind`` would run on a GPU here (``acquire``'s decision; nothing is locked)."""
    if not kind:
        return False
    settings = GpuSlotSettings.from_env(environ)
    if not settings.enabled:
        return False
    return bool(given_devices(environ)) or bool(pool(settings, environ, detect))


def acquire(
    kind: str,
    settings: GpuSlotSettings,
    environ: MutableMapping[str, str] = os.environ,
    poll: float = POLL_SECONDS,
    detect: Callable[[], list[str]] = detect_devices,
    log: logging.Logger = logger,
) -> Lease:
    """A device (and slots) for a job of ``kind``, waiting until one is free; sets CUDA_VISIBLE_DEVICES."""
    settings.jobs_per_gpu(kind)  # an unknown kind is an error even where nothing is locked
    if not settings.enabled:
        return Lease(kind, reason="device: cpu")
    given = given_devices(environ)
    if given:
        log.info("GPU: devices given by the environment (%s); no slot locked", given)
        return Lease(kind, reason=f"given: {given}")
    devices = pool(settings, environ, detect)
    if not devices:
        return Lease(kind, reason="no GPU")
    folder = settings.folder(environ)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    picker = _Picker(kind, settings, devices, folder)
    waited = None
    try:
        while (lease := picker.try_all()) is None:
            if waited is None:
                waited = time.monotonic()
                log.info(
                    "GPU: waiting for a free %s slot on devices %s (%d %s job(s) per GPU; locks in %s)",
                    kind,
                    devices,
                    settings.jobs_per_gpu(kind),
                    kind,
                    folder,
                )
            time.sleep(poll)
    finally:
        picker.close()
    environ["CUDA_VISIBLE_DEVICES"] = lease.device
    log.info(
        "GPU: device %s, slot(s) %s of %d (%s: %d job(s) per GPU)%s",
        lease.device,
        list(lease.slots),
        settings.units,
        kind,
        settings.jobs_per_gpu(kind),
        f" after {time.monotonic() - waited:.1f} s waiting" if waited is not None else "",
    )
    return lease


_LEASE: Lease | None = None  # the running job's lease, held for the process's lifetime


def acquire_for_job(kind: str | None, log: logging.Logger = logger) -> Lease | None:
    """A rule script's start: a GPU rule's job (``kind`` from its ``gpu_slot`` resource) takes its
    device before torch loads; other rules (``kind`` None) lock nothing."""
    global _LEASE
    if not kind:
        return None
    _LEASE = acquire(kind, GpuSlotSettings.from_env(os.environ), log=log)
    return _LEASE
