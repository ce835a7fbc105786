"""``meddap init``: look at a data folder (and a base model), then write a complete study config.

The study config is the paper's protocol (``config/busi.yaml``, shipped as ``meddap/protocols``)
with the user's paths and classes filled in and every key the study uses stated, each with its
schema description as a comment: the run reads nothing from the embedded default (the Snakefile
loads config/config.yaml only when no --configfile is given).
"""

from __future__ import annotations

import fnmatch
import json
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from meddap.config.resolve import used_config
from meddap.data.dataset import list_class_images, suggest_root
from meddap.data.images import IMAGE_EXTENSIONS
from meddap.runtime.outputs import quoted

RUN_COMMAND = "snakemake --cores all --configfile {config}"
# A configured resolution below this share of the model's native one draws a warning.
FAR_BELOW_NATIVE = 0.5


# Sections a study on real data with its own base model does not use: written as `enabled: false` only.
class StudyError(ValueError):
    """The data folder or base model cannot start a study; the message says why (one line)."""


def protocol_file(name: str) -> Path:
    """A file shipped with the package: ``busi.yaml`` (the paper's protocol) or ``config.schema.yaml``."""
    return Path(str(resources.files("meddap") / "protocols" / name))


@dataclass
class DataSummary:
    root: Path
    counts: dict[str, int]
    masks: dict[str, int]
    sizes: Counter = field(default_factory=Counter)
    duplicate_images: int = 0
    duplicate_groups: int = 0
    mixed_label_groups: int = 0
    exclude: tuple[str, ...] = ("*_mask*",)
    distance: int = 10

    @property
    def classes(self) -> list[str]:
        return list(self.counts)

    def lines(self) -> list[str]:
        total = sum(self.counts.values())
        widths = [w for w, _ in self.sizes.elements()]
        heights = [h for _, h in self.sizes.elements()]
        common = ", ".join(f"{w}x{h} ({n})" for (w, h), n in self.sizes.most_common(3))
        lines = [
            f"data: {self.root}: {len(self.counts)} classes, {total} images: "
            + ", ".join(f"{cls} {n}" for cls, n in self.counts.items()),
            f"  masks and other files matching {list(self.exclude)} (skipped): "
            + ", ".join(f"{cls} {n}" for cls, n in self.masks.items()),
            f"  image sizes: width {min(widths)}..{max(widths)}, height {min(heights)}..{max(heights)} px; "
            f"{len(self.sizes)} distinct sizes, most common {common}",
            f"  near-duplicates (perceptual hash within {self.distance} bits): {self.duplicate_images} images in "
            f"{self.duplicate_groups} groups ({self.mixed_label_groups} under two classes); the split keeps each "
            "group on one side",
        ]
        return lines


def inspect_data(root: str | Path, exclude: list[str] | None = None, distance: int = 10) -> DataSummary:
    """Classes (the subfolders holding images), counts, masks, image sizes and near-duplicates."""
    from PIL import Image

    from meddap.data.near_duplicates import duplicate_report, near_duplicate_groups

    root = Path(root).resolve()
    exclude = list(exclude if exclude is not None else ["*_mask*"])
    if not root.is_dir():
        raise StudyError(f"--data {root} is not a folder; give a folder with one subfolder of images per class")
    subfolders = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    with_images = [
        name
        for name in subfolders
        if any(p.suffix.lower() in IMAGE_EXTENSIONS for p in (root / name).iterdir() if p.is_file())
    ]
    if len(with_images) < 2:
        found = f"only {with_images}" if with_images else "none"
        better = suggest_root(root, None)
        hint = f"; {str(better)!r} holds class folders of images: give --data {quoted(better)}" if better else ""
        raise StudyError(
            f"--data {root} has {len(with_images)} class subfolder(s) with images ({found}); a study needs at least "
            f"two classes, one subfolder of images per class{hint}"
        )
    images = list_class_images(root, with_images, exclude)
    masks = {
        cls: sum(
            1
            for p in (root / cls).iterdir()
            if p.is_file() and any(fnmatch.fnmatch(p.name, pattern) for pattern in exclude)
        )
        for cls in images
    }
    sizes: Counter = Counter()
    for paths in images.values():
        for path in paths:
            with Image.open(path) as image:  # the header only
                sizes[image.size] += 1
    all_paths = [p for paths in images.values() for p in paths]
    groups = near_duplicate_groups(all_paths, distance)
    groups["class"] = [cls for cls, paths in images.items() for _ in paths]
    duplicates = duplicate_report(groups)
    mixed = int((duplicates.groupby("group")["class"].nunique() > 1).sum()) if len(duplicates) else 0
    return DataSummary(
        root=root,
        counts={cls: len(paths) for cls, paths in images.items()},
        masks=masks,
        sizes=sizes,
        duplicate_images=len(duplicates),
        duplicate_groups=int(duplicates["group"].nunique()) if len(duplicates) else 0,
        mixed_label_groups=mixed,
        exclude=tuple(exclude),
        distance=distance,
    )


