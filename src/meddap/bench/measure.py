"""How the benchmark measures: wall and CPU clocks, peak memory, UNet samples and FLOPs, and the
interleaved (ABBA) rounds its runners are timed in."""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import threading
import time
from pathlib import Path

import torch


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def release_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
    else:
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so RSS starts low


def _proc_status_kib(key: str) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return _proc_status_kib("VmHWM") is not None


class PeakMemory:
    """Peak rise of memory over the start of a phase, in MiB.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the kernel's peak RSS mark (``VmHWM``, reset
    through ``/proc/self/clear_refs``: no thread, no tracemalloc); where that is unavailable,
    RSS sampled by a thread every ``interval`` seconds.
    """

    def __init__(self, device: torch.device, interval: float = 0.005):
        self.device, self.interval = device, interval
        self.peak_mib = float("nan")
        self._thread = None

    def __enter__(self) -> PeakMemory:
        release_memory(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        self._start = self._peak = _rss_bytes()
        if not _reset_peak_rss():
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, _rss_bytes())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mib = (torch.cuda.max_memory_allocated(self.device) - self._start) / 2**20
            return
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, _rss_bytes())
        else:
            peak = max(_proc_status_kib("VmHWM") * 1024, _rss_bytes())
        self.peak_mib = (peak - self._start) / 2**20


def clock() -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds): differences of two readings time a region."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float], end: tuple[float, float] | None = None) -> tuple[float, float]:
    end = end or clock()
    return end[0] - start[0], end[1] - start[1]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class SampleCounter:
    """Counts the samples the hooked UNets evaluate (batch rows per forward) while ``active``."""

    def __init__(self, *modules):
        self.samples, self.active = 0, False
        self._handles = [m.register_forward_pre_hook(self._hook, with_kwargs=True) for m in modules if m is not None]

    def _hook(self, module, args, kwargs):
        if self.active:
            sample = args[0] if args else kwargs["sample"]
            self.samples += int(sample.shape[0])

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def matmul_tflops(device: torch.device, size: int = 8192, repeats: int = 20) -> float | None:
    """Measured bf16 matmul rate (TFLOP/s) of a CUDA device; None elsewhere."""
    if device.type != "cuda":
        return None
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    torch.cuda.synchronize(device)
    seconds = start.elapsed_time(end) / 1000
    del a, b
    return 2 * size**3 * repeats / seconds / 1e12


def unet_flops(unet, latent_size: int, text_embeds: torch.Tensor, backward: bool = False) -> int:
    """FLOPs of one UNet forward (or forward+backward) on one sample."""
    from torch.utils.flop_counter import FlopCounterMode

    parameter = next(unet.parameters())
    sample = torch.randn(
        1, unet.config.in_channels, latent_size, latent_size, device=parameter.device, dtype=unet.dtype
    )
    timestep = torch.tensor([500], device=parameter.device)
    embeds = text_embeds[:1].to(parameter.device, unet.dtype)
    amp = parameter.device.type == "cuda" and unet.dtype in (torch.float16, torch.bfloat16)
    with FlopCounterMode(display=False) as counter:
        if backward:
            with torch.autocast(parameter.device.type, dtype=unet.dtype, enabled=amp):
                out = unet(sample, timestep, embeds).sample
            out.float().square().mean().backward()
        else:
            with torch.no_grad():
                unet(sample, timestep, embeds)
    if backward:
        unet.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


# ---------------------------------------------------------------- runners, timed in interleaved rounds
# Each measured method is a runner (meddap.bench.generation, meddap.bench.lora): constructing it
# is the one-time setup (model load, LoRA, ...), ``warm_up(chunk)`` runs untimed work at the
# timed shapes, ``timed(chunk)`` returns the (wall, process CPU) seconds the chunk took.
# ``interleave`` alternates the runners round by round so that both see the same machine (on a
# shared machine the load changes from minute to minute).


def interleave(makers: dict, chunks: list | dict, device: torch.device) -> tuple[dict, dict]:
    """Run every runner on every chunk, alternating the order round by round (ABBA...).

    ``chunks`` is one list of per-round work for all runners, or {name: list} with the same
    number of rounds for each (e.g. fewer images for a slow baseline).

    The first round of each runner (setup + warm-up + chunk) is measured for peak memory.
    Returns (runners, {name: {"seconds", "cpu_s", "setup_s", "warmup_s" (the untimed warm-up,
    which holds torch.compile), "peak_mem_mib"}}).
    """
    per_runner = chunks if isinstance(chunks, dict) else {name: chunks for name in makers}
    rounds = {len(value) for value in per_runner.values()}
    if len(rounds) != 1:
        raise ValueError(f"every runner needs the same number of rounds, got {rounds}")
    runners, results = {}, {}
    for round_index in range(rounds.pop()):
        names = list(makers) if round_index % 2 == 0 else list(makers)[::-1]
        for name in names:
            chunk = per_runner[name][round_index]
            if name in runners:
                seconds, cpu = runners[name].timed(chunk)
                results[name]["seconds"] += seconds
                results[name]["cpu_s"] += cpu
                continue
            with PeakMemory(device) as memory:
                start = time.perf_counter()
                runner = makers[name]()
                setup = time.perf_counter() - start
                runner.warm_up(chunk)
                sync(device)
                warm_up = time.perf_counter() - start - setup
                seconds, cpu = runner.timed(chunk)
            runners[name] = runner
            results[name] = {
                "seconds": seconds,
                "cpu_s": cpu,
                "setup_s": setup,
                "warmup_s": warm_up,
                "peak_mem_mib": memory.peak_mib,
            }
    for name, runner in runners.items():
        results[name]["setup_s"] = getattr(runner, "setup_s", results[name]["setup_s"])
    return runners, results


class StampedCall:
    """Base of a runner that times one whole library call per round (``train_lora``,
    ``train_classifier``) from clock stamps its callback takes: stamps[0] when the call's loop
    starts, stamps[k] after its k-th step or epoch. The first ``warmup`` of them are untimed; what
    came before stamps[0] (loading, caching) is the call's setup."""

    def __init__(self):
        self.setups: list[float] = []

    def warm_up(self, work) -> None:
        """Each call runs its own warm-up first (see ``stamped``)."""

    def stamped(self, stamps: list, warmup: int, timed: int, start: float, what: str) -> tuple[float, float]:
        if len(stamps) != warmup + timed + 1:
            raise RuntimeError(f"timed {len(stamps) - 1} {what}, expected {warmup + timed}")
        self.setups.append(stamps[0][0] - start)
        return since(stamps[warmup], stamps[-1])

    @property
    def setup_s(self) -> float:
        return sum(self.setups) / len(self.setups)

    def close(self) -> None:
        pass


def chunks_of(items: list, rounds: int) -> list[list]:
    sizes = split(len(items), rounds)
    return [items[sum(sizes[:i]) : sum(sizes[: i + 1])] for i in range(len(sizes))]


def split(total: int, parts: int) -> list[int]:
    """``total`` as ``parts`` near-equal positive sizes."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if index < total % parts else 0) for index in range(parts)]
