"""Time the single-file checkpoint conversion on the SD v1.5 architecture and check it is exact.

    python -m meddap.bench.conversion [--width-divisor 1] [--workdir DIR]

Builds a random-weight SD v1.5 pipeline (``meddap.diffusion.sd15``), writes it as one original-layout
``.safetensors`` file, converts that with ``meddap.diffusion.base_models.convert_single_file`` (what rule
``convert_base_model`` runs) and prints the seconds of each step, the peak memory and whether
every UNet, VAE and text-encoder tensor came back bit for bit.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width-divisor", type=int, default=1, help="1 = the full SD v1.5 widths (about 4 GB in fp32)")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)

    import torch
    from diffusers import StableDiffusionPipeline

    from meddap.bench.tables import device_name
    from meddap.diffusion.base_models import convert_single_file
    from meddap.diffusion.sd15 import build_sd15_pipeline, write_single_file

    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        root = Path(scratch)
        started = time.perf_counter()
        folder = build_sd15_pipeline(root / "sd15", width_divisor=args.width_divisor)
        built = time.perf_counter()
        checkpoint = write_single_file(folder, root / "sd15.safetensors")
        written = time.perf_counter()
        source = convert_single_file(checkpoint, root / "converted")
        converted = time.perf_counter()
        original = StableDiffusionPipeline.from_pretrained(str(folder), local_files_only=True)
        result = StableDiffusionPipeline.from_pretrained(str(root / "converted"), local_files_only=True)
        exact = {}
        for name in ("unet", "vae", "text_encoder"):
            before, after = getattr(original, name).state_dict(), getattr(result, name).state_dict()
            exact[name] = set(before) == set(after) and all(torch.equal(before[k], after[k]) for k in before)
        size_gb = checkpoint.stat().st_size / 1e9
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"device: {device_name(torch.device('cpu'))}")
    print(
        f"SD v1.5 architecture / {args.width_divisor}: UNet {source['unet_parameters']:,} parameters, "
        f"widths {source['unet_block_out_channels']}, single file {size_gb:.2f} GB"
    )
    print(
        f"build {built - started:.1f} s, write single file {written - built:.1f} s, convert {converted - written:.1f} s"
    )
    print(f"peak resident memory {peak_gib:.1f} GiB; bit-exact: {exact}")


if __name__ == "__main__":
    main()