@dataclass
class ModelSummary:
    path: Path
    kind: str  # "folder" or "single file"
    pipeline: str | None
    native_resolution: int | None
    prediction_type: str | None
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        native = f"{self.native_resolution} px" if self.native_resolution else "not recorded"
        lines = [
            f"base model: {self.path} ({self.kind}): {self.pipeline or 'pipeline class not recorded'}, "
            f"native resolution {native}, prediction type {self.prediction_type or 'not recorded'}"
        ]
        return lines + [f"  {note}" for note in self.notes]


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def inspect_base_model(path: str | Path) -> ModelSummary:
    """What a base model is, read from its config files (folder) or its safetensors header (one file);
    no weights are loaded."""
    from meddap.diffusion.base_models import PICKLE_SUFFIXES, check_base_model_folder, check_single_file

    path = Path(path).resolve()
    if path.is_dir():
        check_base_model_folder(path)
        index = _json(path / "model_index.json")
        unet = _json(path / "unet" / "config.json")
        vae = _json(path / "vae" / "config.json")
        scheduler = _json(path / "scheduler" / "scheduler_config.json")
        scale = 2 ** (len(vae.get("block_out_channels", [0] * 4)) - 1)
        sample_size = unet.get("sample_size")
        native = int(sample_size) * scale if isinstance(sample_size, int) else None
        return ModelSummary(
            path,
            "diffusers folder",
            index.get("_class_name"),
            native,
            scheduler.get("prediction_type", "epsilon"),
        )
    if path.suffix in PICKLE_SUFFIXES:
        raise StudyError(f"--base-model {path} is a pickled checkpoint; meddap reads .safetensors files or folders")
    if path.suffix == ".safetensors" and path.is_file():
        check_single_file(path)  # the header: a full SD v1.x checkpoint, else one line naming what it holds
        return ModelSummary(
            path,
            "single .safetensors file",
            "StableDiffusionPipeline (SD v1.x, from its tensor names)",
            512,
            "epsilon",
            notes=[
                "a single file records neither its training resolution nor its prediction type: SD v1.x's 512 px "
                "and epsilon are assumed (as rule convert_base_model does)"
            ],
        )
    raise StudyError(
        f"--base-model {path} is neither a diffusers folder (model_index.json) nor a .safetensors checkpoint"
    )


def resolution_warnings(model: ModelSummary, config: dict) -> list[str]:
    if not model.native_resolution:
        return []
    warnings = []
    for key, value in (
        ("lora.resolution", config["lora"]["resolution"]),
        ("generation.resolution", config["generation"]["resolution"]),
    ):
        if value < FAR_BELOW_NATIVE * model.native_resolution:
            warnings.append(
                f"warning: {key} {value} is far below the base model's native {model.native_resolution} px: "
                "its images will be poor there; consider raising it (slower)"
            )
    return warnings


def _complete(schema: dict, values: dict | None) -> dict:
    """Every key of a schema object: the given value, else the schema's default (recursively)."""
    values = values or {}
    out = {}
    for key, node in schema["properties"].items():
        if node.get("type") == "object" and "properties" in node:
            out[key] = _complete(node, values.get(key, node.get("default")))
        else:
            out[key] = values[key] if key in values else node.get("default")
    return out


def study_config(data: DataSummary, base_model: str | None) -> dict:
    """The paper's protocol with the data folder, its classes and the base model filled in."""
    schema = yaml.safe_load(protocol_file("config.schema.yaml").read_text())
    protocol = yaml.safe_load(protocol_file("busi.yaml").read_text())
    protocol["dataset"]["root"] = str(data.root)
    protocol["dataset"]["classes"] = data.classes
    protocol["dataset"]["exclude"] = list(data.exclude)
    protocol["base_model"]["path"] = str(Path(base_model).resolve()) if base_model else None
    config = _complete(schema, protocol)
    if config["evaluation"]["positive_class"] not in data.classes:
        config["evaluation"]["positive_class"] = None
    return used_config(config)  # the phantom and pretraining sections reduced to `enabled: false`


def _flow(value) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).strip()
    return text.removesuffix("...").strip()


def _render(schema: dict, values: dict, indent: int, lines: list[str]) -> None:
    pad = "  " * indent
    for key, value in values.items():
        node = schema["properties"][key]
        description = node.get("description")
        if description:
            lines.extend(f"{pad}# {line}" for line in textwrap.wrap(description, 100 - len(pad)))
        if isinstance(value, dict) and "properties" in node:
            lines.append(f"{pad}{key}:")
            _render(node, value, indent + 1, lines)
        else:
            lines.append(f"{pad}{key}: {_flow(value)}")


def render_study(config: dict, data: DataSummary, model: ModelSummary | None, out: Path) -> str:
    schema = yaml.safe_load(protocol_file("config.schema.yaml").read_text())
    header = [
        "# meddap study config, written by `meddap init` from the paper's protocol (config/busi.yaml) with",
        "# this study's data folder, classes and base model. Every key the study uses is stated (each with",
        "# its schema description); nothing comes from the embedded default. Run it with:",
        f"#   {RUN_COMMAND.format(config=out)}",
        "#",
        *[f"# {line}" for line in data.lines()],
        *([f"# {line}" for line in model.lines()] if model else ["# base model: not given; SET base_model.path"]),
        "",
    ]
    lines: list[str] = []
    _render(schema, config, 0, lines)
    return "\n".join(header + lines) + "\n"


def init_study(data: str | Path, base_model: str | None, out: str | Path) -> tuple[Path, list[str]]:
    """Inspect, write ``out``; return it with the lines to print (summary, warnings, next command)."""
    summary = inspect_data(data)
    model = inspect_base_model(base_model) if base_model else None
    config = study_config(summary, base_model)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_study(config, summary, model, out))
    printed = summary.lines() + (model.lines() if model else [])
    printed += resolution_warnings(model, config) if model else []
    if not base_model:
        printed.append(f"warning: no --base-model: set base_model.path in {out} before running")
    printed += [f"wrote {out}", "next: " + RUN_COMMAND.format(config=quoted(out))]
    return out, printed
