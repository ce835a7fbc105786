"""Speed benchmark: meddap's batched generation and cached-latent LoRA training against the
original MEDDAP scripts' way, in one process, on the same weights and the same machine.

    python -m meddap.bench                       # embedded small SD (random weights), config sizes
    python -m meddap.bench --pipeline DIR        # any local diffusers SD v1.x folder

Generation
  baseline  one ``StableDiffusionPipeline.__call__`` per image (prompt re-encoded every call),
            LoRA loaded with ``pipe.load_lora_weights`` and left unfused, PNDM scheduler.
  meddap    ``meddap.generate.generate_images`` (batched, prompt encoded once, one generator per
            image) on a pipeline prepared as ``generate_shard`` does (``apply_lora`` fuses the LoRA,
            the configured scheduler, channels_last on CUDA).
LoRA training
  baseline  the diffusers text-to-image LoRA example: every step VAE-encodes the image and
            text-encodes the prompt, batch 1, peft LoRA on the UNet attention, AdamW, MSE on the noise.
  meddap    ``meddap.lora.train_lora`` itself (latents of both flips and the text embedding
            cached once, configurable batch).

Both sides run the same number of steps, guidance, resolution and LoRA; only the scheduler
family differs for generation (PNDM vs the configured one), as the table says. The timed work is
split into ``--rounds`` rounds that alternate baseline and meddap (ABBA), so that both see the
same machine load. Rates exclude a warm-up (a short generation / the first training steps) and
one-time setup (model load, LoRA, caching: the ``setup_s`` column; the warm-up, which holds a
torch.compile, is ``warmup_s``). Peak memory is the rise over
the start of a method's first round (which loads its own copy of the model): on CUDA of
``torch.cuda.max_memory_allocated``, on CPU of the peak resident set size (VmHWM). On
CUDA the table adds the achieved UNet TFLOP/s (``FlopCounterMode`` on one UNet forward, or
forward+backward with the LoRA, times the UNet samples evaluated) and its share (mfu) of a
measured bf16 matmul rate; on CPU it adds ``cpu_s``, the CPU seconds the process used (not
inflated by time-slicing with other processes). CPU runs use the config's
``resources.threads_per_job`` torch threads unless ``--threads`` says otherwise.
Results go to ``<out>/generation.csv``, ``<out>/lora_training.csv`` and ``<out>/bench.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import logging
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never touch the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from meddap.atomic import write_csv, write_json  # noqa: E402

BENCH_CLASS = "benign"
REPO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "config.yaml"


# ---------------------------------------------------------------- config defaults
def load_config(path: str | None) -> dict:
    """The workflow config (for default sizes); {} when there is none."""
    import yaml

    candidates = [Path(path)] if path else [Path("config/config.yaml"), REPO_CONFIG]
    for candidate in candidates:
        if candidate.is_file():
            return yaml.safe_load(candidate.read_text()) or {}
    if path:
        raise FileNotFoundError(f"--config {path} does not exist")
    return {}


def _section(config: dict, *keys: str) -> dict:
    for key in keys:
        config = (config or {}).get(key) or {}
    return config


# ---------------------------------------------------------------- measuring helpers
def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _release_memory(device: torch.device) -> None:
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

    def __enter__(self) -> "PeakMemory":
        _release_memory(self.device)
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


def _clock() -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds): differences of two readings time a region."""
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float], end: tuple[float, float] | None = None) -> tuple[float, float]:
    end = end or _clock()
    return end[0] - start[0], end[1] - start[1]


def _sync(device: torch.device) -> None:
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
    sample = torch.randn(1, unet.config.in_channels, latent_size, latent_size, device=parameter.device, dtype=unet.dtype)
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


