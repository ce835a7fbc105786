"""The tiny run's outputs that a refactoring must leave byte-identical, as a digest list.

    python tests/outputs_digest.py RUN_DIR tests/data/tiny_outputs.json   (make record-outputs)

Split manifest, dataset variants, shard PNGs, LoRA, classifier and base-model weights and every
prediction table by sha256; the numbers of every metrics.json by value (its other keys may grow).
Float results are reproducible on one platform, not across CPUs or libraries, so the record
names the platform it was made on and the test compares only there.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

PATTERNS = [
    "results/splits/manifest.csv",
    "results/datasets/*/*.csv",
    "results/synthetic/**/*.png",
    "results/lora/*/*/pytorch_lora_weights.safetensors",
    "results/classifiers/*/*/*/*/model.safetensors",
    "results/evaluation/*/*/*/*/*/predictions.csv",
    "results/base_model/unet/*.safetensors",
]


def platform() -> dict[str, str]:
    import torch

    from meddap.bench.tables import device_name

    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu": device_name(torch.device("cpu")).split(" (")[0],
    }


def outputs_digest(run_dir: str | Path) -> dict:
    root = Path(run_dir)
    digests = {}
    for pattern in PATTERNS:
        for path in sorted(root.glob(pattern)):
            digests[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    metrics = {}
    for path in sorted(root.glob("results/evaluation/*/*/*/*/*/metrics.json")):
        values = json.loads(path.read_text())
        numbers = {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        metrics[str(path.relative_to(root))] = numbers
    return {"digests": digests, "metrics": metrics}


if __name__ == "__main__":
    record = {"platform": platform(), **outputs_digest(sys.argv[1])}
    Path(sys.argv[2]).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"{len(record['digests'])} files and {len(record['metrics'])} metrics files recorded in {sys.argv[2]}")
