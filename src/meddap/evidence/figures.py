"""Figures (matplotlib) and a self-contained HTML page for the report.

Every figure is a PNG written atomically; ``html_page`` embeds them (base64) with the tables so
the page opens anywhere, offline, without the results folder beside it.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from meddap.runtime.atomic import atomic_path, write_text
from meddap.settings.plan import ORIGINAL


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on compute nodes
    import matplotlib.pyplot as plt

    return plt


def _save(fig, target: str | Path) -> None:
    plt = _pyplot()
    with atomic_path(target) as temporary:
        fig.savefig(temporary, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def _variant_order(variants: Sequence[str]) -> list[str]:
    names = sorted(set(variants))
    return ([ORIGINAL] if ORIGINAL in names else []) + [v for v in names if v != ORIGINAL]


def plot_variant_scores(summary: pd.DataFrame, metric: str, target: str | Path) -> None:
    """One panel per (test set, arch): mean ± std over folds per variant, and the `original` line."""
    plt = _pyplot()
    part = summary[summary["metric"] == metric]
    panels = part[["test_set", "arch"]].drop_duplicates().itertuples(index=False)
    panels = list(panels)
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(4.2 * max(1, len(panels)), 3.6), squeeze=False)
    for ax, (test_set, arch) in zip(axes[0], panels):
        rows = part[(part["test_set"] == test_set) & (part["arch"] == arch)].set_index("variant")
        order = _variant_order(rows.index)
        means = rows.loc[order, "mean"].to_numpy(float)
        stds = np.nan_to_num(rows.loc[order, "std"].to_numpy(float))
        colours = ["#7f7f7f" if v == ORIGINAL else "#1f77b4" for v in order]
        ax.bar(range(len(order)), means, yerr=stds, color=colours, capsize=3)
        if ORIGINAL in rows.index:
            ax.axhline(rows.loc[ORIGINAL, "mean"], color="#d62728", linestyle="--", linewidth=1, label="original")
            ax.legend(loc="lower right", fontsize=7)
        ax.set_xticks(range(len(order)), order, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{test_set} · {arch}", fontsize=9)
        ax.set_ylabel(metric)
        ax.set_ylim(0, 1.05)
    if not panels:
        axes[0][0].text(0.5, 0.5, "no results", ha="center")
    fig.suptitle(f"{metric}: mean ± std over folds", fontsize=10)
    _save(fig, target)


def plot_robustness(errors: pd.DataFrame, target: str | Path) -> None:
    """Balanced error against severity, one panel per corruption, one line per variant (mean over folds)."""
    plt = _pyplot()
    corrupted = errors[errors["corruption"] != "clean"]
    corruptions = sorted(corrupted["corruption"].unique())
    columns = 4
    rows_n = max(1, math.ceil(len(corruptions) / columns))
    fig, axes = plt.subplots(rows_n, columns, figsize=(3.4 * columns, 2.8 * rows_n), squeeze=False)
    clean = errors[errors["corruption"] == "clean"].groupby("variant")["balanced_error"].mean()
    for ax, corruption in zip(axes.flat, corruptions):
        part = corrupted[corrupted["corruption"] == corruption]
        for variant in _variant_order(part["variant"]):
            curve = part[part["variant"] == variant].groupby("severity")["balanced_error"].mean()
            xs = [0, *curve.index.tolist()]
            ys = [clean.get(variant, np.nan), *curve.tolist()]
            style = {"color": "black", "linewidth": 2} if variant == ORIGINAL else {"linewidth": 1}
            ax.plot(xs, ys, marker="o", markersize=3, label=variant, **style)
        ax.set_title(corruption, fontsize=9)
        ax.set_xlabel("severity (0 = clean)", fontsize=8)
        ax.set_ylabel("balanced error", fontsize=8)
        ax.set_ylim(0, 1)
    for ax in list(axes.flat)[len(corruptions) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower right", fontsize=7)
    fig.suptitle("Robustness on corrupted copies of the internal test split (MedMNIST-C breast set)", fontsize=10)
    fig.tight_layout()
    _save(fig, target)


def plot_confusions(predictions: pd.DataFrame, classes: Sequence[str], target: str | Path) -> None:
    """Row-normalised confusion matrices per variant, summed over folds (columns: variant, class, predicted)."""
    from sklearn.metrics import confusion_matrix

    plt = _pyplot()
    variants = _variant_order(predictions["variant"])
    fig, axes = plt.subplots(1, max(1, len(variants)), figsize=(2.6 * max(1, len(variants)), 2.8), squeeze=False)
    for ax, variant in zip(axes[0], variants):
        part = predictions[predictions["variant"] == variant]
        matrix = confusion_matrix(part["class"], part["predicted"], labels=list(classes)).astype(float)
        matrix /= np.maximum(matrix.sum(1, keepdims=True), 1)
        ax.imshow(matrix, vmin=0, vmax=1, cmap="Blues")
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(
                    j,
                    i,
                    f"{matrix[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if matrix[i, j] > 0.5 else "black",
                )
        ax.set_xticks(range(len(classes)), classes, rotation=45, fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_title(variant, fontsize=8)
    axes[0][0].set_ylabel("true class", fontsize=8)
    fig.suptitle("Confusion matrices on the internal test split (rows: true class; all folds pooled)", fontsize=9)
    fig.tight_layout()
    _save(fig, target)


def plot_image_grid(
    real: pd.DataFrame, synthetic: pd.DataFrame, target: str | Path, per_cell: int = 2, size: int = 96
) -> None:
    """Rows: classes; columns: real images, then synthetic images of each adjective."""
    from meddap.data.images import load_array

    plt = _pyplot()
    classes = sorted(real["class"].unique())
    adjectives = sorted(synthetic["adjective"].unique()) if len(synthetic) else []
    columns = ["real", *adjectives]
    fig, axes = plt.subplots(
        len(classes), len(columns), figsize=(1.6 * per_cell * len(columns), 1.7 * len(classes)), squeeze=False
    )
    for r, cls in enumerate(classes):
        for c, column in enumerate(columns):
            pool = (
                real[real["class"] == cls]
                if column == "real"
                else synthetic[(synthetic["class"] == cls) & (synthetic["adjective"] == column)]
            )
            tiles = [load_array(path, size) for path in pool["path"].head(per_cell)]
            strip = np.concatenate(tiles, axis=1) if tiles else np.zeros((size, size * per_cell, 3), np.uint8)
            ax = axes[r][c]
            ax.imshow(strip)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(column, fontsize=8)
            if c == 0:
                ax.set_ylabel(cls, fontsize=8)
    fig.suptitle("Real training images next to synthetic images per adjective", fontsize=9)
    fig.tight_layout()
    _save(fig, target)


def plot_realism_examples(
    cls: str,
    real: np.ndarray,
    reconstructed: np.ndarray,
    synthetic: dict[str, np.ndarray],
    target: str | Path,
    size: int = 128,
) -> None:
    """One class: real training images, their VAE reconstructions and each generation mode's synthetic
    images (``synthetic``: mode -> images), one row each, every tile shown at the same size
    (nearest-neighbour, so no resampling hides or adds blur)."""
    from PIL import Image

    plt = _pyplot()
    rows = [("real", real), ("VAE reconstruction", reconstructed)]
    rows += [(mode, images) for mode, images in synthetic.items()] or [("(none generated)", real[:0])]
    columns = max(1, max(len(images) for _, images in rows))
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.5 * columns, 1.6 * len(rows)), squeeze=False)
    for r, (name, images) in enumerate(rows):
        for c in range(columns):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(images):
                tile = Image.fromarray(np.asarray(images[c], np.uint8)).resize((size, size), Image.Resampling.NEAREST)
                ax.imshow(np.asarray(tile))
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.suptitle(f"{cls}: real, its autoencoder round trip, synthetic per mode (same size)", fontsize=9)
    fig.tight_layout()
    _save(fig, target)


def _natural(names) -> list[str]:
    """fold2 before fold10."""
    return sorted(set(names), key=lambda name: (len(str(name)), str(name)))


def plot_lora_losses(losses: pd.DataFrame, target: str | Path) -> None:
    """One panel per LoRA (class, or shared), one line per arm: the loss per step, light, under its
    moving average over 5% of the steps (single steps' losses scatter with their random timesteps)."""
    plt = _pyplot()
    names = sorted(losses["lora"].unique()) if len(losses) else []
    arms = _natural(losses["arm"]) if len(losses) else []
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(4.2 * max(1, len(names)), 3.3), squeeze=False, sharey=True)
    window = 1
    for ax, name in zip(axes[0], names):
        for index, arm in enumerate(arms):
            curve = losses[(losses["lora"] == name) & (losses["arm"] == arm)].sort_values("step")
            if curve.empty:
                continue
            window = max(1, len(curve) // 20)
            colour = colours[index % len(colours)]
            ax.plot(curve["step"], curve["loss"], color=colour, alpha=0.2, linewidth=0.7)
            ax.plot(
                curve["step"],
                curve["loss"].rolling(window, min_periods=1).mean(),
                color=colour,
                linewidth=1.6,
                label=arm,
            )
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
    axes[0][0].set_ylabel("denoising loss (MSE)", fontsize=8)
    if names:
        axes[0][0].legend(fontsize=7)
    else:
        axes[0][0].text(0.5, 0.5, "no LoRA loss records", ha="center")
    fig.suptitle(
        f"LoRA training loss per step (dark: moving average over {window} steps; light: each step)", fontsize=10
    )
    fig.tight_layout()
    _save(fig, target)


def plot_lora_validation(validation: pd.DataFrame, target: str | Path, size: int = 96, max_columns: int = 8) -> None:
    """Rows: class x arm; columns: checkpoint steps (at most ``max_columns``, evenly spaced, always
    the last); each cell the validation images of that step side by side, the same seeds in every
    column, so a row shows how the LoRA's images changed while it trained."""
    from meddap.data.images import load_array

    plt = _pyplot()
    steps = sorted(validation["step"].unique()) if len(validation) else []
    if len(steps) > max_columns:
        steps = [steps[round(i * (len(steps) - 1) / (max_columns - 1))] for i in range(max_columns)]
    rows = (
        [
            (cls, arm)
            for cls in sorted(validation["class"].unique())
            for arm in _natural(validation.loc[validation["class"] == cls, "arm"])
        ]
        if len(validation)
        else []
    )
    per_cell = int(validation.groupby(["class", "arm", "step"]).size().max()) if len(validation) else 1
    fig, axes = plt.subplots(
        max(1, len(rows)),
        max(1, len(steps)),
        figsize=(max(4.0, 1.3 * per_cell * max(1, len(steps)) + 0.6), 1.4 * max(1, len(rows)) + 0.4),
        squeeze=False,
    )
    for r, (cls, arm) in enumerate(rows):
        for c, step in enumerate(steps):
            cell = validation[
                (validation["class"] == cls) & (validation["arm"] == arm) & (validation["step"] == step)
            ].sort_values(["prompt", "image"])
            tiles = [load_array(path, size) for path in cell["path"]]
            tiles += [np.full((size, size, 3), 255, np.uint8)] * (per_cell - len(tiles))
            gap = np.full((size, 2, 3), 255, np.uint8)  # a white line between the seeds' images
            ax = axes[r][c]
            ax.imshow(np.concatenate([part for tile in tiles for part in (tile, gap)][:-1], axis=1))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"step {step}", fontsize=8)
            if c == 0:
                ax.set_ylabel(f"{cls}\n{arm}", fontsize=8)
    if not rows:
        axes[0][0].text(0.5, 0.5, "no validation images (lora.validation.images: 0)", ha="center")
        axes[0][0].axis("off")
    fig.suptitle("LoRA validation images per checkpoint (same seeds in every column)", fontsize=9)
    fig.tight_layout()
    _save(fig, target)


