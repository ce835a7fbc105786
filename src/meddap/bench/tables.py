"""The benchmark's tables: ratios to the baseline, the printed report, the device's name."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

import pandas as pd
import torch


def with_ratio(rows: list[dict], rate: str, items: str) -> pd.DataFrame:
    """Add ``ratio_vs_baseline`` (rate / the baseline's) and the same on CPU time (``cpu_ratio_vs_baseline``)."""
    frame = pd.DataFrame(rows)
    baseline = frame["method"] == "baseline"
    frame["ratio_vs_baseline"] = frame[rate] / frame.loc[baseline, rate].iloc[0]
    per_cpu = f"{items}_per_cpu_s"
    frame[per_cpu] = frame[items] / frame["cpu_s"]
    frame["cpu_ratio_vs_baseline"] = frame[per_cpu] / frame.loc[baseline, per_cpu].iloc[0]
    return frame


def format_table(frame: pd.DataFrame, columns: list[str]) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            if value != value:
                return ""
            return (
                f"{value:.3g}"
                if abs(value) < 1
                else f"{value:.2f}"
                if abs(value) < 10
                else f"{value:.1f}"
                if abs(value) < 100
                else f"{value:.0f}"
            )
        return "" if value is None else str(value)

    rows = [[cell(v) for v in row] for row in frame[columns].itertuples(index=False)]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    line = lambda values: "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"  # noqa: E731
    return "\n".join([line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


GENERATION_COLUMNS = [
    "method",
    "scheduler",
    "steps",
    "guidance",
    "resolution",
    "batch_size",
    "unet_samples_per_image",
    "images",
    "seconds",
    "images_per_s",
    "ratio_vs_baseline",
    "cpu_s",
    "cpu_ratio_vs_baseline",
    "setup_s",
    "warmup_s",
    "peak_mem_mib",
    "unet_tflops",
    "mfu",
]
# What every training table compares after its rate: ratios, CPU time, one-time setup, memory.
COMPARED_COLUMNS = ["ratio_vs_baseline", "cpu_s", "cpu_ratio_vs_baseline", "setup_s", "peak_mem_mib"]
TRAINING_COLUMNS = [
    "method",
    "batch_size",
    "steps",
    "samples",
    "seconds",
    "samples_per_s",
    *COMPARED_COLUMNS,
    "unet_tflops",
    "mfu",
]
CLASSIFIER_COLUMNS = [
    "method",
    "arch",
    "resolution",
    "batch_size",
    "epochs",
    "images",
    "seconds",
    "images_per_s",
    *COMPARED_COLUMNS,
    "tflops",
    "mfu",
]
CONCURRENCY_COLUMNS = [
    "jobs",
    "images_per_s_per_job",
    "images_per_s_total",
    "total_vs_first",
    "wall_s",
    "tflops",
    "mfu",
]
CPU_ONLY_COLUMNS = ("cpu_s", "cpu_ratio_vs_baseline")
CUDA_ONLY_COLUMNS = ("unet_tflops", "mfu", "tflops")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                name = text.split(":", 1)[1].strip()
                break
    return f"{name} ({os.cpu_count()} logical cores, torch threads {torch.get_num_threads()})"


def report(result: dict) -> str:
    info = result["info"]
    lines = [f"device: {info['device']}  dtype: {info['dtype']}  model: {info['model']}"]
    if info.get("bf16_matmul_tflops"):
        lines.append(f"measured bf16 matmul: {info['bf16_matmul_tflops']:.1f} TFLOP/s (mfu = unet_tflops / this)")
    hidden = CPU_ONLY_COLUMNS if info["device_type"] == "cuda" else CUDA_ONLY_COLUMNS
    if result["generation"] is not None:
        lines += [
            "",
            "Generation (images/s; same LoRA, steps, guidance, resolution):",
            format_table(result["generation"], [c for c in GENERATION_COLUMNS if c not in hidden]),
        ]
    if result["lora_training"] is not None:
        lines += [
            "",
            "LoRA training (samples/s = training images seen per second):",
            format_table(result["lora_training"], [c for c in TRAINING_COLUMNS if c not in hidden]),
        ]
    if result.get("classifier_training") is not None:
        extra = info["classifier"]
        lines += [
            "",
            f"Classifier training (images/s = training images per second of epoch time, training + validation; "
            f"{extra['train_images']} training and {extra['val_images']} validation images of {extra['data']}):",
            format_table(result["classifier_training"], [c for c in CLASSIFIER_COLUMNS if c not in hidden]),
        ]
        if info["device_type"] == "cuda":
            peak = extra["peak_bf16_tflops"]
            lines.append(
                f"tflops: {extra['train_flops_per_image'] / 1e9:.2f} GFLOP per training image (3 x one forward) "
                "x images/s; "
                + (f"mfu = tflops / {peak:.0f} (dense bf16 peak)" if peak else "mfu omitted (device not in the table)")
            )
    if result.get("classifier_concurrency") is not None:
        lines += [
            "",
            "Concurrent meddap classifier jobs on the device (each its own process; total = sum of the jobs' rates):",
            format_table(result["classifier_concurrency"], [c for c in CONCURRENCY_COLUMNS if c not in hidden]),
        ]
    lines += ["", f"peak_mem_mib: {info['memory_measure']}; {info['timing']}."]
    if info["device_type"] != "cuda":
        lines.append(
            "cpu_s: CPU seconds this process used in the timed work (time-slicing by other processes does not count)."
        )
    return "\n".join(lines)