# ---------------------------------------------------------------- inputs: model, images, LoRA
def build_embedded_pipeline(out_dir: Path, config: dict, seed: int) -> Path:
    """The embedded small SD of the config's size, random weights, saved with save_pretrained."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    from meddap.denoising import SD_SCHEDULE
    from meddap.prompts import prompt_words
    from meddap.small_model import SmallModelSpec, build_small_components

    pretrain = _section(config, "base_model", "pretrain")
    spec = SmallModelSpec.from_config({**(pretrain.get("small") or {}), "image_size": int(pretrain.get("image_size", 64))})
    classes = list(_section(config, "dataset").get("classes") or ["benign", "malignant", "normal"])
    adjectives = list(_section(config, "generation").get("adjectives") or ["none"])
    vae, text_encoder, tokenizer, unet = build_small_components(spec, prompt_words(classes, adjectives), seed)
    pipeline = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=PNDMScheduler(**SD_SCHEDULE, skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipeline.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def make_training_images(out_dir: Path, n: int, seed: int, image_size: int) -> list[str]:
    """``n`` simulated breast-ultrasound images of one class (meddap.phantom)."""
    from meddap.phantom import device_from_config, simulate_device_dataset

    records = simulate_device_dataset(out_dir, device_from_config("linear-L12", None), {BENCH_CLASS: n}, seed, image_size, progress=False)
    return [record["path"] for record in records]


def untrained_lora(pipeline_dir: Path, out_dir: Path, rank: int, alpha: float, targets: list[str]) -> Path:
    """A freshly initialised LoRA (for --skip-training): speed does not depend on its values."""
    from diffusers import UNet2DConditionModel

    from meddap.lora import add_lora, save_lora

    unet = UNet2DConditionModel.from_pretrained(pipeline_dir, subfolder="unet")
    add_lora(unet, rank, alpha, targets)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_lora(unet, out_dir, rank, alpha)
    return out_dir


# ---------------------------------------------------------------- the four measured methods
# Each method is a runner: constructing it is the one-time setup (model load, LoRA, ...),
# ``warm_up(chunk)`` runs untimed work at the timed shapes, ``timed(chunk)`` returns the (wall,
# process CPU) seconds the chunk took. ``interleave`` alternates the runners round by round so that both see the same
# machine (on a shared machine the load changes from minute to minute).
class BaselineGeneration:
    """The original scripts: one pipeline call per image, LoRA unfused, PNDM, prompt per call."""

    scheduler, batch_size = "pndm", 1
    how = "pipe() per image, unfused LoRA (load_lora_weights), prompt re-encoded per call"

    def __init__(self, args, pipeline_dir, lora_dir, prompt, device, dtype):
        from diffusers import PNDMScheduler

        from meddap.base_models import load_pipeline

        self.args, self.prompt, self.device = args, prompt, device
        self.pipe = load_pipeline(pipeline_dir, device, dtype)
        self.pipe.scheduler = PNDMScheduler.from_config(self.pipe.scheduler.config)
        self.pipe.load_lora_weights(str(lora_dir))  # not fused: the peft layers run at every step
        if not any("lora_A" in name for name, _ in self.pipe.unet.named_modules()):
            raise RuntimeError(f"the LoRA {lora_dir} did not load into the baseline UNet")
        self.counter = SampleCounter(self.pipe.unet)

    def _one(self, seed: int, steps: int):
        generator = torch.Generator("cpu").manual_seed(seed)
        return self.pipe(self.prompt, height=self.args.resolution, width=self.args.resolution, num_inference_steps=steps,
                         guidance_scale=self.args.guidance, generator=generator).images[0]

    def warm_up(self, seeds: list[int]) -> None:
        self._one(seeds[0], self.args.warmup_steps)

    def timed(self, seeds: list[int]) -> tuple[float, float]:
        from tqdm import tqdm

        _sync(self.device)
        self.counter.active, start = True, _clock()
        for seed in tqdm(seeds, desc="baseline generation", mininterval=5):
            self._one(seed, self.args.steps)
        _sync(self.device)
        self.counter.active = False
        return _since(start)

    def close(self) -> None:
        self.counter.close()
        del self.pipe


class MeddapGeneration:
    """meddap.generate.generate_images on a pipeline set up as generate_shard sets it up."""

    def __init__(self, args, pipeline_dir, lora_dir, prompt, device, dtype, batch_size: int):
        from meddap.base_models import load_pipeline
        from meddap.generate import prepare_for_generation, set_scheduler
        from meddap.lora import apply_lora

        self.args, self.prompt, self.device, self.batch_size = args, prompt, device, batch_size
        self.scheduler = args.scheduler
        self.how = (f"generate_images batch {batch_size}, fused LoRA (apply_lora), prompt encoded once, "
                    f"guidance_reference={args.guidance_reference}")
        # The set-up of meddap.generate.generate_shard (kept in step with it).
        self.pipeline = load_pipeline(pipeline_dir, device, dtype)
        self.reference_unet = copy.deepcopy(self.pipeline.unet) if args.guidance_reference == "base" else None
        apply_lora(self.pipeline, lora_dir, args.lora_scale)
        set_scheduler(self.pipeline, args.scheduler)
        self.compiled = prepare_for_generation(self.pipeline, self.reference_unet, args.compile)
        if self.compiled:
            self.how += ", torch.compile"
        # Hooks on a compiled module would be traced into its graph: count a compiled UNet's
        # samples from the loop's shape instead (one or two UNet rows per image and step).
        self.counter = SampleCounter() if self.compiled else SampleCounter(self.pipeline.unet, self.reference_unet)

    def _generate(self, seeds: list[int], steps: int):
        from meddap.generate import generate_images

        return generate_images(self.pipeline, self.prompt, seeds, self.args.resolution, steps, self.args.guidance,
                               self.batch_size, self.args.negative_prompt, self.reference_unet)

    def warm_up(self, seeds: list[int]) -> None:
        # At the timed batch shapes, so that a compiled UNet compiles here and not in the timed work.
        shapes = {len(seeds[i : i + self.batch_size]) for i in range(0, len(seeds), self.batch_size)}
        for size in sorted(shapes, reverse=True):
            self._generate(seeds[:size], self.args.warmup_steps)

    def timed(self, seeds: list[int]) -> tuple[float, float]:
        _sync(self.device)
        self.counter.active, start = True, _clock()
        self._generate(seeds, self.args.steps)
        _sync(self.device)
        self.counter.active = False
        if self.compiled:
            self.counter.samples += len(seeds) * self.args.steps * (2 if self.args.guidance != 1.0 else 1)
        return _since(start)

    def close(self) -> None:
        self.counter.close()
        del self.pipeline, self.reference_unet


class BaselineTraining:
    """The diffusers text-to-image LoRA example: encode image and prompt at every step, batch 1."""

    batch_size = 1
    how = "diffusers LoRA example: VAE-encode image + text-encode prompt every step"

    def __init__(self, args, pipeline_dir, image_paths, prompt, device, dtype, out_dir):
        from diffusers import DDPMScheduler
        from diffusers.training_utils import cast_training_params
        from peft import LoraConfig
        from PIL import Image
        from torchvision import transforms

        from meddap.base_models import load_pipeline

        self.args, self.prompt, self.device, self.dtype, self.out_dir = args, prompt, device, dtype, out_dir
        self.pipe = load_pipeline(pipeline_dir, device, dtype)
        unet = self.pipe.unet
        self.noise_scheduler = DDPMScheduler.from_config(self.pipe.scheduler.config)
        unet.requires_grad_(False)
        self.pipe.vae.requires_grad_(False)
        self.pipe.text_encoder.requires_grad_(False)
        torch.manual_seed(args.seed)
        unet.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.alpha, init_lora_weights="gaussian", target_modules=args.target_modules))
        cast_training_params(unet, dtype=torch.float32)
        self.parameters = [p for p in unet.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.parameters, lr=args.lr, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
        self.preprocess = transforms.Compose([
            transforms.Resize(args.resolution, interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.CenterCrop(args.resolution),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize([0.5], [0.5]),
        ])
        self.dataset = [Image.open(path).convert("RGB") for path in image_paths]  # decoded once (kind to the baseline)
        self.generator = torch.Generator().manual_seed(args.seed)
        self.amp = device.type == "cuda" and dtype in (torch.float16, torch.bfloat16)
        unet.train()

    def _steps(self, n: int, desc: str) -> None:
        from tqdm import tqdm

        pipe, device = self.pipe, self.device
        unet, vae, text_encoder, tokenizer = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
        for _ in tqdm(range(n), desc=desc, mininterval=5):
            index = int(torch.randint(0, len(self.dataset), (1,), generator=self.generator))
            pixel_values = self.preprocess(self.dataset[index])[None].to(device, self.dtype)
            input_ids = tokenizer([self.prompt], max_length=tokenizer.model_max_length, padding="max_length",
                                  truncation=True, return_tensors="pt").input_ids
            latents = vae.encode(pixel_values).latent_dist.sample() * vae.config.scaling_factor
            noise = torch.randn_like(latents)
            timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (latents.shape[0],), device=device).long()
            noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
            encoder_hidden_states = text_encoder(input_ids.to(device), return_dict=False)[0]
            with torch.autocast(device.type, dtype=self.dtype, enabled=self.amp):
                prediction = unet(noisy, timesteps, encoder_hidden_states, return_dict=False)[0]
            loss = torch.nn.functional.mse_loss(prediction.float(), noise.float(), reduction="mean")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.parameters, 1.0)
            self.optimizer.step()
            self.optimizer.zero_grad()
            loss.item()  # the example logs the loss every step (a device sync)

    def warm_up(self, steps: int) -> None:
        if self.args.lora_warmup:
            self._steps(self.args.lora_warmup, "baseline LoRA warm-up")

    def timed(self, steps: int) -> tuple[float, float]:
        _sync(self.device)
        start = _clock()
        self._steps(steps, "baseline LoRA")
        return _since(start)

    def train_flops(self) -> int:
        """FLOPs of one forward+backward of the LoRA UNet on one sample."""
        embeds = self.pipe.text_encoder(self.pipe.tokenizer([self.prompt], padding="max_length", return_tensors="pt").input_ids.to(self.device))[0]
        return unet_flops(self.pipe.unet, self.args.resolution // self.pipe.vae_scale_factor, embeds, backward=True)

    def close(self) -> None:
        from diffusers import StableDiffusionPipeline
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        state = convert_state_dict_to_diffusers(get_peft_model_state_dict(self.pipe.unet))
        StableDiffusionPipeline.save_lora_weights(self.out_dir, unet_lora_layers=state, safe_serialization=True)
        del self.pipe, self.optimizer, self.parameters


class MeddapTraining:
    """meddap.lora.train_lora itself (one call per round: load, cache latents + text, warm-up, steps)."""

    def __init__(self, args, pipeline_dir, image_paths, prompt, device, out_dir):
        self.args, self.pipeline_dir, self.image_paths, self.prompt = args, pipeline_dir, image_paths, prompt
        self.device, self.out_dir = device, out_dir
        self.batch_size = args.lora_batch_size
        self.how = f"train_lora: latents (both flips) + text embedding cached once, batch {self.batch_size}"
        self.setups: list[float] = []

    def warm_up(self, steps: int) -> None:
        """Each train_lora call runs ``--lora-warmup`` untimed steps first (see ``timed``)."""

    def timed(self, steps: int) -> tuple[float, float]:
        from meddap.lora import train_lora

        # stamps[0]: the start of train_lora's loop; stamps[k]: the end of step k (after its loss.item()).
        warmup, stamps = self.args.lora_warmup, []
        start = time.perf_counter()
        train_lora(
            str(self.pipeline_dir), self.image_paths, self.prompt, self.out_dir, rank=self.args.rank,
            alpha=self.args.alpha, target_modules=self.args.target_modules, steps=warmup + steps,
            batch_size=self.batch_size, lr=self.args.lr, resolution=self.args.resolution, flip=True,
            seed=self.args.seed, device=str(self.device), precision=self.args.dtype, checkpoint_every=0,
            on_step=lambda step, loss: stamps.append(_clock()),
        )
        if len(stamps) != warmup + steps + 1:
            raise RuntimeError(f"timed {len(stamps) - 1} train_lora steps, expected {warmup + steps}")
        self.setups.append(stamps[0][0] - start)
        return _since(stamps[warmup], stamps[-1])

    @property
    def setup_s(self) -> float:
        return sum(self.setups) / len(self.setups)

    def close(self) -> None:
        pass


def interleave(makers: dict, chunks: list | dict, device: torch.device) -> tuple[dict, dict]:
    """Run every runner on every chunk, alternating the order round by round (ABBA...).

    ``chunks`` is one list of per-round work for all runners, or {name: list} with the same
    number of rounds for each (e.g. fewer images for a slow baseline).

    The first round of each runner (setup + warm-up + chunk) is measured for peak memory.
    Returns (runners, {name: {"seconds", "cpu_s", "setup_s", "warmup_s" (the untimed warm-up, which holds torch.compile), "peak_mem_mib"}}).
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
                _sync(device)
                warm_up = time.perf_counter() - start - setup
                seconds, cpu = runner.timed(chunk)
            runners[name] = runner
            results[name] = {"seconds": seconds, "cpu_s": cpu, "setup_s": setup, "warmup_s": warm_up, "peak_mem_mib": memory.peak_mib}
    for name, runner in runners.items():
        results[name]["setup_s"] = getattr(runner, "setup_s", results[name]["setup_s"])
    return runners, results


