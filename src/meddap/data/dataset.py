"""Index a folder of class subfolders and split it: held-out test + stratified folds."""

from __future__ import annotations

import fnmatch
import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd

from meddap.data.images import IMAGE_EXTENSIONS
from meddap.provenance.lineage import DigestCache, entries_digest, file_digest, file_entries, read_lineage
from meddap.runtime.seeding import derive_seed
from meddap.settings.choices import MIXED_LABEL_GROUPS
from meddap.settings.kinds import TEST_SPLIT, TRAIN_SPLIT

MANIFEST_COLUMNS = ["path", "class", "split", "fold", "group"]


class DatasetError(ValueError):
    """The dataset on disk does not fit what the config says; the message says what to do."""


def _image_like(path: Path, exclude: list[str]) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not any(fnmatch.fnmatch(path.name, p) for p in exclude)


def _holds_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir() if p.is_file())


def suggest_root(root: str | Path, classes: list[str] | None) -> Path | None:
    """A folder below ``root`` (one or two levels) that would work as dataset.root: it holds the
    classes' folders (or, ``classes`` None, at least two subfolders of images). For a root one
    level too high (``root/Dataset_BUSI_with_GT/<class>/``)."""
    root = Path(root)
    if not root.is_dir():
        return None
    levels = [sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))]
    levels.append(
        sorted(d for parent in levels[0] for d in parent.iterdir() if d.is_dir() and not d.name.startswith("."))
    )
    for level in levels:
        for candidate in level:
            subfolders = [d for d in candidate.iterdir() if d.is_dir() and not d.name.startswith(".")]
            if classes is not None:
                if all((candidate / name).is_dir() and _holds_images(candidate / name) for name in classes):
                    return candidate
            elif sum(1 for d in subfolders if _holds_images(d)) >= 2:
                return candidate
    return None


def _root_hint(root: Path, classes: list[str] | None) -> str:
    found = suggest_root(root, classes)
    return f" {str(found)!r} holds the class folders: set dataset.root to it." if found else ""


def _unusable_files(folder: Path, exclude: list[str]) -> list[str]:
    """Image-named entries that cannot be read as images: dangling links and zero-byte files."""
    problems = []
    for path in sorted(folder.iterdir()):
        if not _image_like(path, exclude):
            continue
        if path.is_symlink() and not path.exists():
            problems.append(f"{str(path)!r} is a link to a missing file ({os.readlink(path)})")
        elif path.is_file() and path.stat().st_size == 0:
            problems.append(f"{str(path)!r} is empty (0 bytes)")
    return problems


def list_class_images(root: str | Path, classes: list[str] | None, exclude: list[str]) -> dict[str, list[str]]:
    """Map class -> sorted image paths under ``root/<class>/`` (exclude patterns match file names).

    ``classes`` None means every subfolder of ``root``. Errors name the path and the remedy; a
    dangling link or an empty file named like an image is an error, not skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"dataset.root {str(root)!r} does not exist or is not a folder. Set dataset.root in "
            "your config to a folder with one subfolder of images per class."
        )
    if classes is None:
        classes = sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
        if not classes:
            raise DatasetError(
                f"dataset.root {str(root)!r} has no class subfolders. Put the images of each class "
                "in a subfolder named after the class (e.g. benign/, malignant/, normal/)."
            )
        if not any(_holds_images(root / name) for name in classes):
            raise DatasetError(
                f"dataset.root {str(root)!r}: none of its subfolders {classes} holds images.{_root_hint(root, None)}"
            )
    found: dict[str, list[str]] = {}
    for name in classes:
        folder = root / name
        if not folder.is_dir():
            hint = _root_hint(root, classes) or f" Create it or remove {name!r} from dataset.classes."
            raise DatasetError(f"class folder {str(folder)!r} is missing.{hint}")
        problems = _unusable_files(folder, exclude)
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise DatasetError(
                f"class folder {str(folder)!r}: {'; '.join(problems[:3])}{more}. "
                "Restore or remove them (or match them with dataset.exclude)."
            )
        files = sorted(str(path) for path in folder.iterdir() if path.is_file() and _image_like(path, exclude))
        if not files:
            raise DatasetError(
                f"class folder {str(folder)!r} holds no images ({'/'.join(IMAGE_EXTENSIONS)}, "
                f"excluding {exclude}). Add images or remove {name!r} from dataset.classes."
            )
        found[name] = files
    return found


# The state of a simulated dataset folder exactly as its rule wrote it (``dataset_state``).
AS_SIMULATED = "as simulated"


def dataset_index(
    root: str | Path, classes: list[str] | None, exclude: list[str], cache: DigestCache | None = None
) -> list[dict]:
    """What the split reads from ``root``: every class image (as ``list_class_images`` finds them)
    as {path relative to root, sha256}, so a renamed, added, removed or changed image shows."""
    root = Path(root)
    return [
        {"path": Path(path).relative_to(root).as_posix(), "sha256": _readable_digest(path, cache)}
        for paths in list_class_images(root, classes, exclude).values()
        for path in paths
    ]


def _readable_digest(path: str, cache: DigestCache | None) -> str:
    try:
        return file_digest(path, cache)
    except OSError as error:
        raise DatasetError(
            f"{path!r} cannot be read ({error.strerror or error}): fix its permissions or remove it"
        ) from None


def dataset_digest(
    root: str | Path, classes: list[str] | None, exclude: list[str], cache: DigestCache | None = None
) -> str:
    """One sha256 of the dataset's class images: their relative paths (so their classes) and contents."""
    return entries_digest(dataset_index(root, classes, exclude, cache))


