"""Checks a shard job's inputs before Snakemake runs it (rule check_generation_inputs).

Snakemake deletes a job's old outputs when the job starts: a regenerated shard whose LoRA or
base model no longer loads would be lost before the job fails. These checks run in a job of
their own, before the shard job, and read only safetensors headers (no weights, no torch):
every .safetensors file of the LoRA and base model folders is complete, every LoRA tensor
adapts a layer the base model has, and every file of the LoRA (and of a base model built here) has
the sha256 its lineage record holds, the base model the digest the LoRA was trained on (digests
cached by path, size and mtime_ns): a forced shard never uses a changed LoRA. The error names the
file and the command that remakes it.
"""

from __future__ import annotations

import re
from pathlib import Path

from meddap.provenance.file_checks import SafetensorsFileError, check_safetensors
from meddap.provenance.lineage import DigestCache, file_digest, path_digest, read_lineage

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # as meddap.diffusion.lora (which imports torch)
# A diffusers-format LoRA tensor: <component>.<layer>.lora.down|up.weight (or peft's lora_A|B).
LORA_KEY = re.compile(r"^(?P<component>unet|text_encoder)\.(?P<layer>.+)\.lora(?:\.down|\.up|_A|_B)\.weight$")


class GenerationInputError(ValueError):
    """A shard's LoRA or base model would not load; the message names the file and the remedy."""


def rerun_command(folder: str | Path) -> str:
    return f"snakemake --cores all --forcerun {folder}"


def base_model_remedy(base_model: str | Path, built_here: bool) -> str:
    if built_here:
        return f"Rebuild it: {rerun_command(base_model)} (every job depends on it)"
    return "It is your own folder (base_model.path): restore the file from the model's source"


def check_generation_inputs(base_model: str | Path, lora_dir: str | Path, base_built_here: bool) -> list[Path]:
    """Raise GenerationInputError unless the LoRA at ``lora_dir`` and the base model folder load
    (complete safetensors files, LoRA layers present in the base model); return the files checked."""
    base_model, lora_dir = Path(base_model), Path(lora_dir)
    lora_file = lora_dir / LORA_WEIGHT_NAME
    lora_remedy = f"Retrain the LoRA: {rerun_command(lora_dir)}"
    if not lora_file.is_file():
        raise GenerationInputError(f"LoRA {lora_file} is missing. {lora_remedy}")
    checked = []
    for path in sorted(lora_dir.rglob("*.safetensors")):
        try:
            check_safetensors(path, lora_remedy)
        except SafetensorsFileError as error:
            raise GenerationInputError(f"LoRA file {error}") from None
        checked.append(path)
    layers: dict[str, set[str]] = {}
    for path in sorted(base_model.rglob("*.safetensors")):
        try:
            shapes = check_safetensors(path, base_model_remedy(base_model, base_built_here))
        except SafetensorsFileError as error:
            raise GenerationInputError(f"base model file {error}") from None
        checked.append(path)
        component = path.relative_to(base_model).parts[0]
        layers.setdefault(component, set()).update(
            name.removesuffix(".weight") for name in shapes if name.endswith(".weight")
        )
    for key in check_safetensors(lora_file, lora_remedy):
        match = LORA_KEY.match(key)
        if match is None:
            raise GenerationInputError(f"LoRA {lora_file} holds {key!r}, not a diffusers LoRA tensor. {lora_remedy}")
        component, layer = match["component"], match["layer"]
        if component in layers and layer not in layers[component]:
            raise GenerationInputError(
                f"LoRA {lora_file} adapts {component} layer {layer!r}, which the base model {base_model} lacks: "
                f"it was trained on another base model. {lora_remedy}"
            )
    return checked


def check_recorded_digests(
    base_model: str | Path, lora_dir: str | Path, base_built_here: bool, cache: DigestCache | None = None
) -> int:
    """Raise GenerationInputError when a file of the LoRA (or of a base model built here) differs
    from its lineage record, or the base model from the one the LoRA was trained on; return the
    number of files compared."""
    base_model, lora_dir = Path(base_model), Path(lora_dir)
    lora_remedy = f"Retrain the LoRA: {rerun_command(lora_dir)}"
    folders = [(lora_dir, "LoRA", lora_remedy)]
    if base_built_here:
        folders.append((base_model, "base model", base_model_remedy(base_model, True)))
    compared = 0
    for folder, what, remedy in folders:
        record = read_lineage(folder)
        if record is None:
            raise GenerationInputError(
                f"{what} {folder} has no lineage.json: it was not made by this workflow. {remedy}"
            )
        for entry in record.get("files", []):
            path = folder / entry["path"]
            if not path.is_file():
                raise GenerationInputError(f"{what} file {path} is missing. {remedy}")
            if file_digest(path, cache) != entry["sha256"]:
                raise GenerationInputError(
                    f"{what} file {path} changed after it was made (its sha256 is not the recorded one). {remedy}"
                )
            compared += 1
    recorded = (read_lineage(lora_dir) or {}).get("input_digests", {}).get("base_model")
    if recorded is not None and path_digest(base_model, cache) != recorded:
        raise GenerationInputError(
            f"base model {base_model} is not the one LoRA {lora_dir} was trained on (its digest changed). {lora_remedy}"
        )
    return compared
