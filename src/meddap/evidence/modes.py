"""The generation modes compared with each other at equal counts (issue 28, item 3): text-to-image,
guided, each filtered (generation.filter), and classic variants of one ratio, paired fold by fold
(``meddap.evidence.stats.paired_test``), Holm-adjusted within each (test set, metric) family of these
comparisons. Each mode against ``original`` is ``meddap.evidence.stats.summarise``'s."""

from __future__ import annotations

import pandas as pd

from meddap.evidence.stats import adjust_comparisons, fold_values, paired_test, variant_data
from meddap.settings.plan import ADJECTIVE, CLASSIC, GUIDED, MIXED

TEXT_TO_IMAGE_MODE = "text-to-image"
FILTERED_SUFFIX = " filtered"
# The modes compared at equal counts, each against the ones after it (guided vs text-to-image,
# guided vs classic, text-to-image vs classic; a filtered mode against its unfiltered one too).
MODE_ORDER = (
    GUIDED + FILTERED_SUFFIX,
    GUIDED,
    TEXT_TO_IMAGE_MODE + FILTERED_SUFFIX,
    TEXT_TO_IMAGE_MODE,
    CLASSIC,
)
MODE_COLUMNS = ["ratio", "mode", "baseline_mode", "variant", "baseline", "arch", "test_set", "metric"]


def mode_variants(metrics: pd.DataFrame) -> dict[float, dict[str, str]]:
    """ratio -> {mode: variant} of the generation modes run at that ratio: text-to-image (the
    mixed variant; without one, the adjective variant when it is the ratio's only one), guided,
    each of them filtered (mode "<mode> filtered"), and classic. Found by family, ratio and the
    filtered flag, never by name."""
    families = variant_data(metrics)
    modes: dict[float, dict[str, str]] = {}
    for ratio, group in families.groupby("ratio", sort=True):
        found = {}
        for filtered, part in group.groupby(group["filtered"].astype(bool)):
            suffix = FILTERED_SUFFIX if filtered else ""
            by_family = {family: list(names.index) for family, names in part.groupby("family")}
            text = by_family.get(MIXED) or (by_family[ADJECTIVE] if len(by_family.get(ADJECTIVE, [])) == 1 else [])
            if text:
                found[TEXT_TO_IMAGE_MODE + suffix] = text[0]
            for family in (GUIDED, CLASSIC):
                if by_family.get(family):
                    found[family + suffix] = by_family[family][0]
        if found:
            modes[float(ratio)] = found
    return modes


def mode_comparisons(metrics: pd.DataFrame, method: str = "holm") -> pd.DataFrame:
    """The generation modes against each other at equal counts (issue 28, item 3): per ratio, every
    pair of the modes run (``mode_variants``), paired fold by fold (replicates averaged within a
    fold) per arch, test set and metric, with ``paired_test``'s columns and ``p_t_adj``, adjusted
    (``method``) within each (test set, metric) family of these comparisons. Their comparisons with
    ``original`` are ``summarise``'s."""
    keys = ["variant", "arch", "test_set", "metric"]
    series = {key: fold_values(group) for key, group in metrics.groupby(keys, sort=False)}
    rows = []
    for ratio, modes in mode_variants(metrics).items():
        present = [mode for mode in MODE_ORDER if mode in modes]
        for i, mode in enumerate(present):
            for baseline_mode in present[i + 1 :]:
                variant, baseline = modes[mode], modes[baseline_mode]
                for (name, arch, test_set, metric), values in series.items():
                    if name != variant or (baseline, arch, test_set, metric) not in series:
                        continue
                    joined = pd.concat(
                        [values.rename("v"), series[(baseline, arch, test_set, metric)].rename("b")],
                        axis=1,
                        join="inner",
                    )
                    result = paired_test(joined["v"].to_numpy(), joined["b"].to_numpy())
                    rows.append(
                        dict(zip(MODE_COLUMNS, (ratio, mode, baseline_mode, variant, baseline, arch, test_set, metric)))
                        | result
                    )
    columns = [*MODE_COLUMNS, "delta", "delta_ci_low", "delta_ci_high", "p_t", "p_wilcoxon", "n_pairs"]
    table = pd.DataFrame(rows, columns=columns)
    return adjust_comparisons(table, ["test_set", "metric"], ["p_t"], method)
