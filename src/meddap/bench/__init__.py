"""Speed benchmark: meddap's batched generation and cached-latent LoRA training against the
original MEDDAP scripts' way, in one process, on the same weights and the same machine.

    python -m meddap.bench                       # embedded small SD (random weights), config sizes
    python -m meddap.bench --pipeline DIR        # any local diffusers SD v1.x folder
    python -m meddap.bench --parts classifier --classifier-data DIR   # classifier training (see below)

Generation
  baseline  one ``StableDiffusionPipeline.__call__`` per image (prompt re-encoded every call),
            LoRA loaded with ``pipe.load_lora_weights`` and left unfused, PNDM scheduler.
  meddap    ``meddap.diffusion.sampling.generate_images`` (batched, prompt encoded once, one generator per
            image) on a pipeline prepared as ``generate_shard`` does (``apply_lora`` fuses the LoRA,
            the configured scheduler, channels_last on CUDA).
LoRA training
  baseline  the diffusers text-to-image LoRA example: every step VAE-encodes the image and
            text-encodes the prompt, batch 1, peft LoRA on the UNet attention, AdamW, MSE on the noise.
  meddap    ``meddap.diffusion.lora.train_lora`` itself (latents of both flips and the text embedding
            cached once, configurable batch).

Classifier training (``--parts classifier``; ``meddap.bench.classifier``)
  baseline  the original MEDDAP classifier script: ImageFolder + Resize + ToTensor + Normalize,
            DataLoader(batch 32, shuffle, drop_last) with num_workers 0 (as written) and again
            with ``--classifier-workers``, fp32, Adam 1e-3, validation every epoch.
  meddap    ``meddap.classify.classifier.train_classifier`` itself (images on the device as uint8, batched
            on-device augmentation, bf16 autocast + channels_last on CUDA). ``--concurrent 1,2,4``
            adds the device's rate with that many meddap jobs at once (``classifier_concurrency.csv``).

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
Results go to ``<out>/generation.csv``, ``<out>/lora_training.csv``, ``<out>/classifier_training.csv``
(and ``classifier_concurrency.csv``) and ``<out>/bench.json``.

Modules: ``meddap.bench.generation`` and ``meddap.bench.lora`` (the baseline and meddap runners
of each), ``meddap.bench.measure`` (clocks, peak memory, FLOPs, interleaved rounds),
``meddap.bench.inputs`` (config sizes, model, images, LoRA), ``meddap.bench.tables`` (ratios, the
printed tables); this one holds the command line.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never touch the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from meddap.bench.generation import BaselineGeneration, MeddapGeneration, generation_flops  # noqa: E402
from meddap.bench.inputs import (  # noqa: E402
    BENCH_CLASS,
    build_embedded_pipeline,
    load_config,
    make_training_images,
    section,
    untrained_lora,
)
from meddap.bench.lora import BaselineTraining, MeddapTraining  # noqa: E402
from meddap.bench.measure import chunks_of, interleave, matmul_tflops, split  # noqa: E402
from meddap.bench.tables import device_name, report, with_ratio  # noqa: E402
from meddap.runtime.atomic import write_csv, write_json  # noqa: E402


# ---------------------------------------------------------------- command line
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--config")
    known, _ = first.parse_known_args(argv)
    config = load_config(known.config)
    generation, lora = section(config, "generation"), section(config, "lora")

    parser = argparse.ArgumentParser(
        prog="python -m meddap.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="workflow config for default sizes (default: config/config.yaml)")
    parser.add_argument(
        "--pipeline", help="local diffusers SD v1.x folder; default: build the embedded small model (random weights)"
    )
    parser.add_argument(
        "--sd15",
        action="store_true",
        help="build the SD v1.5 architecture (meddap.diffusion.sd15) with random weights instead",
    )
    parser.add_argument(
        "--sd15-width-divisor",
        type=int,
        default=1,
        help="with --sd15: divide the widths (1 = full size; 2, 5, 10 for quick checks)",
    )
    parser.add_argument(
        "--out", default="results/bench", help="folder for generation.csv, lora_training.csv, bench.json"
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"], help="auto: fp32 on CPU, bf16 on CUDA"
    )
    threads = section(config, "resources").get("threads_per_job")
    parser.add_argument(
        "--threads",
        type=int,
        default=int(threads) if threads else None,
        help=(
            "torch CPU threads (default: the config's resources.threads_per_job, "
            "as the workflow's jobs run; else torch's)"
        ),
    )
    parser.add_argument("--seed", type=int, default=int(config.get("seed", 42)))
    parser.add_argument(
        "--resolution",
        type=int,
        default=int(generation.get("resolution", 64)),
        help="generation and LoRA training resolution",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="timed work split into rounds that alternate baseline/meddap (ABBA), so both see the same machine load",
    )
    group = parser.add_argument_group("generation")
    group.add_argument("--images", type=int, default=16, help="images meddap generates (timed)")
    group.add_argument(
        "--baseline-images", type=int, default=None, help="images the baseline generates (timed; default: --images)"
    )
    group.add_argument("--steps", type=int, default=30)
    group.add_argument("--guidance", type=float, default=7.5)
    group.add_argument(
        "--batch-size", type=int, default=int(generation.get("batch_size", 16)), help="meddap generation batch"
    )
    group.add_argument(
        "--scheduler", default=generation.get("scheduler", "dpm"), help="meddap's scheduler (the baseline's is PNDM)"
    )
    group.add_argument(
        "--guidance-reference", default=generation.get("guidance_reference", "lora"), choices=["lora", "base"]
    )
    group.add_argument("--lora-scale", type=float, default=float(generation.get("lora_scale", 1.0)))
    group.add_argument("--negative-prompt", default=section(config, "prompts").get("negative", ""))
    group.add_argument("--warmup-steps", type=int, default=2, help="denoising steps of the untimed warm-up generation")
    group.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=bool(generation.get("compile", False)),
        help="torch.compile meddap's UNet (CUDA only, as generation.compile)",
    )
    group = parser.add_argument_group("LoRA training")
    group.add_argument("--lora-steps", type=int, default=30, help="timed training steps per method")
    group.add_argument("--lora-warmup", type=int, default=3, help="untimed training steps before them")
    group.add_argument(
        "--lora-batch-size",
        type=int,
        default=int(lora.get("batch_size", 8)),
        help="meddap's batch (the baseline's is 1)",
    )
    group.add_argument("--train-images", type=int, default=16, help="simulated phantom images to train on")
    group.add_argument("--rank", type=int, default=int(lora.get("rank", 4)))
    group.add_argument("--alpha", type=float, default=None, help="default: lora.alpha of the config, else the rank")
    group.add_argument("--lr", type=float, default=float(lora.get("lr", 1e-4)))
    group.add_argument(
        "--target-modules", nargs="+", default=list(lora.get("target_modules") or ["to_q", "to_k", "to_v", "to_out.0"])
    )
    group = parser.add_argument_group("classifier training (part classifier)")
    group.add_argument("--classifier-arch", default="resnet18", help="torchvision architecture (random init)")
    group.add_argument("--classifier-resolution", type=int, default=224, help="training resolution (px)")
    group.add_argument("--classifier-epochs", type=int, default=2, help="timed epochs per method")
    group.add_argument("--classifier-warmup", type=int, default=1, help="untimed epochs before them")
    group.add_argument("--classifier-batch-size", type=int, default=32)
    group.add_argument(
        "--classifier-data",
        help="folder of class folders (e.g. BUSI's benign/malignant/normal); default: simulated phantom images",
    )
    group.add_argument("--classifier-images", type=int, default=64, help="images per class (a seeded sample)")
    group.add_argument(
        "--classifier-workers", type=int, default=8, help="DataLoader num_workers of the second baseline row"
    )
    group.add_argument(
        "--classifier-compile", action="store_true", help="meddap with classifier.compile (torch.compile, CUDA)"
    )
    group.add_argument(
        "--concurrent",
        default="",
        help="e.g. 1,2,4: also run meddap's loop as that many processes at once on the device (per-GPU rate)",
    )
    parser.add_argument(
        "--parts",
        default="generation,lora",
        help="comma-separated parts to run: generation, lora, classifier (default: generation,lora)",
    )
    parser.add_argument("--skip-training", action="store_true", help="generation only (with an untrained LoRA)")
    parser.add_argument("--skip-generation", action="store_true", help="LoRA training only")
    args = parser.parse_args(argv)
    args.parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    unknown = set(args.parts) - {"generation", "lora", "classifier"}
    if unknown:
        parser.error(f"--parts: unknown {sorted(unknown)}; choose from generation, lora, classifier")
    if args.skip_training and "lora" in args.parts:
        args.parts.remove("lora")
    if args.skip_generation and "generation" in args.parts:
        args.parts.remove("generation")
    args.skip_training, args.skip_generation = "lora" not in args.parts, "generation" not in args.parts
    try:
        args.concurrent = [int(n) for n in args.concurrent.split(",") if n.strip()]
    except ValueError:
        parser.error("--concurrent: comma-separated job counts, e.g. 1,2,4")
    if args.pipeline and args.sd15:
        parser.error("give --pipeline or --sd15, not both")
    if args.baseline_images is None:
        args.baseline_images = args.images
    if args.alpha is None:
        args.alpha = float(lora.get("alpha") or args.rank)
    args.embedded_config = config
    for name in (
        "images",
        "baseline_images",
        "steps",
        "batch_size",
        "lora_steps",
        "lora_batch_size",
        "train_images",
        "warmup_steps",
        "rounds",
        "classifier_epochs",
        "classifier_batch_size",
        "classifier_resolution",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    args.warmup_steps = min(args.warmup_steps, args.steps)
    return args


def run(args: argparse.Namespace) -> dict:
    """Run the benchmark; returns {'generation': DataFrame|None, 'lora_training': DataFrame|None, 'info': dict}."""
    from meddap.diffusion.generate import image_seed
    from meddap.runtime.devices import pick_device, pick_dtype
    from meddap.runtime.versions import library_versions
    from meddap.settings.prompts import build_prompt, training_prompt

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    dtype = pick_dtype(device, args.dtype)
    out = Path(args.out)
    peak = matmul_tflops(device)
    info = {
        "device": device_name(device),
        "device_type": device.type,
        "dtype": str(dtype).removeprefix("torch."),
        "bf16_matmul_tflops": peak,
        "versions": library_versions(),
        "platform": platform.platform(),
        "settings": {k: v for k, v in vars(args).items() if k != "embedded_config"},
        "memory_measure": (
            "rise of torch.cuda.max_memory_allocated"
            if device.type == "cuda"
            else (
                "rise of peak process RSS (kernel VmHWM; RSS sampled every 5 ms "
                "where /proc/self/clear_refs is not writable)"
            )
        )
        + " over the start of a method's first round, which loads its own model",
        "timing": (
            f"{args.rounds} interleaved rounds (ABBA); warm-up and setup (model load, LoRA, caching: setup_s) "
            "excluded from the rates"
        ),
    }
    generation = training = classifier = concurrency = None
    with tempfile.TemporaryDirectory(prefix="meddap-bench-") as scratch:
        scratch = Path(scratch)
        if "classifier" in args.parts:
            classifier, concurrency = run_classifier(args, device, scratch / "classifier", info)
        if args.skip_training and args.skip_generation:
            info["model"] = f"{args.classifier_arch} (random init)"
        elif args.pipeline:
            pipeline_dir = Path(args.pipeline)
            info["model"] = str(pipeline_dir)
        elif args.sd15:
            from meddap.diffusion.sd15 import build_sd15_pipeline

            pipeline_dir = build_sd15_pipeline(scratch / "pipeline", args.sd15_width_divisor, seed=args.seed)
            info["model"] = (
                f"SD v1.5 architecture (meddap.diffusion.sd15, width / {args.sd15_width_divisor}), random weights"
            )
        else:
            pipeline_dir = build_embedded_pipeline(scratch / "pipeline", args.embedded_config, args.seed)
            info["model"] = "embedded small SD (config sizes, random weights)"
        lora_dir = scratch / "lora-meddap"
        if not args.skip_training:
            phantom_size = int(
                section(args.embedded_config, "phantom").get("image_size", 128)
            )  # both sides resize to --resolution
            paths = make_training_images(scratch / "images", args.train_images, args.seed, phantom_size)
            prompt = training_prompt(BENCH_CLASS)
            makers = {
                "baseline": lambda: BaselineTraining(
                    args, pipeline_dir, paths, prompt, device, dtype, scratch / "lora-baseline"
                ),
                "meddap": lambda: MeddapTraining(args, pipeline_dir, paths, prompt, device, lora_dir),
            }
            runners, results = interleave(makers, split(args.lora_steps, args.rounds), device)
            flops = runners["baseline"].train_flops() if device.type == "cuda" else None
            rows = []
            for name, runner in runners.items():
                runner.close()
                samples = args.lora_steps * runner.batch_size
                rows.append(
                    {
                        "method": name,
                        "how": runner.how,
                        "batch_size": runner.batch_size,
                        "steps": args.lora_steps,
                        "samples": samples,
                        **results[name],
                        "samples_per_s": samples / results[name]["seconds"],
                    }
                )
            del runners
            training = with_ratio(rows, "samples_per_s", "samples")
            training["unet_tflops"] = training["samples_per_s"] * flops / 1e12 if flops else float("nan")
            training["mfu"] = training["unet_tflops"] / peak if peak else float("nan")
            info["unet_train_flops_per_sample"] = flops
        elif not args.skip_generation:
            lora_dir = untrained_lora(pipeline_dir, lora_dir, args.rank, args.alpha, args.target_modules)
        if not args.skip_generation:
            prompt = build_prompt(BENCH_CLASS, "none")
            seeds = [
                image_seed(args.seed, BENCH_CLASS, "none", 0, index)
                for index in range(max(args.images, args.baseline_images))
            ]
            rounds = min(args.rounds, args.images, args.baseline_images)
            chunks = {
                name: chunks_of(seeds[:count], rounds)
                for name, count in (("baseline", args.baseline_images), ("meddap", args.images))
            }
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
                rows.append(
                    {
                        "method": name,
                        "how": runner.how,
                        "scheduler": runner.scheduler,
                        "steps": args.steps,
                        "guidance": args.guidance,
                        "resolution": args.resolution,
                        "batch_size": runner.batch_size,
                        "images": images,
                        **results[name],
                        "images_per_s": images / results[name]["seconds"],
                        "unet_samples": samples,
                        "unet_samples_per_image": samples / images,
                    }
                )
            del runners
            generation = with_ratio(rows, "images_per_s", "images")
            flops = generation_flops(pipeline_dir, args, device, dtype) if device.type == "cuda" else None
            generation["unet_tflops"] = (
                generation["unet_samples"] / generation["seconds"] * flops / 1e12 if flops else float("nan")
            )
            generation["mfu"] = generation["unet_tflops"] / peak if peak else float("nan")
            info["unet_forward_flops_per_sample"] = flops
    written = []
    for name, frame in (
        ("generation.csv", generation),
        ("lora_training.csv", training),
        ("classifier_training.csv", classifier),
        ("classifier_concurrency.csv", concurrency),
    ):
        if frame is not None:
            write_csv(out / name, frame)
            written.append(out / name)
    write_json(out / "bench.json", info)
    return {
        "generation": generation,
        "lora_training": training,
        "classifier_training": classifier,
        "classifier_concurrency": concurrency,
        "info": info,
        "written": [*written, out / "bench.json"],
    }


def run_classifier(args: argparse.Namespace, device: torch.device, scratch: Path, info: dict):
    """The classifier part: (per-method table, concurrency table or None); see meddap.bench.classifier."""
    import pandas as pd

    from meddap.bench.classifier import (
        BaselineClassifier,
        MeddapClassifier,
        class_images,
        classifier_flops,
        concurrent_rates,
        link_image_folder,
        peak_bf16_tflops,
        split_images,
    )

    scratch.mkdir(parents=True, exist_ok=True)
    if args.classifier_data:
        images = class_images(args.classifier_data, args.classifier_images, args.seed)
        source = str(args.classifier_data)
    else:
        from meddap.data.phantom import device_from_config, simulate_device_dataset

        data = scratch / "phantom"
        phantom_size = int(section(args.embedded_config, "phantom").get("image_size", 128))
        classes = list(section(args.embedded_config, "dataset").get("classes") or ["benign", "malignant", "normal"])
        counts = {name: args.classifier_images for name in classes}
        device_spec = device_from_config("linear-L12", None)
        simulate_device_dataset(data, device_spec, counts, args.seed, phantom_size, progress=False)
        images = class_images(data, args.classifier_images, args.seed)
        source = "simulated phantom (linear-L12)"
    train_rows, val_rows = split_images(images)
    train_root = link_image_folder(train_rows, scratch / "train")
    val_root = link_image_folder(val_rows, scratch / "val")
    makers = {
        "baseline": lambda: BaselineClassifier(args, train_root, val_root, device, 0),
        f"baseline_workers{args.classifier_workers}": lambda: BaselineClassifier(
            args, train_root, val_root, device, args.classifier_workers
        ),
        "meddap": lambda: MeddapClassifier(args, train_rows, val_rows, device, scratch / "meddap-model"),
    }
    runners, results = interleave(makers, split(args.classifier_epochs, args.rounds), device)
    rows = []
    for name, runner in runners.items():
        runner.close()
        rows.append(
            {
                "method": name,
                "how": runner.how,
                "arch": args.classifier_arch,
                "resolution": args.classifier_resolution,
                "batch_size": runner.batch_size,
                "epochs": args.classifier_epochs,
                "images": runner.images,
                **results[name],
                "images_per_s": runner.images / results[name]["seconds"],
            }
        )
    del runners
    frame = with_ratio(rows, "images_per_s", "images")
    flops = classifier_flops(args.classifier_arch, len(images), args.classifier_resolution, device)
    peak = peak_bf16_tflops(info["device"]) if device.type == "cuda" else None
    frame["tflops"] = frame["images_per_s"] * flops / 1e12 if device.type == "cuda" else float("nan")
    frame["mfu"] = frame["tflops"] / peak if peak else float("nan")
    info["classifier"] = {
        "data": source,
        "train_images": len(train_rows),
        "val_images": len(val_rows),
        "classes": sorted(images),
        "train_flops_per_image": flops,
        "peak_bf16_tflops": peak,
    }
    concurrency = None
    if args.concurrent:
        concurrency = pd.DataFrame(concurrent_rates(args, train_rows, val_rows, scratch, args.concurrent))
        concurrency["tflops"] = (
            concurrency["images_per_s_total"] * flops / 1e12 if device.type == "cuda" else float("nan")
        )
        concurrency["mfu"] = concurrency["tflops"] / peak if peak else float("nan")
    return frame, concurrency


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    result = run(args)
    print(report(result))
    print("\nwrote " + ", ".join(map(str, result["written"])))
    return 0