def dataset_state(
    root: str | Path,
    classes: list[str] | None,
    exclude: list[str],
    cache: DigestCache | None = None,
    simulated: bool = False,
) -> str:
    """The split's view of ``dataset.root`` as one string for its params: the digest of its images.

    A folder that a rule simulates (``simulated``) is ``AS_SIMULATED`` while it does not exist yet
    (parse time of the first run) and while its files are exactly those its lineage.json records
    (kind ``phantom``), so the value does not change when the rule writes it; an edited, renamed,
    added or removed image there turns it into the digest, as for a dataset of your own.
    """
    root = Path(root)
    if simulated and not root.exists():
        return AS_SIMULATED
    if simulated:
        record = read_lineage(root)
        if record and record.get("kind") == "phantom":
            if entries_digest(file_entries(root, cache, own_record=False)) == entries_digest(record["files"]):
                return AS_SIMULATED
    return dataset_digest(root, classes, exclude, cache)


def split_counts(n_images: int, test_fraction: float) -> tuple[int, int]:
    """(test, train) counts for a class of ``n_images``: the same formula the DAG plans with."""
    n_test = int(round(n_images * test_fraction))
    if test_fraction > 0:
        n_test = max(1, n_test)
    return n_test, n_images - n_test


MIXED_LABEL_ACTIONS = MIXED_LABEL_GROUPS
DROPPED = "dropped"


