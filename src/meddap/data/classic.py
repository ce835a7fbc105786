"""The classic-augmentation baseline: as many extra images per class as a synthetic variant adds,
made by standard intensity/geometry transforms (torchvision) of original training images.

"Synthetic images help" is only interesting if they beat this equal-count baseline. Augmented
copies are made per cross-validation fold from the images that train that fold, so no copy of a
validation image ever trains the model that it validates. Images are written once per fold (the
largest ratio's count per class); a smaller ratio takes the first images, like the shards.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from meddap.runtime.seeding import derive_seed

CLASSIC_COLUMNS = ["file", "class", "source_path", "index", "seed"]


def classic_transform():
    """Flip, small rotation/translation/scale, brightness/contrast jitter and occasional blur:
    what a classifier's standard augmentation pipeline does to an ultrasound image."""
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.RandomAffine(degrees=10, translate=(0.06, 0.06), scale=(0.9, 1.1)),
            v2.ColorJitter(brightness=0.25, contrast=0.25),
            v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.3, 1.2))], p=0.3),
        ]
    )


def classic_sources(manifest: pd.DataFrame, fold: int, cls: str, seed: int, count: int) -> list[str]:
    """``count`` source images of ``cls`` for ``fold``: its training originals (not the fold's
    validation images), each used once per round in a seeded order, so copies spread evenly."""
    pool = sorted(
        manifest.loc[(manifest["split"] == "train") & (manifest["class"] == cls) & (manifest["fold"] != fold), "path"]
    )
    if not pool:
        raise ValueError(f"class {cls!r} has no training images outside fold {fold}")
    sources: list[str] = []
    rounds = 0
    while len(sources) < count:
        order = np.random.default_rng(derive_seed(seed, "classic-order", cls, fold, rounds)).permutation(len(pool))
        sources += [pool[i] for i in order]
        rounds += 1
    return sources[:count]


def write_classic_images(
    manifest: pd.DataFrame, fold: int, counts: dict[str, int], seed: int, out_dir: str | Path
) -> pd.DataFrame:
    """Write ``counts[cls]`` augmented PNGs per class into ``out_dir/<class>/`` plus metadata.csv.

    Each image's seed derives from (seed, class, fold, index), so a folder regenerates identically.
    The caller makes ``out_dir`` atomic. Returns the metadata table.
    """
    import torch
    from tqdm import tqdm

    from meddap.data.images import load_rgb

    out_dir = Path(out_dir)
    transform = classic_transform()
    rows = []
    for cls, count in counts.items():
        (out_dir / cls).mkdir(parents=True, exist_ok=True)
        for index, source in enumerate(
            tqdm(classic_sources(manifest, fold, cls, seed, count), desc=f"classic {cls}", mininterval=5)
        ):
            image_seed = derive_seed(seed, "classic", cls, fold, index)
            torch.manual_seed(image_seed)  # torchvision's random transforms draw from torch's global RNG
            image = transform(load_rgb(source))
            file = f"{cls}/classic_{index:05d}.png"
            image.save(out_dir / file)
            rows.append((file, cls, source, index, image_seed))
    metadata = pd.DataFrame(rows, columns=CLASSIC_COLUMNS)
    metadata.to_csv(out_dir / "metadata.csv", index=False)
    from meddap.provenance.lineage import write_lineage

    write_lineage(out_dir, "classic", images=sorted(set(metadata["source_path"])), fold=fold)
    return metadata


def read_classic(folders: list[str | Path]) -> pd.DataFrame:
    """Metadata of classic-augmentation folders (``.../fold<k>``) with absolute paths and the fold."""
    frames = []
    for folder in map(Path, folders):
        table = pd.read_csv(folder / "metadata.csv")
        table["path"] = [str(folder / file) for file in table["file"]]
        missing = [path for path in table["path"] if not Path(path).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{missing[0]} is listed in {folder / 'metadata.csv'} but missing ({len(missing)} of {len(table)}): "
                f"regenerate the folder with snakemake --cores all --forcerun {folder}"
            )
        table["fold"] = int(folder.name.removeprefix("fold"))
        frames.append(table)
    if not frames:
        return pd.DataFrame(columns=[*CLASSIC_COLUMNS, "path", "fold"])
    return pd.concat(frames, ignore_index=True)
