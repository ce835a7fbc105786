import math

import pandas as pd
import pytest

from meddap.data.merge import effective_expansion_ratio, expansion_table, fold_rows, merge_fold
from meddap.settings.plan import Plan


@pytest.fixture
def plan():
    return Plan(
        classes=["benign", "normal"],
        train_counts={"benign": 30, "normal": 13},
        adjectives=["none", "bright", "dark"],
        ratios=[0.5, 1.0, 2.0],
        shard_size=8,
    )


def fake_inputs(plan):
    manifest = []
    for cls, n in plan.train_counts.items():
        manifest += [(f"{cls}/{i}.png", cls, "train", i % 3) for i in range(n)]
        manifest += [(f"{cls}/t{i}.png", cls, "test", -1) for i in range(5)]
    manifest = pd.DataFrame(manifest, columns=["path", "class", "split", "fold"])
    synthetic = []
    for cls, adjective, shard in plan.all_shards():
        for index in range(plan.shard_sizes(cls)[shard]):
            synthetic.append(
                (f"syn/{cls}/{adjective}/{shard}/{index}.png", cls, adjective, "p", 1000 * shard + index, shard, index)
            )
    synthetic = pd.DataFrame(synthetic, columns=["path", "class", "adjective", "prompt", "seed", "shard", "index"])
    return manifest, synthetic


def test_variant_names(plan):
    names = [v.name for v in plan.variants()]
    assert names[0] == "original"
    assert "bright_x0.5" in names and "dark_x2" in names and "mixed_x1" in names
    assert len(names) == 1 + 3 * 3 + 3


def test_generation_covers_the_largest_ratio_once(plan):
    # Nested ratios: 2x the class count is generated per adjective, not 0.5 + 1 + 2 = 3.5x.
    for cls, n in plan.train_counts.items():
        assert plan.images_per_adjective(cls) == 2 * n
        assert sum(plan.shard_sizes(cls)) == 2 * n
        assert all(size <= plan.shard_size for size in plan.shard_sizes(cls))