def make_split(
    class_images: dict[str, list[str]],
    test_fraction: float,
    folds: int,
    seed: int,
    groups: dict[str, int] | None = None,
    mixed_label_groups: str = "keep",
) -> pd.DataFrame:
    """Stratified, seeded split: per class a held-out test share, then ``folds`` folds.

    ``groups`` (path -> group id, e.g. from ``meddap.data.near_duplicates``, formed over every class)
    keeps the images of one group on one side of the test split and in one fold, so no near-copy
    of a test or validation image trains the model. A group whose images carry different labels
    (the same scan filed under two classes) is, with ``mixed_label_groups`` "keep", kept whole in
    the training split and in one fold (never in the test split), or with "drop" left out
    (split "dropped"). The test share per class stays exactly the planned count. Deterministic:
    depends only on the sorted file lists, the fractions, the groups and the seed.

    Columns: path, class, split (train/test/dropped), fold (-1 outside training), group.
    """
    if mixed_label_groups not in MIXED_LABEL_ACTIONS:
        raise ValueError(f"dataset.mixed_label_groups {mixed_label_groups!r}: use one of {MIXED_LABEL_ACTIONS}")
    group_of = _group_ids(class_images, groups)
    labels: dict[int, set[str]] = {}
    for name, paths in class_images.items():
        for path in paths:
            labels.setdefault(group_of[path], set()).add(name)
    mixed = {group for group, names in labels.items() if len(names) > 1}

    rows = []
    fold_sizes = {name: [0] * folds for name in class_images}
    mixed_members: dict[int, list[tuple[str, str]]] = {}
    for name in sorted(class_images):
        for path in sorted(class_images[name]):
            if group_of[path] in mixed:
                mixed_members.setdefault(group_of[path], []).append((path, name))
    for group in sorted(mixed_members, key=lambda g: min(mixed_members[g])):
        members = mixed_members[group]
        if mixed_label_groups == "drop":
            rows.extend((path, name, DROPPED, -1) for path, name in members)
            continue
        # Whole group into the fold with the fewest images of the classes it holds.
        names = sorted({name for _, name in members})
        fold = min(range(folds), key=lambda k: (sum(fold_sizes[n][k] for n in names), k))
        for path, name in members:
            fold_sizes[name][fold] += 1
            rows.append((path, name, TRAIN_SPLIT, fold))

    for name in sorted(class_images):
        paths = sorted(class_images[name])
        n_test, n_train = split_counts(len(paths), test_fraction)
        if n_train < folds:
            raise DatasetError(
                f"class {name!r} has {len(paths)} images: {n_train} left for training after the "
                f"test split is fewer than dataset.folds={folds}. Add images or lower dataset.folds."
            )
        members: dict[int, list[str]] = {}
        for path in paths:
            if group_of[path] not in mixed:
                members.setdefault(group_of[path], []).append(path)
        # Groups in order of their first image (dict insertion order), then shuffled: without
        # near-duplicates this is exactly a permutation of the images.
        units = list(members.values())
        order = [units[i] for i in np.random.default_rng(derive_seed(seed, "split", name)).permutation(len(units))]
        test_units = _exact_subset(order, n_test)
        if test_units is None:
            raise DatasetError(
                f"class {name!r}: its near-duplicate groups "
                f"(sizes {sorted((len(u) for u in units), reverse=True)[:5]}...) "
                f"cannot fill a test split of exactly {n_test} images. Change dataset.test_fraction or lower "
                "dataset.near_duplicate_distance."
            )
        sizes = fold_sizes[name]
        for position, unit in enumerate(order):
            if position in test_units:
                rows.extend((path, name, TEST_SPLIT, -1) for path in unit)
                continue
            fold = sizes.index(min(sizes))  # the smallest fold (lowest index on ties)
            sizes[fold] += len(unit)
            rows.extend((path, name, TRAIN_SPLIT, fold) for path in unit)
        if min(sizes) == 0:
            raise DatasetError(
                f"class {name!r}: a fold has no training images (near-duplicate groups too large); lower dataset.folds."
            )
    frame = pd.DataFrame(rows, columns=["path", "class", "split", "fold"])
    frame["group"] = [group_of[path] for path in frame["path"]]
    return frame.sort_values(["class", "split", "fold", "path"], kind="stable").reset_index(drop=True)[MANIFEST_COLUMNS]


def _group_ids(class_images: dict[str, list[str]], groups: dict[str, int] | None) -> dict[str, int]:
    """Every image's group id: the given one, else a singleton id of its own (negative)."""
    every = [path for name in sorted(class_images) for path in sorted(class_images[name])]
    return {path: (groups[path] if groups and path in groups else -1 - index) for index, path in enumerate(every)}


def _exact_subset(units: list[list[str]], target: int) -> set[int] | None:
    """Positions of units whose sizes sum to exactly ``target``: greedily in the given (random)
    order, else by subset-sum over the sizes; None when no subset does."""
    chosen, remaining = set(), target
    for position, unit in enumerate(units):
        if len(unit) <= remaining:
            chosen.add(position)
            remaining -= len(unit)
    if remaining == 0:
        return chosen
    reachable: dict[int, tuple[int, ...]] = {0: ()}  # sum -> positions reaching it
    for position, unit in enumerate(units):
        for total, picked in list(reachable.items()):
            new_total = total + len(unit)
            if new_total <= target and new_total not in reachable:
                reachable[new_total] = (*picked, position)
        if target in reachable:
            return set(reachable[target])
    return None


