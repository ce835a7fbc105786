"""What the DAG builds: dataset variants, shards per class, and which shards each variant uses.

Shared by the Snakefile (to plan jobs at parse time) and by the merge step (to pick rows), so
the two can never disagree. Ratios are nested: a variant at ratio r takes the *first*
round(r x n_train) images of the shards, so 0.5/1/2 together cost 2x the class count, not 3.5x
(per adjective; mixed variants alone need only their even share of each adjective).

Synthetic images come in two streams of shards: text-to-image (``TEXT_TO_IMAGE``, the adjective
and mixed families) and image-to-image from a training original (``GUIDED``, the guided family).
Each stream has its own shards (``results/<stream>/<arm>/<class>/<adjective>/shard<NNN>``),
sized by the variants that read it.

With ``generation.filter.families``, every variant of those families has a filtered twin
(``<name>_filtered``, ``Variant.filtered``): it takes the first N images of the same shards that
its filter keeps, so the shards it reads hold ``oversample`` x N images (the unfiltered variant
still takes the first N).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from meddap.settings.kinds import TEXT_TO_IMAGE_SHARDS

# Variant families (generation.variant_families, and "original"); also the names of the
# variants without an adjective.
ORIGINAL = "original"
ADJECTIVE = "adjective"
MIXED = "mixed"
CLASSIC = "classic"
GUIDED = "guided"  # image-to-image from the fold's training originals (meddap.diffusion.guided)

# Shard streams: the folder under results/ that a family's shards live in.
TEXT_TO_IMAGE = TEXT_TO_IMAGE_SHARDS
STREAMS = {ADJECTIVE: TEXT_TO_IMAGE, MIXED: TEXT_TO_IMAGE, GUIDED: GUIDED}
# Families that draw evenly from every adjective (the remainder to the first adjectives in order).
EVEN_FAMILIES = (MIXED, GUIDED)


def ratio_label(ratio: float) -> str:
    """'x0.5', 'x1', 'x2': the ratio as it appears in variant names."""
    return "x" + format(float(ratio), "g")


@dataclass(frozen=True)
class Variant:
    name: str
    kind: (
        str  # its family: original | adjective | mixed | guided | classic (standard augmentation, no synthetic images)
    )
    adjective: str = ""
    ratio: float = 0.0
    filtered: bool = False  # its images passed generation.filter (a twin of the unfiltered variant)

    def labels(self) -> dict:
        """The variant as plain data for evaluation files: the statistics read its family and
        ratio from here (a synthetic variant's classic partner has the same ratio), never from its name."""
        return {
            "variant": self.name,
            "family": self.kind,
            "adjective": self.adjective,
            "ratio": float(self.ratio),
            "filtered": self.filtered,
        }

    @property
    def stream(self) -> str | None:
        """The shard stream its synthetic images come from (None: it adds none)."""
        return STREAMS.get(self.kind)


@dataclass
class Plan:
    classes: list[str]
    train_counts: dict[str, int]
    adjectives: list[str]
    ratios: list[float]
    shard_size: int
    families: tuple[str, ...] = (ADJECTIVE, MIXED)
    # generation.filter: each variant of these families has a filtered twin, whose shards hold
    # ``oversample`` x its count.
    filtered_families: tuple[str, ...] = ()
    oversample: float = 1.0

    def for_variant(self, variant: Variant) -> Plan:
        """The plan reduced to what ``variant``'s merge reads (its adjectives and ratio): a rule's
        params, so adding an adjective or a ratio reruns the merges that use it, not every merge."""
        if variant.kind == ADJECTIVE:
            adjectives = [variant.adjective]
        elif variant.kind in EVEN_FAMILIES:
            adjectives = list(self.adjectives)  # a mixed or guided variant draws evenly from every adjective
        else:
            adjectives = []
        ratios = [variant.ratio] if variant.kind != ORIGINAL else []
        filtered = (variant.kind,) if variant.filtered else ()
        return Plan(
            self.classes,
            self.train_counts,
            adjectives,
            ratios,
            self.shard_size,
            (variant.kind,),
            filtered,
            self.oversample,
        )

    def synthetic_count(self, cls: str, ratio: float) -> int:
        """Synthetic images of ``cls`` that a variant of ``ratio`` adds."""
        return int(round(ratio * self.train_counts[cls]))

    def max_synthetic_count(self, cls: str) -> int:
        """Extra images of ``cls`` at the largest ratio (e.g. the classic augmentation's count)."""
        return self.synthetic_count(cls, max(self.ratios)) if self.ratios else 0

    def images_per_adjective(self, cls: str, stream: str = TEXT_TO_IMAGE) -> int:
        """Images generated per (class, adjective) in ``stream``: the most that any of its variants
        takes from one adjective (the largest ratio's count with the adjective family; about
        1/len(adjectives) of it when only mixed variants use the shards). Without such a variant,
        text-to-image shards still hold the largest ratio's count, so that the shards and their
        quality check still exist; guided shards exist only for guided variants."""
        needs = [
            count
            for variant in self.variants()
            if variant.stream == stream
            for count in self.generated_per_adjective(variant, cls).values()
        ]
        if needs:
            return max(needs)
        return self.max_synthetic_count(cls) if stream == TEXT_TO_IMAGE else 0

    def shards(self, cls: str, stream: str = TEXT_TO_IMAGE) -> int:
        images = self.images_per_adjective(cls, stream)
        if stream != TEXT_TO_IMAGE and not images:
            return 0
        return max(1, math.ceil(images / self.shard_size))

    def shard_sizes(self, cls: str, stream: str = TEXT_TO_IMAGE) -> list[int]:
        """Images in each shard of ``cls`` (the last one may be smaller)."""
        total = self.images_per_adjective(cls, stream)
        return [min(self.shard_size, total - start) for start in range(0, total, self.shard_size)] or [0]

    def all_shards(self, stream: str = TEXT_TO_IMAGE) -> list[tuple[str, str, int]]:
        return [
            (cls, adj, shard)
            for cls in self.classes
            for adj in self.adjectives
            for shard in range(self.shards(cls, stream))
        ]

    def variants(self) -> list[Variant]:
        out = [Variant(ORIGINAL, ORIGINAL)]
        if ADJECTIVE in self.families:
            out += [
                Variant(f"{adj}_{ratio_label(r)}", ADJECTIVE, adj, r) for adj in self.adjectives for r in self.ratios
            ]
        if MIXED in self.families and len(self.adjectives) > 1:
            out += [Variant(f"{MIXED}_{ratio_label(r)}", MIXED, "", r) for r in self.ratios]
        if GUIDED in self.families:  # with one adjective too: its guides make it a family of its own
            out += [Variant(f"{GUIDED}_{ratio_label(r)}", GUIDED, "", r) for r in self.ratios]
        out += [
            Variant(f"{v.name}_filtered", v.kind, v.adjective, v.ratio, filtered=True)
            for v in out
            if v.stream is not None and v.kind in self.filtered_families
        ]
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
        # Mixed and guided: adjectives drawn evenly; the remainder goes to the first adjectives in order.
        base, extra = divmod(total, len(self.adjectives))
        return {adj: base + (1 if i < extra else 0) for i, adj in enumerate(self.adjectives)}

    def generated_per_adjective(self, variant: Variant, cls: str) -> dict[str, int]:
        """How many of each adjective's images (from the start) ``variant``'s shards must hold for
        ``cls``: its count, or for a filtered variant ``oversample`` x its count (rounded up), so
        that the images its filter keeps fill the count."""
        counts = self.counts_per_adjective(variant, cls)
        if not variant.filtered:
            return counts
        return {adj: math.ceil(count * self.oversample - 1e-9) for adj, count in counts.items()}

    def shards_for(self, variant: Variant) -> list[tuple[str, str, int]]:
        """The (class, adjective, shard) triples of ``variant.stream`` whose images ``variant`` uses
        (a filtered variant: those its filter chooses from)."""
        needed = []
        for cls in self.classes:
            for adj, count in self.generated_per_adjective(variant, cls).items():
                needed += [(cls, adj, shard) for shard in range(math.ceil(count / self.shard_size))]
        return needed