def test_mixed_variants_alone_generate_only_their_share_of_each_adjective():
    # Without the per-adjective family, mixed_x2 takes ceil(2n / 3) images of an adjective at most.
    plan = Plan(
        classes=["benign", "normal"],
        train_counts={"benign": 30, "normal": 13},
        adjectives=["none", "bright", "dark"],
        ratios=[0.5, 1.0, 2.0],
        shard_size=8,
        families=("mixed",),
    )
    manifest, synthetic = fake_inputs(plan)
    for cls, n in plan.train_counts.items():
        assert plan.images_per_adjective(cls) == -(-2 * n // 3)
        assert plan.max_synthetic_count(cls) == 2 * n
    for variant in plan.variants()[1:]:
        merged = merge_fold(manifest, 0, plan, variant, synthetic)
        added = merged[merged["path"].str.startswith("syn/")]
        for cls in plan.train_counts:
            assert (added["class"] == cls).sum() == plan.synthetic_count(cls, variant.ratio), (variant.name, cls)


def test_smaller_ratios_are_nested_subsets(plan):
    manifest, synthetic = fake_inputs(plan)
    for family in ("bright", "mixed"):
        previous = set()
        for ratio in ("x0.5", "x1", "x2"):
            rows = merge_fold(manifest, 1, plan, plan.variant(f"{family}_{ratio}"), synthetic)
            current = set(rows.loc[rows["source"] == "synthetic", "path"])
            assert previous <= current
            previous = current
        assert len(previous) == 2 * sum(plan.train_counts.values())


def test_counts_and_mixed_draws_adjectives_evenly(plan):
    manifest, synthetic = fake_inputs(plan)
    rows = merge_fold(manifest, 2, plan, plan.variant("mixed_x1"), synthetic)
    benign = rows[(rows["source"] == "synthetic") & (rows["class"] == "benign")]
    assert len(benign) == 30
    assert benign["adjective"].value_counts().to_dict() == {"none": 10, "bright": 10, "dark": 10}
    normal = rows[(rows["source"] == "synthetic") & (rows["class"] == "normal")]
    assert sorted(normal["adjective"].value_counts().tolist()) == [4, 4, 5]


def test_synthetic_rows_never_reach_validation_or_test(plan):
    manifest, synthetic = fake_inputs(plan)
    folds = manifest.set_index("path")["fold"]
    for fold in range(3):
        rows = merge_fold(manifest, fold, plan, plan.variant("dark_x2"), synthetic)
        assert not rows["path"].isin(manifest.loc[manifest["split"] == "test", "path"]).any()
        train, validation = fold_rows(rows)
        assert (validation["source"] == "original").all()
        assert (folds[validation["path"]] == fold).all()
        assert len(validation) == int(((manifest["split"] == "train") & (manifest["fold"] == fold)).sum())
        assert set(train["path"]).isdisjoint(validation["path"])
        assert (folds[train.loc[train["source"] == "original", "path"]] != fold).all()
        added = train[train["source"] == "synthetic"]
        assert len(added) == 2 * 43
        # Each synthetic row names the shard it came from (the lineage audit walks it).
        assert all(path.startswith(shard + "/") for path, shard in zip(added["path"], added["derived_from"]))


def test_shards_for_lists_only_used_shards(plan):
    assert plan.shards_for(plan.variant("original")) == []
    used = plan.shards_for(plan.variant("bright_x0.5"))
    assert used == [("benign", "bright", 0), ("benign", "bright", 1), ("normal", "bright", 0)]
    assert set(plan.shards_for(plan.variant("bright_x2"))) == {s for s in plan.all_shards() if s[1] == "bright"}


def test_a_merge_reads_only_its_variants_part_of_the_plan(plan):
    """merge_dataset's params are Plan.for_variant: the same rows as with the whole plan, and
    unchanged by an adjective or ratio that the variant does not use."""
    import dataclasses

    manifest, synthetic = fake_inputs(plan)
    for variant in plan.variants():
        whole = merge_fold(manifest, 1, plan, variant, synthetic)
        assert whole.equals(merge_fold(manifest, 1, plan.for_variant(variant), variant, synthetic)), variant.name
    more = dataclasses.replace(plan, adjectives=[*plan.adjectives, "sheared"], ratios=[*plan.ratios, 3.0])
    for name in ("bright_x1", "original"):
        assert more.for_variant(more.variant(name)) == plan.for_variant(plan.variant(name))
    assert more.for_variant(more.variant("mixed_x1")) != plan.for_variant(plan.variant("mixed_x1"))  # draws from all


def test_not_enough_synthetic_images_is_a_clear_error(plan):
    manifest, synthetic = fake_inputs(plan)
    with pytest.raises(ValueError, match="needs 60 synthetic benign/dark"):
        merge_fold(manifest, 0, plan, plan.variant("dark_x2"), synthetic[synthetic["index"] < 2])


def test_effective_expansion_ratio_counts_the_fold_training_originals(plan):
    manifest, synthetic = fake_inputs(plan)  # folds i % 3: benign 10/10/10, normal 5/4/4 of 30 and 13
    tables = {
        (v, fold): merge_fold(manifest, fold, plan, plan.variant(v), synthetic)
        for v in ("original", "bright_x1")
        for fold in (0, 1)
    }
    table = expansion_table(tables).set_index(["variant", "fold", "class"])
    row = table.loc[("bright_x1", 0, "benign")]
    assert (row["n_original_train"], row["n_synthetic"], row["n_added"]) == (20, 30, 30)  # fold 0's 10 validate
    assert row["effective_ratio"] == pytest.approx(1.5)
    assert table.loc[("bright_x1", 0, "normal"), "effective_ratio"] == pytest.approx(13 / 8)  # 13 - 5 in fold 0
    assert table.loc[("bright_x1", 1, "normal"), "effective_ratio"] == pytest.approx(13 / 9)  # 13 - 4 in fold 1
    assert table.loc[("original", 1, "normal"), "n_added"] == 0
    assert table.loc[("original", 1, "normal"), "effective_ratio"] == 0.0
    classic = pd.DataFrame(
        {
            "class": ["a"] * 6,
            "source": ["original"] * 4 + ["classic"] * 2,
            "role": ["train", "train", "train", "validation", "train", "train"],
        }
    )
    row = expansion_table({("classic_x1", 0): classic}).iloc[0]
    assert (row["n_original_train"], row["n_classic"], row["n_synthetic"]) == (3, 2, 0)
    assert row["effective_ratio"] == pytest.approx(2 / 3)
    assert effective_expansion_ratio(5, 10) == 0.5 and math.isnan(effective_expansion_ratio(0, 0))
    with pytest.raises(ValueError):
        effective_expansion_ratio(-1, 3)


def test_guided_variants_have_shards_of_their_own_drawn_evenly_over_adjectives(plan):
    guided = Plan(
        plan.classes, plan.train_counts, plan.adjectives, plan.ratios, plan.shard_size, ("adjective", "guided")
    )
    names = [v.name for v in guided.variants()]
    assert {"guided_x0.5", "guided_x1", "guided_x2"} < set(names) and "mixed_x1" not in names
    variant = guided.variant("guided_x2")
    assert variant.stream == "guided" and guided.variant("bright_x2").stream == "synthetic"
    # Text-to-image shards are sized by the adjective family as before; guided ones by their even share.
    for cls, n in plan.train_counts.items():
        assert guided.images_per_adjective(cls) == plan.images_per_adjective(cls) == 2 * n
        assert guided.images_per_adjective(cls, "guided") == math.ceil(2 * n / 3)
        counts = guided.counts_per_adjective(variant, cls)
        assert sum(counts.values()) == 2 * n and max(counts.values()) - min(counts.values()) <= 1
    assert guided.all_shards("guided") and not plan.all_shards("guided")
    # One adjective: a guided variant still exists (its guides make it a family of its own); mixed does not.
    one = Plan(plan.classes, plan.train_counts, ["none"], [1.0], 8, ("mixed", "guided"))
    assert [v.name for v in one.variants()] == ["original", "guided_x1"]


def test_a_guided_merge_names_each_rows_guide(plan):
    guided = Plan(plan.classes, plan.train_counts, plan.adjectives, [1.0], plan.shard_size, ("guided",))
    manifest, _ = fake_inputs(plan)
    rows = []
    for cls, adjective, shard in guided.all_shards("guided"):
        training = manifest[(manifest["class"] == cls) & (manifest["split"] == "train") & (manifest["fold"] != 0)]
        for index in range(guided.shard_sizes(cls, "guided")[shard]):
            guide = training["path"].iloc[index % len(training)]
            rows.append(
                (f"g/{cls}/{adjective}/{shard}/{index}.png", cls, adjective, "p", index, shard, index, guide, 0.5)
            )
    columns = ["path", "class", "adjective", "prompt", "seed", "shard", "index", "derived_from", "strength"]
    shards = pd.DataFrame(rows, columns=columns)
    merged = merge_fold(manifest, 0, guided, guided.variant("guided_x1"), shards)
    added = merged[merged["source"] == "guided"]
    assert len(added) == sum(plan.train_counts.values())
    assert set(added["derived_from"]) <= set(shards["derived_from"]) and (added["role"] == "train").all()
    by_path = dict(zip(shards["path"], shards["derived_from"]))
    assert all(by_path[p] == g for p, g in zip(added["path"], added["derived_from"]))
    assert expansion_table({("guided_x1", 0): merged})["n_synthetic"].sum() == len(added)
    # Text-to-image rows (no guide) cannot pass for a guided variant's.
    with pytest.raises(ValueError, match="without a guide"):
        merge_fold(manifest, 0, guided, guided.variant("guided_x1"), shards.drop(columns=["derived_from"]))


# ------------------------------------------------------------------ filtered variants (generation.filter)
FILTERED = ("adjective", "mixed", "guided")


def filtered_plan(plan, oversample=1.5, families=(*FILTERED, "classic"), filtered=FILTERED):
    return Plan(
        plan.classes, plan.train_counts, plan.adjectives, plan.ratios, plan.shard_size, families, filtered, oversample
    )


def test_filtered_twins_read_oversampled_shards_and_leave_the_unfiltered_counts_alone(plan):
    filtered = filtered_plan(plan)
    names = [v.name for v in filtered.variants()]
    twins = [v for v in filtered.variants() if v.filtered]
    # Every synthetic variant has a twin (same family, adjective, ratio), none of original or classic.
    assert {v.name for v in twins} == {f"{v.name}_filtered" for v in filtered.variants() if v.stream and not v.filtered}
    assert "classic_x1_filtered" not in names and "original_filtered" not in names
    assert filtered.variant("mixed_x1_filtered").kind == "mixed" and filtered.variant("bright_x2_filtered").ratio == 2.0
    unfiltered = filtered_plan(plan, 1.5, filtered=())
    assert not any(v.filtered for v in unfiltered.variants())
    # Only the families named get twins.
    only_guided = filtered_plan(plan, 1.5, filtered=("guided",))
    assert {v.name for v in only_guided.variants() if v.filtered} == {
        "guided_x0.5_filtered",
        "guided_x1_filtered",
        "guided_x2_filtered",
    }
    for cls, n in plan.train_counts.items():
        for twin in twins:
            plain = filtered.variant(twin.name.removesuffix("_filtered"))
            # The same planned count per adjective; its shards hold ceil(1.5 x) of each adjective's count.
            assert filtered.counts_per_adjective(twin, cls) == filtered.counts_per_adjective(plain, cls)
            generated = filtered.generated_per_adjective(twin, cls)
            assert generated == {a: math.ceil(1.5 * c) for a, c in filtered.counts_per_adjective(plain, cls).items()}
            assert filtered.generated_per_adjective(plain, cls) == filtered.counts_per_adjective(plain, cls)
        # The stream holds what the largest twin needs: 1.5 x the largest ratio's count (ratio 2, one adjective).
        assert filtered.images_per_adjective(cls) == math.ceil(1.5 * 2 * n)
        assert unfiltered.images_per_adjective(cls) == 2 * n
    # A merge's reduced plan keeps the oversampling for the twin only.
    assert filtered.for_variant(filtered.variant("mixed_x1_filtered")).oversample == 1.5
    assert filtered.for_variant(filtered.variant("mixed_x1")).filtered_families == ()


def shards_of(plan, stream="synthetic"):
    rows = []
    for cls, adjective, shard in plan.all_shards(stream):
        for index in range(plan.shard_sizes(cls, stream)[shard]):
            rows.append((f"syn/{cls}/{adjective}/{shard}/{index}.png", cls, adjective, "p", index, shard, index))
    return pd.DataFrame(rows, columns=["path", "class", "adjective", "prompt", "seed", "shard", "index"])


def test_oversampling_keeps_the_planned_count_after_filtering(plan):
    filtered = filtered_plan(plan, 2.0, ("mixed",), ("mixed",))
    manifest, _ = fake_inputs(plan)
    shards = shards_of(filtered)
    twin = filtered.variant("mixed_x1_filtered")
    # Every third image dropped (a third of the generated ones: oversampling x2 covers it).
    verdicts = shards[["path"]].assign(
        kept=[i % 3 != 1 for i in range(len(shards))], judge="results/judges/fold0", reason=""
    )
    merged = merge_fold(manifest, 0, filtered.for_variant(twin), twin, shards, verdicts=verdicts)
    added = merged[merged["source"] == "synthetic"]
    kept = set(verdicts.loc[verdicts["kept"], "path"])
    for cls in plan.classes:
        for adjective, count in filtered.counts_per_adjective(twin, cls).items():
            rows = added[(added["class"] == cls) & (added["adjective"] == adjective)]
            assert len(rows) == count and set(rows["path"]) <= kept  # the planned count, all kept
            pool = shards[(shards["class"] == cls) & (shards["adjective"] == adjective)].sort_values(["shard", "index"])
            first_kept = [p for p in pool["path"] if p in kept][:count]
            assert list(rows["path"]) == first_kept  # the first kept, in shard order
    assert (added["selected_by"] == "results/judges/fold0").all()
    assert (merged.loc[merged["source"] == "original", "selected_by"] == "").all()
    # The unfiltered twin takes the first N images as before, kept or not.
    plain = filtered.variant("mixed_x1")
    unfiltered = merge_fold(manifest, 0, filtered.for_variant(plain), plain, shards)
    assert (unfiltered["selected_by"] == "").all()
    assert len(unfiltered[unfiltered["source"] == "synthetic"]) == len(added)
    # Too few kept: the merge stops and names the key that fixes it.
    strict = verdicts.assign(kept=[i % 3 == 0 for i in range(len(shards))])
    with pytest.raises(ValueError, match="raise generation.filter.oversample"):
        merge_fold(manifest, 0, filtered.for_variant(twin), twin, shards, verdicts=strict)
    with pytest.raises(ValueError, match="has no verdict"):
        merge_fold(manifest, 0, filtered.for_variant(twin), twin, shards, verdicts=verdicts.iloc[1:])


def test_the_filter_drops_confident_misclassifications_and_near_copies():
    from meddap.settings.stages import NEAR_COPY, WRONG_CLASS, FilterSettings

    settings = FilterSettings(judge_confidence=0.8, near_copy_bits=4)
    assert settings.reason("benign", "malignant", 0.8, 30) == WRONG_CLASS
    assert settings.reason("benign", "malignant", 0.79, 30) == ""  # not confident enough
    assert settings.reason("benign", "benign", 0.99, 4) == NEAR_COPY
    assert settings.reason("benign", "benign", 0.99, 5) == ""
    assert FilterSettings(near_copy_bits=-1).reason("benign", "benign", 0.99, 0) == ""  # no near-copy check


def test_judge_verdicts_name_the_nearest_original_and_each_class_probability():
    import numpy as np

    from meddap.classify.judge import judge_verdicts
    from meddap.settings.stages import FilterSettings

    images = pd.DataFrame(
        {"path": ["s0", "s1", "s2"], "class": ["a", "a", "b"], "adjective": "none", "shard": 0, "index": [0, 1, 2]}
    )
    probabilities = np.array([[0.9, 0.1], [0.05, 0.95], [0.4, 0.6]])
    distances = np.array([[20, 3], [30, 40], [12, 11]])
    table = judge_verdicts(
        images,
        probabilities,
        ["a", "b"],
        distances,
        ["o0", "o1"],
        FilterSettings(judge_confidence=0.9, near_copy_bits=5),
    )
    assert table["predicted"].tolist() == ["a", "b", "b"]
    assert table["nearest_original"].tolist() == ["o1", "o0", "o1"]
    assert table["near_copy_distance"].tolist() == [3, 30, 11]
    assert table["reason"].tolist() == ["near-copy of a training original", "judged another class", ""]
    assert table["kept"].tolist() == [False, False, True] and table["p_b"].tolist() == [0.1, 0.95, 0.6]


def test_the_realism_of_a_filtered_mode_reads_the_kept_images_only():
    from meddap.evidence.filtered import kept_images

    rows = pd.DataFrame({"path": ["a", "b", "c", "d"], "class": "benign", "adjective": "none"})
    verdicts = pd.DataFrame({"path": ["a", "b", "c"], "kept": [True, False, "True"], "reason": ["", "x", ""]})
    assert kept_images(rows, verdicts)["path"].tolist() == ["a", "c"]  # d: not judged, not kept
