"""Where torch work runs and in which precision: the device and dtype every job picks."""

from __future__ import annotations

import torch


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def pick_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """fp32 on CPU; bf16 (or fp16 when asked, or when bf16 is unsupported) on CUDA."""
    if device.type != "cuda" or precision == "fp32":
        return torch.float32
    if precision == "fp16":
        return torch.float16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def cuda_problem() -> str | None:
    """Why CUDA cannot run torch work here (None when it can): no device, no driver, or a driver
    the installed torch cannot use, found by allocating one tensor."""
    try:
        if not torch.cuda.is_available():
            return f"torch {torch.__version__} finds no usable CUDA device (torch.cuda.is_available() is False)"
        torch.zeros(1, device="cuda")
    except Exception as error:  # noqa: BLE001 - every reason CUDA fails is the answer
        return f"CUDA fails here: {' '.join(str(error).split())[:200]}"
    return None