def find_cross_class_duplicates(class_images: dict[str, list[str]]) -> list[tuple[str, str]]:
    """Pairs of byte-identical files filed under two different classes."""
    first_seen: dict[str, tuple[str, str]] = {}
    clashes = []
    for name, paths in class_images.items():
        for path in paths:
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            if digest in first_seen and first_seen[digest][0] != name:
                clashes.append((first_seen[digest][1], path))
            first_seen.setdefault(digest, (name, path))
    return clashes


def check_images(paths: list[str], min_size: int | None = None, log=None) -> list[str]:
    """Open every image once (fail early, naming the file); return warnings for small images.

    Any PIL mode is fine (16-bit grey, RGBA, palette, CMYK are converted when loaded); a corrupt
    or truncated file raises ImageReadError. Images smaller than ``min_size`` are upsampled
    later, which is allowed but worth knowing.
    """
    from tqdm import tqdm

    from meddap.data.images import load_rgb

    warnings = []
    for path in tqdm(paths, desc="check images", mininterval=5):
        image = load_rgb(path)
        if min_size and min(image.size) < min_size:
            warnings.append(
                f"{path} is {image.size[0]}x{image.size[1]}, smaller than the model resolution {min_size}: "
                "it will be upsampled"
            )
    return warnings


def index_test_set(root: str | Path, known_classes: list[str], exclude: list[str]) -> pd.DataFrame:
    """Index an unseen test set (class subfolders or a CSV of path,class); classes may be a subset."""
    root = Path(root)
    if root.is_file() and root.suffix.lower() == ".csv":
        frame = pd.read_csv(root)
        missing = {"path", "class"} - set(frame.columns)
        if missing:
            raise DatasetError(f"unseen test set {str(root)!r} lacks column(s) {sorted(missing)}; it needs path,class.")
        frame["path"] = [str((root.parent / p) if not Path(p).is_absolute() else p) for p in frame["path"]]
    else:
        present = (
            sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
            if root.is_dir()
            else None
        )
        if present is None:
            raise DatasetError(
                f"unseen test set {str(root)!r} does not exist. Fix its path in the config's unseen list."
            )
        images = list_class_images(root, present, exclude)
        frame = pd.DataFrame([(p, c) for c, paths in images.items() for p in paths], columns=["path", "class"])
    if frame.empty:
        raise DatasetError(f"unseen test set {str(root)!r} holds no images; fill it or remove it from the unseen list.")
    unknown = sorted(set(frame["class"]) - set(known_classes))
    if unknown:
        raise DatasetError(
            f"unseen test set {str(root)!r} has class(es) {unknown} that the classifiers were not "
            f"trained on ({known_classes}). Remove or rename them."
        )
    return frame[["path", "class"]].sort_values(["class", "path"]).reset_index(drop=True)


def check_unseen_is_apart(name: str, frame: pd.DataFrame, manifest: pd.DataFrame, max_distance: int) -> None:
    """Refuse an unseen set holding a near-duplicate (``max_distance`` perceptual-hash bits; -1: off) of
    a dataset image: it would be a test on images the classifiers (or their LoRAs) trained on."""
    from meddap.data.near_duplicates import hamming_distances, hash_images, hashes_from_hex

    if max_distance < 0 or frame.empty or manifest.empty:
        return
    reference = hashes_from_hex(manifest["phash"])
    distances = hamming_distances(hash_images(list(frame["path"])), reference)
    nearest = distances.argmin(axis=1)
    close = np.flatnonzero(distances.min(axis=1) <= max_distance)
    if len(close):
        first = close[0]
        raise DatasetError(
            f"unseen set {name!r}: {len(close)} image(s) within {max_distance} hash bits of a dataset image, e.g. "
            f"{frame['path'].iloc[first]} ~ {manifest['path'].iloc[nearest[first]]}; remove them from the unseen "
            "set (they are not unseen), or lower dataset.near_duplicate_distance"
        )