def _rounds(items: list, rounds: int) -> list[list]:
    sizes = split(len(items), rounds)
    return [items[sum(sizes[:i]) : sum(sizes[: i + 1])] for i in range(len(sizes))]


def split(total: int, parts: int) -> list[int]:
    """``total`` as ``parts`` near-equal positive sizes."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if index < total % parts else 0) for index in range(parts)]


# ---------------------------------------------------------------- tables
def _with_ratio(rows: list[dict], rate: str, items: str) -> pd.DataFrame:
    """Add ``ratio_vs_baseline`` (rate / the baseline's) and the same on CPU time (``cpu_ratio_vs_baseline``)."""
    frame = pd.DataFrame(rows)
    baseline = frame["method"] == "baseline"
    frame["ratio_vs_baseline"] = frame[rate] / frame.loc[baseline, rate].iloc[0]
    per_cpu = f"{items}_per_cpu_s"
    frame[per_cpu] = frame[items] / frame["cpu_s"]
    frame["cpu_ratio_vs_baseline"] = frame[per_cpu] / frame.loc[baseline, per_cpu].iloc[0]
    return frame


def _format_table(frame: pd.DataFrame, columns: list[str]) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            if value != value:
                return ""
            return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"
        return "" if value is None else str(value)

    rows = [[cell(v) for v in row] for row in frame[columns].itertuples(index=False)]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    line = lambda values: "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"  # noqa: E731
    return "\n".join([line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


GENERATION_COLUMNS = ["method", "scheduler", "steps", "guidance", "resolution", "batch_size", "unet_samples_per_image", "images",
                      "seconds", "images_per_s", "ratio_vs_baseline", "cpu_s", "cpu_ratio_vs_baseline", "setup_s", "warmup_s",
                      "peak_mem_mib", "unet_tflops", "mfu"]
TRAINING_COLUMNS = ["method", "batch_size", "steps", "samples", "seconds", "samples_per_s", "ratio_vs_baseline", "cpu_s",
                    "cpu_ratio_vs_baseline", "setup_s", "peak_mem_mib", "unet_tflops", "mfu"]
CPU_ONLY_COLUMNS = ("cpu_s", "cpu_ratio_vs_baseline")
CUDA_ONLY_COLUMNS = ("unet_tflops", "mfu")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                name = text.split(":", 1)[1].strip()
                break
    return f"{name} ({os.cpu_count()} logical cores, torch threads {torch.get_num_threads()})"


# ---------------------------------------------------------------- command line
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--config")
    known, _ = first.parse_known_args(argv)
    config = load_config(known.config)
    generation, lora = _section(config, "generation"), _section(config, "lora")

    parser = argparse.ArgumentParser(prog="python -m meddap.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="workflow config for default sizes (default: config/config.yaml)")
    parser.add_argument("--pipeline", help="local diffusers SD v1.x folder; default: build the embedded small model (random weights)")
    parser.add_argument("--sd15", action="store_true", help="build the SD v1.5 architecture (meddap.sd15) with random weights instead")
    parser.add_argument("--sd15-width-divisor", type=int, default=1, help="with --sd15: divide the widths (1 = full size; 2, 5, 10 for quick checks)")
    parser.add_argument("--out", default="results/bench", help="folder for generation.csv, lora_training.csv, bench.json")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"], help="auto: fp32 on CPU, bf16 on CUDA")
    threads = _section(config, "resources").get("threads_per_job")
    parser.add_argument("--threads", type=int, default=int(threads) if threads else None,
                        help="torch CPU threads (default: the config's resources.threads_per_job, as the workflow's jobs run; else torch's)")
    parser.add_argument("--seed", type=int, default=int(config.get("seed", 42)))
    parser.add_argument("--resolution", type=int, default=int(generation.get("resolution", 64)), help="generation and LoRA training resolution")
    parser.add_argument("--rounds", type=int, default=2,
                        help="timed work split into rounds that alternate baseline/meddap (ABBA), so both see the same machine load")
    group = parser.add_argument_group("generation")
    group.add_argument("--images", type=int, default=16, help="images meddap generates (timed)")
    group.add_argument("--baseline-images", type=int, default=None, help="images the baseline generates (timed; default: --images)")
    group.add_argument("--steps", type=int, default=30)
    group.add_argument("--guidance", type=float, default=7.5)
    group.add_argument("--batch-size", type=int, default=int(generation.get("batch_size", 16)), help="meddap generation batch")
    group.add_argument("--scheduler", default=generation.get("scheduler", "dpm"), help="meddap's scheduler (the baseline's is PNDM)")
    group.add_argument("--guidance-reference", default=generation.get("guidance_reference", "lora"), choices=["lora", "base"])
    group.add_argument("--lora-scale", type=float, default=float(generation.get("lora_scale", 1.0)))
    group.add_argument("--negative-prompt", default=_section(config, "prompts").get("negative", ""))
    group.add_argument("--warmup-steps", type=int, default=2, help="denoising steps of the untimed warm-up generation")
    group.add_argument("--compile", action=argparse.BooleanOptionalAction, default=bool(generation.get("compile", False)),
                       help="torch.compile meddap's UNet (CUDA only, as generation.compile)")
    group = parser.add_argument_group("LoRA training")
    group.add_argument("--lora-steps", type=int, default=30, help="timed training steps per method")
    group.add_argument("--lora-warmup", type=int, default=3, help="untimed training steps before them")
    group.add_argument("--lora-batch-size", type=int, default=int(lora.get("batch_size", 8)), help="meddap's batch (the baseline's is 1)")
    group.add_argument("--train-images", type=int, default=16, help="simulated phantom images to train on")
    group.add_argument("--rank", type=int, default=int(lora.get("rank", 4)))
    group.add_argument("--alpha", type=float, default=None, help="default: lora.alpha of the config, else the rank")
    group.add_argument("--lr", type=float, default=float(lora.get("lr", 1e-4)))
    group.add_argument("--target-modules", nargs="+", default=list(lora.get("target_modules") or ["to_q", "to_k", "to_v", "to_out.0"]))
    parser.add_argument("--skip-training", action="store_true", help="generation only (with an untrained LoRA)")
    parser.add_argument("--skip-generation", action="store_true", help="LoRA training only")
    args = parser.parse_args(argv)
    if args.pipeline and args.sd15:
        parser.error("give --pipeline or --sd15, not both")
    if args.baseline_images is None:
        args.baseline_images = args.images
    if args.alpha is None:
        args.alpha = float(lora.get("alpha") or args.rank)
    args.embedded_config = config
    for name in ("images", "baseline_images", "steps", "batch_size", "lora_steps", "lora_batch_size", "train_images", "warmup_steps", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    args.warmup_steps = min(args.warmup_steps, args.steps)
    return args


def run(args: argparse.Namespace) -> dict:
    """Run the benchmark; returns {'generation': DataFrame|None, 'lora_training': DataFrame|None, 'info': dict}."""
    from meddap.devices import pick_device, pick_dtype
    from meddap.generate import image_seed
    from meddap.prompts import build_prompt, training_prompt
    from meddap.settings import library_versions

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    dtype = pick_dtype(device, args.dtype)
    out = Path(args.out)
    peak = matmul_tflops(device)
    info = {
        "device": _device_name(device), "device_type": device.type, "dtype": str(dtype).removeprefix("torch."),
        "bf16_matmul_tflops": peak, "versions": library_versions(), "platform": platform.platform(),
        "settings": {k: v for k, v in vars(args).items() if k != "embedded_config"},
        "memory_measure": ("rise of torch.cuda.max_memory_allocated" if device.type == "cuda" else
                           "rise of peak process RSS (kernel VmHWM; RSS sampled every 5 ms where /proc/self/clear_refs is not writable)") + " over the start of a method's first round, which loads its own model",
        "timing": f"{args.rounds} interleaved rounds (ABBA); warm-up and setup (model load, LoRA, caching: setup_s) excluded from the rates",
    }
    generation = training = None
    with tempfile.TemporaryDirectory(prefix="meddap-bench-") as scratch:
        scratch = Path(scratch)
        if args.pipeline:
            pipeline_dir = Path(args.pipeline)
            info["model"] = str(pipeline_dir)
        elif args.sd15:
            from meddap.sd15 import build_sd15_pipeline

            pipeline_dir = build_sd15_pipeline(scratch / "pipeline", args.sd15_width_divisor, seed=args.seed)
            info["model"] = f"SD v1.5 architecture (meddap.sd15, width / {args.sd15_width_divisor}), random weights"
        else:
            pipeline_dir = build_embedded_pipeline(scratch / "pipeline", args.embedded_config, args.seed)
            info["model"] = "embedded small SD (config sizes, random weights)"
        lora_dir = scratch / "lora-meddap"
        if not args.skip_training:
            phantom_size = int(_section(args.embedded_config, "phantom").get("image_size", 128))  # both sides resize to --resolution
            paths = make_training_images(scratch / "images", args.train_images, args.seed, phantom_size)
            prompt = training_prompt(BENCH_CLASS)
            makers = {
                "baseline": lambda: BaselineTraining(args, pipeline_dir, paths, prompt, device, dtype, scratch / "lora-baseline"),
                "meddap": lambda: MeddapTraining(args, pipeline_dir, paths, prompt, device, lora_dir),
            }
            runners, results = interleave(makers, split(args.lora_steps, args.rounds), device)
            flops = runners["baseline"].train_flops() if device.type == "cuda" else None
            rows = []
            for name, runner in runners.items():
                runner.close()
                samples = args.lora_steps * runner.batch_size
                rows.append({"method": name, "how": runner.how, "batch_size": runner.batch_size, "steps": args.lora_steps,
                             "samples": samples, **results[name], "samples_per_s": samples / results[name]["seconds"]})
            del runners
            training = _with_ratio(rows, "samples_per_s", "samples")
            training["unet_tflops"] = training["samples_per_s"] * flops / 1e12 if flops else float("nan")
            training["mfu"] = training["unet_tflops"] / peak if peak else float("nan")
            info["unet_train_flops_per_sample"] = flops
        else:
            lora_dir = untrained_lora(pipeline_dir, lora_dir, args.rank, args.alpha, args.target_modules)
        if not args.skip_generation:
            prompt = build_prompt(BENCH_CLASS, "none")
            seeds = [image_seed(args.seed, BENCH_CLASS, "none", 0, index) for index in range(max(args.images, args.baseline_images))]
            rounds = min(args.rounds, args.images, args.baseline_images)
            chunks = {name: _rounds(seeds[:count], rounds) for name, count in (("baseline", args.baseline_images), ("meddap", args.images))}
            batch = min(args.batch_size, max(map(len, chunks["meddap"])))
            makers = {
                "baseline": lambda: BaselineGeneration(args, pipeline_dir, lora_dir, prompt, device, dtype),
                "meddap": lambda: MeddapGeneration(args, pipeline_dir, lora_dir, prompt, device, dtype, batch),
            }
            runners, results = interleave(makers, chunks, device)
            rows = []
            for name, runner in runners.items():
                samples = runner.counter.samples
                images = sum(map(len, chunks[name]))
                runner.close()
                rows.append({"method": name, "how": runner.how, "scheduler": runner.scheduler, "steps": args.steps,
                             "guidance": args.guidance, "resolution": args.resolution, "batch_size": runner.batch_size,
                             "images": images, **results[name], "images_per_s": images / results[name]["seconds"],
                             "unet_samples": samples, "unet_samples_per_image": samples / images})
            del runners
            generation = _with_ratio(rows, "images_per_s", "images")
            flops = _generation_flops(pipeline_dir, args, device, dtype) if device.type == "cuda" else None
            generation["unet_tflops"] = generation["unet_samples"] / generation["seconds"] * flops / 1e12 if flops else float("nan")
            generation["mfu"] = generation["unet_tflops"] / peak if peak else float("nan")
            info["unet_forward_flops_per_sample"] = flops
    written = []
    for name, frame in (("generation.csv", generation), ("lora_training.csv", training)):
        if frame is not None:
            write_csv(out / name, frame)
            written.append(out / name)
    write_json(out / "bench.json", info)
    return {"generation": generation, "lora_training": training, "info": info, "written": [*written, out / "bench.json"]}


def _generation_flops(pipeline_dir, args, device, dtype) -> int:
    from meddap.base_models import load_pipeline
    from meddap.denoising import encode_text

    pipe = load_pipeline(pipeline_dir, device, dtype)
    embeds = encode_text(pipe.tokenizer, pipe.text_encoder, [""], device)
    flops = unet_flops(pipe.unet, args.resolution // pipe.vae_scale_factor, embeds)
    del pipe
    _release_memory(device)
    return flops


def report(result: dict) -> str:
    info = result["info"]
    lines = [f"device: {info['device']}  dtype: {info['dtype']}  model: {info['model']}"]
    if info.get("bf16_matmul_tflops"):
        lines.append(f"measured bf16 matmul: {info['bf16_matmul_tflops']:.1f} TFLOP/s (mfu = unet_tflops / this)")
    hidden = CPU_ONLY_COLUMNS if info["device_type"] == "cuda" else CUDA_ONLY_COLUMNS
    if result["generation"] is not None:
        lines += ["", "Generation (images/s; same LoRA, steps, guidance, resolution):",
                  _format_table(result["generation"], [c for c in GENERATION_COLUMNS if c not in hidden])]
    if result["lora_training"] is not None:
        lines += ["", "LoRA training (samples/s = training images seen per second):",
                  _format_table(result["lora_training"], [c for c in TRAINING_COLUMNS if c not in hidden])]
    lines += ["", f"peak_mem_mib: {info['memory_measure']}; {info['timing']}."]
    if info["device_type"] != "cuda":
        lines.append("cpu_s: CPU seconds this process used in the timed work (time-slicing by other processes does not count).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    result = run(args)
    print(report(result))
    print("\nwrote " + ", ".join(map(str, result["written"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