def benchmark_runtimes(benchmark_files: Sequence[str | Path], root: str | Path) -> pd.DataFrame:
    """Per-rule job count and wall seconds (sum, mean, max) from Snakemake's benchmark TSVs."""
    rows = []
    root = Path(root)
    for path in benchmark_files:
        path = Path(path)
        try:
            table = pd.read_csv(path, sep="\t")
        except (pd.errors.EmptyDataError, pd.errors.ParserError):
            continue  # a benchmark being written right now
        rule = path.relative_to(root).parts[0].removesuffix(".tsv")
        rows.append(
            {
                "rule": rule,
                "seconds": float(table["s"].iloc[0]),
                "max_rss_mb": float(table["max_rss"].iloc[0]) if "max_rss" in table else math.nan,
            }
        )
    frame = pd.DataFrame(rows, columns=["rule", "seconds", "max_rss_mb"])
    out = frame.groupby("rule").agg(
        jobs=("seconds", "size"), total_s=("seconds", "sum"), mean_s=("seconds", "mean"), max_s=("seconds", "max")
    )
    return out.reset_index().sort_values("total_s", ascending=False, kind="stable")


def plot_runtimes(runtimes: pd.DataFrame, target: str | Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 0.35 * max(3, len(runtimes)) + 1))
    ax.barh(runtimes["rule"], runtimes["total_s"], color="#2ca02c")
    for y, (total, jobs) in enumerate(zip(runtimes["total_s"], runtimes["jobs"])):
        ax.text(total, y, f" {total:.0f} s / {jobs} jobs", va="center", fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("wall seconds, summed over jobs (from the benchmark files)")
    ax.set_title("Run time per rule", fontsize=10)
    _save(fig, target)


# --------------------------------------------------------------------------- HTML page


def _table(frame: pd.DataFrame, digits: int = 3, limit: int = 400) -> str:
    if frame.empty:
        return "<p><em>none</em></p>"
    shown = frame.head(limit)
    formatted = shown.map(
        lambda v: (
            f"{v:.{digits}f}"
            if isinstance(v, float) and not math.isnan(v)
            else ("" if isinstance(v, float) else html.escape(str(v)))
        )
    )
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>" for row in formatted.itertuples(index=False)
    )
    more = f"<p><em>{len(frame) - limit} more rows in the CSV</em></p>" if len(frame) > limit else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def html_page(
    target: str | Path, title: str, sections: Sequence[tuple[str, str, Sequence[str | Path], Sequence[pd.DataFrame]]]
) -> None:
    """A self-contained page: sections of (heading, text, figure PNGs, tables), images inlined.

    After loading, the page records in ``<body data-images-loaded=N data-images-total=M>`` how
    many of its images the browser decoded (the report test reads it from headless Chromium).
    """
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}"
        "table{border-collapse:collapse;font-size:12px;margin:0.5em 0}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#eee}"
        "img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}</style>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for heading, text, figures, tables in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if text:
            parts.append(f"<p>{html.escape(text)}</p>")
        for figure in figures:
            data = base64.b64encode(Path(figure).read_bytes()).decode("ascii")
            parts.append(f"<img alt='{html.escape(Path(figure).stem)}' src='data:image/png;base64,{data}'>")
        for table in tables:
            parts.append(_table(table))
    parts.append(
        "<script>window.addEventListener('load',function(){var imgs=document.images,n=0;"
        "for(var i=0;i<imgs.length;i++){if(imgs[i].complete&&imgs[i].naturalWidth>0)n++;}"
        "document.body.setAttribute('data-images-loaded',n);document.body.setAttribute('data-images-total',imgs.length);});</script>"
    )
    parts.append("</body></html>")
    write_text(target, "\n".join(parts))
