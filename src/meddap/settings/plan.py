"""What the DAG builds: dataset variants, shards per class, and which shards each variant uses.

Shared by the Snakefile (to plan jobs at parse time) and by the merge step (to pick rows), so
the two can never disagree. Ratios are nested: a variant at ratio r takes the *first*
round(r x n_train) images of the shards, so 0.5/1/2 together cost 2x the class count, not 3.5x
(per adjective; mixed variants alone need only their even share of each adjective).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Variant families (generation.variant_families, and "original"); also the names of the
# variants without an adjective.
ORIGINAL = "original"
ADJECTIVE = "adjective"
MIXED = "mixed"
CLASSIC = "classic"


def ratio_label(ratio: float) -> str:
    """'x0.5', 'x1', 'x2': the ratio as it appears in variant names."""
    return "x" + format(float(ratio), "g")


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str  # its family: original | adjective | mixed | classic (standard augmentation, no synthetic images)
    adjective: str = ""
    ratio: float = 0.0

    def labels(self) -> dict:
        """The variant as plain data for evaluation files: the statistics read its family and
        ratio from here (a synthetic variant's classic partner has the same ratio), never from its name."""
        return {"variant": self.name, "family": self.kind, "adjective": self.adjective, "ratio": float(self.ratio)}


@dataclass
class Plan:
    classes: list[str]
    train_counts: dict[str, int]
    adjectives: list[str]
    ratios: list[float]
    shard_size: int
    families: tuple[str, ...] = (ADJECTIVE, MIXED)

    def for_variant(self, variant: Variant) -> Plan:
        """The plan reduced to what ``variant``'s merge reads (its adjectives and ratio): a rule's
        params, so adding an adjective or a ratio reruns the merges that use it, not every merge."""
        if variant.kind == ADJECTIVE:
            adjectives = [variant.adjective]
        elif variant.kind == MIXED:
            adjectives = list(self.adjectives)  # a mixed variant draws evenly from every adjective
        else:
            adjectives = []
        ratios = [variant.ratio] if variant.kind != ORIGINAL else []
        return Plan(self.classes, self.train_counts, adjectives, ratios, self.shard_size, (variant.kind,))

    def synthetic_count(self, cls: str, ratio: float) -> int:
        """Synthetic images of ``cls`` that a variant of ``ratio`` adds."""
        return int(round(ratio * self.train_counts[cls]))

    def max_synthetic_count(self, cls: str) -> int:
        """Extra images of ``cls`` at the largest ratio (e.g. the classic augmentation's count)."""
        return self.synthetic_count(cls, max(self.ratios)) if self.ratios else 0

    def images_per_adjective(self, cls: str) -> int:
        """Images generated per (class, adjective): the most that any variant takes from one
        adjective (the largest ratio's count with the adjective family; about 1/len(adjectives)
        of it when only mixed variants use the shards). Without such a variant, the largest
        ratio's count, so that the shards and their quality check still exist."""
        needs = [count for variant in self.variants() for count in self.counts_per_adjective(variant, cls).values()]
        return max(needs) if needs else self.max_synthetic_count(cls)

    def shards(self, cls: str) -> int:
        return max(1, math.ceil(self.images_per_adjective(cls) / self.shard_size))

    def shard_sizes(self, cls: str) -> list[int]:
        """Images in each shard of ``cls`` (the last one may be smaller)."""
        total = self.images_per_adjective(cls)
        return [min(self.shard_size, total - start) for start in range(0, total, self.shard_size)] or [0]

    def all_shards(self) -> list[tuple[str, str, int]]:
        return [
            (cls, adj, shard) for cls in self.classes for adj in self.adjectives for shard in range(self.shards(cls))
        ]

    def variants(self) -> list[Variant]:
        out = [Variant(ORIGINAL, ORIGINAL)]
        if ADJECTIVE in self.families:
            out += [
                Variant(f"{adj}_{ratio_label(r)}", ADJECTIVE, adj, r) for adj in self.adjectives for r in self.ratios
            ]
        if MIXED in self.families and len(self.adjectives) > 1:
            out += [Variant(f"{MIXED}_{ratio_label(r)}", MIXED, "", r) for r in self.ratios]
        if CLASSIC in self.families:
            out += [Variant(f"{CLASSIC}_{ratio_label(r)}", CLASSIC, "", r) for r in self.ratios]
        return out

    def variant(self, name: str) -> Variant:
        for candidate in self.variants():
            if candidate.name == name:
                return candidate
        raise KeyError(f"unknown dataset variant {name!r}; known: {[v.name for v in self.variants()]}")

    def counts_per_adjective(self, variant: Variant, cls: str) -> dict[str, int]:
        """How many of each adjective's images (taken from the start) ``variant`` adds for ``cls``."""
        if variant.kind in (ORIGINAL, CLASSIC):
            return {}
        total = self.synthetic_count(cls, variant.ratio)
        if variant.kind == ADJECTIVE:
            return {variant.adjective: total}
        # Mixed: adjectives drawn evenly; the remainder goes to the first adjectives in order.
        base, extra = divmod(total, len(self.adjectives))
        return {adj: base + (1 if i < extra else 0) for i, adj in enumerate(self.adjectives)}

    def shards_for(self, variant: Variant) -> list[tuple[str, str, int]]:
        """The (class, adjective, shard) triples whose images ``variant`` uses."""
        needed = []
        for cls in self.classes:
            for adj, count in self.counts_per_adjective(variant, cls).items():
                needed += [(cls, adj, shard) for shard in range(math.ceil(count / self.shard_size))]
        return needed
