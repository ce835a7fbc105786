"""What a config costs before it runs (``meddap plan``): jobs per rule, images to generate,
classifier image-passes, and device-hours where a measured rate exists.

The config is layered as the workflow layers it for ``--configfile FILE...`` (each file over the
previous, then the schema's defaults; the embedded default config/config.yaml only where it is
named) and resolved by meddap.config.resolve.resolve, whose
``Settings.jobs_per_rule`` is also the count limits.max_jobs checks. Per-class counts come from
listing dataset.root (no image is opened), or from the phantom settings. Rates come from
``meddap/planning/rates.yaml``: measured figures only, each with its source file under docs/bench/
and the command that measured it. A part with no rate for the device at the config's settings is
reported as not measured and left out of the hours; no figure is extrapolated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from meddap.config.loading import load_config
from meddap.settings.plan import GUIDED, ORIGINAL, TEXT_TO_IMAGE

RATES_FILE = Path(__file__).with_name("rates.yaml")
# Rules whose jobs no rate in rates.yaml covers (tables, indexes, checks, simulations, the report).
BOOKKEEPING_RULES = (
    "simulate_phantom",
    "simulate_pretrain_corpus",
    "split",
    "index_test_set",
    "convert_base_model",
    "download_base_model",
    "check_generation_inputs",
    "index_synthetic",
    "augment_classic",
    "merge_dataset",
    "synthetic_quality",
    "realism",
    "audit",
    "report",
)


def load_rates(path: Path = RATES_FILE) -> dict:
    """device name -> {"name": ..., "rates": [...]} (see the file's header)."""
    return yaml.safe_load(Path(path).read_text())["devices"]


@dataclass
class Work:
    """One part of a run's work: how much, of which operation, at which settings."""

    part: str
    operation: str  # as in rates.yaml
    amount: float
    unit: str  # what amount counts: samples, images, image-passes, steps
    match: dict  # the config's values of the operation's match keys
    how: str  # how the amount is made up
    other: dict = field(default_factory=dict)  # settings a rate may have been measured at otherwise


@dataclass
class Estimate:
    work: Work
    rate: dict | None = None  # the rates.yaml entry used
    hours: float | None = None
    missing: str = ""  # why there are no hours

    @property
    def known(self) -> bool:
        return self.hours is not None


def estimate(work: Work, device: str, rates: dict) -> Estimate:
    """Hours = amount / rate for the device's measured rate at the work's settings; else why not."""
    if device not in rates:
        return Estimate(work, missing=f"no measured rates for device {device!r} (known: {', '.join(sorted(rates))})")
    candidates = [
        rate
        for rate in rates[device]["rates"]
        if rate["operation"] == work.operation and all(work.match.get(k) == v for k, v in rate["match"].items())
    ]
    if not candidates:
        settings = ", ".join(f"{k} {v}" for k, v in work.match.items())
        measured = [r for r in rates[device]["rates"] if r["operation"] == work.operation]
        at = (
            "; measured only at " + "; ".join(", ".join(f"{k} {v}" for k, v in r["match"].items()) for r in measured)
            if measured
            else ""
        )
        return Estimate(work, missing=f"not measured on {device} ({work.operation} at {settings}{at})")
    rate = sorted(candidates, key=lambda r: bool(r.get("upper_bound")))[0]  # a direct measurement first
    return Estimate(work, rate=rate, hours=work.amount / rate["rate"] / 3600)


@dataclass
class CostPlan:
    configs: list[str]
    settings: object  # meddap.config.resolve.Settings
    base_model_found: bool
    jobs: dict[str, int]
    work: list[Work]
    device: str | None = None
    device_name: str | None = None
    estimates: list[Estimate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def generated_images(self) -> int:
        return int(sum(w.amount for w in self.work if w.part == "generation"))

    @property
    def known_hours(self) -> float:
        return sum(e.hours for e in self.estimates if e.known)

    @property
    def unknown_parts(self) -> list[str]:
        return [e.work.part for e in self.estimates if not e.known]


def _unseen_images(settings, config: dict) -> tuple[int, list[str]]:
    """Images in the unseen sets (each evaluate job reads them all), and notes on those not countable."""
    from meddap.data.dataset import list_class_images

    total, notes = 0, []
    for name, root in settings.unseen.items():
        path = Path(root)
        if settings.phantom:
            total += config["phantom"]["unseen_images_per_class"] * len(settings.classes)
        elif path.is_dir():
            total += sum(len(p) for p in list_class_images(path, None, config["dataset"]["exclude"]).values())
        elif path.is_file() and path.suffix.lower() == ".csv":
            import pandas as pd

            total += len(pd.read_csv(path))
        else:
            notes.append(f"unseen set {name!r} ({root}) is not here: its images are not counted")
    return total, notes


def work_items(settings, config: dict) -> tuple[list[Work], list[str]]:
    """The run's work by part: base-model pretraining, LoRA training, LoRA validation images,
    generation, and per classifier architecture its training and evaluation image-passes."""
    from meddap.diffusion.lora import validation_steps

    plan, lora = settings.plan, config["lora"]
    work, notes = [], []
    if settings.pretrain:
        steps = config["base_model"]["pretrain"]["vae_steps"] + config["base_model"]["pretrain"]["unet_steps"]
        work.append(
            Work(
                "small base model pretraining",
                "pretraining",
                steps,
                "steps",
                {"image_size": config["base_model"]["pretrain"]["image_size"]},
                f"rule pretrain_base: {steps} VAE + UNet steps",
            )
        )
    n_loras = len(settings.arms) * len(settings.lora_names)
    work.append(
        Work(
            "LoRA training",
            "lora_training",
            n_loras * lora["steps"] * lora["batch_size"],
            "samples",
            {"resolution": lora["resolution"], "batch_size": lora["batch_size"]},
            f"{n_loras} LoRAs x {lora['steps']} steps x batch {lora['batch_size']}",
        )
    )
    prompts = sum(len(settings.lora_prompts(name)) for name in settings.lora_names) * len(settings.arms)
    checkpoints = len(validation_steps(lora["steps"], lora["checkpoint_every"]))
    validation = lora["validation"]
    if validation["images"]:
        work.append(
            Work(
                "LoRA validation images",
                "generation",
                prompts * validation["images"] * checkpoints,
                "images",
                {"resolution": lora["resolution"], "steps": validation["steps"]},
                f"{prompts} LoRA prompts x {validation['images']} images x {checkpoints} checkpoints",
                {"batch_size": validation["images"], "scheduler": validation.get("scheduler")},
            )
        )
    # One arm's synthetic test set (class fidelity per mode): every text-to-image and guided image,
    # and a filtered stream's images once more (at most: those its filter keeps).
    filtered_streams = {variant.stream for variant in plan.variants() if variant.filtered}
    synthetic_test_images = sum(
        len(plan.adjectives) * plan.images_per_adjective(cls, stream) * (2 if stream in filtered_streams else 1)
        for cls in settings.classes
        for stream in (TEXT_TO_IMAGE, GUIDED)
    )
    work.append(_generation_work(settings, config["generation"], TEXT_TO_IMAGE))
    if plan.all_shards(GUIDED):
        work.append(_generation_work(settings, config["generation"], GUIDED))

    # Classifier image-passes. A fold trains on the training split less one fold (plan.train_counts,
    # the larger share) plus its variant's extra images, validates on the fold every epoch; each
    # evaluate job reads the internal test split (and its corrupted copies), every unseen set, and
    # for `original` the synthetic test set of its fold's arm.
    classifier, evaluation = config["classifier"], config["evaluation"]
    epochs, runs = classifier["epochs"], settings.folds * settings.replicates
    validation_images = sum(settings.train_counts[c] - plan.train_counts[c] for c in settings.classes)
    test_images = sum(settings.class_counts[c] - settings.train_counts[c] for c in settings.classes)
    unseen_images, unseen_notes = _unseen_images(settings, config)
    notes += unseen_notes
    copies = 1 + len(evaluation["corruptions"]) * len(evaluation["severities"])
    train_passes = eval_passes = 0
    for variant in plan.variants():
        extra = 0 if variant.kind == ORIGINAL else sum(plan.synthetic_count(c, variant.ratio) for c in settings.classes)
        train_passes += runs * (sum(plan.train_counts.values()) + extra) * epochs
        synthetic = synthetic_test_images if variant.kind == ORIGINAL else 0
        eval_passes += runs * (validation_images * epochs + test_images * copies + unseen_images + synthetic)
    trainings = len(plan.variants()) * runs
    work += _filter_work(settings, classifier)
    for arch in settings.architectures:
        match = {"architecture": arch, "image_size": classifier["image_size"]}
        work.append(
            Work(
                f"classifier training, {arch}",
                "classifier_training",
                train_passes,
                "image-passes",
                match,
                f"{trainings} trainings x {epochs} epochs x their training images (originals + extra images)",
            )
        )
        work.append(
            Work(
                f"classifier evaluation, {arch}",
                "classifier_inference",
                eval_passes,
                "image-passes",
                match,
                f"{trainings} classifiers: {validation_images} validation images x {epochs} epochs, "
                f"{test_images} test images x {copies} (clean + {copies - 1} corrupted), {unseen_images} unseen, "
                "the arm's synthetic images (original only)",
            )
        )
    return work, notes


def _filter_work(settings, classifier: dict) -> list[Work]:
    """generation.filter: one judge per arm (its training originals x epochs, no validation), and
    one pass of it over every image of the filtered streams."""
    if settings.filter is None:
        return []
    plan, arch = settings.plan, settings.filter.judge_architecture
    match = {"architecture": arch, "image_size": classifier["image_size"]}
    arms, epochs = len(settings.arms), classifier["epochs"]
    streams = sorted({variant.stream for variant in plan.variants() if variant.filtered})
    judged = arms * sum(
        len(plan.adjectives) * plan.images_per_adjective(cls, stream) for cls in settings.classes for stream in streams
    )
    return [
        Work(
            f"filter judges, {arch}",
            "classifier_training",
            arms * sum(plan.train_counts.values()) * epochs,
            "image-passes",
            match,
            f"{arms} judges x {epochs} epochs x their training originals",
        ),
        Work(
            f"filter verdicts, {arch}",
            "classifier_inference",
            judged,
            "image-passes",
            match,
            f"the judges on the {judged:,} images of the filtered streams ({', '.join(streams)})",
        ),
    ]


def _generation_work(settings, generation: dict, stream: str) -> Work:
    """Images to generate in one shard stream. Guided images are their own operation: a guided
    image encodes its guide and runs about strength x steps, so the text-to-image rate does not
    apply to them; with no rate measured for them, their hours are "not measured", not a guess."""
    plan = settings.plan
    per_arm = {cls: len(plan.adjectives) * plan.images_per_adjective(cls, stream) for cls in settings.classes}
    guided = stream == GUIDED
    return Work(
        "guided generation" if guided else "generation",
        "guided_generation" if guided else "generation",
        len(settings.arms) * sum(per_arm.values()),
        "images",
        {"resolution": generation["resolution"], "steps": generation["steps"]},
        f"{len(settings.arms)} arms x {sum(per_arm.values()):,} ({len(plan.adjectives)} adjectives x "
        + ", ".join(f"{c} {plan.images_per_adjective(c, stream)}" for c in settings.classes)
        + (f"), strength {generation['strength']}" if guided else ")"),
        {"batch_size": generation["batch_size"], "scheduler": generation["scheduler"]},
    )


def make_plan(configs: list[str | Path], device: str | None = None, rates: dict | None = None) -> CostPlan:
    from meddap.config.resolve import resolve

    config = load_config(configs)
    settings = resolve(config, check_base_model=False)
    source = settings.base_source
    found = source.location is None or Path(source.location).exists()
    work, notes = work_items(settings, config)
    cost = CostPlan([str(c) for c in configs], settings, found, settings.jobs_per_rule(), work, notes=notes)
    if device is not None:
        rates = load_rates() if rates is None else rates
        cost.device = device
        cost.device_name = rates.get(device, {}).get("name")
        cost.estimates = [estimate(item, device, rates) for item in work]
    return cost


def _rate_text(estimate: Estimate) -> str:
    rate = estimate.rate
    bound = ", an upper bound on the hours" if rate.get("upper_bound") else ""
    measured = rate.get("measured_with", {})
    differ = {k: v for k, v in measured.items() if estimate.work.other.get(k, v) != v}
    if differ:
        bound += "; measured at " + ", ".join(f"{k} {v}" for k, v in differ.items())
        bound += ", the config has " + ", ".join(f"{k} {estimate.work.other[k]}" for k in differ)
    return f"{rate['rate']:.3g} {rate['unit']} ({rate['source']['file']}, {rate['source']['method']}{bound})"


def format_plan(cost: CostPlan) -> str:
    s = cost.settings
    lines = [f"meddap plan: {' + '.join(cost.configs)}"]
    counts = ", ".join(f"{c} {n}" for c, n in s.class_counts.items())
    where = "phantom (simulated)" if s.phantom else "dataset.root"
    lines.append(f"dataset: {where}: {counts} ({sum(s.class_counts.values())} images)")
    lines.append(
        f"  training split {sum(s.train_counts.values())}, test split "
        f"{sum(s.class_counts.values()) - sum(s.train_counts.values())}, {s.folds} folds "
        f"(a fold trains on up to {sum(s.plan.train_counts.values())}); {len(s.unseen)} unseen sets"
    )
    base = s.base_source
    found = "" if cost.base_model_found else " (not found here: not checked)"
    lines.append(f"base model: {base.location or 'the embedded small model, pretrained here'} [{base.kind}]{found}")
    lines += ["", "jobs per rule (as snakemake --dry-run plans them in an empty folder):"]
    width = max(map(len, cost.jobs)) + 2
    lines += [f"  {rule:<{width}}{count:>7,}" for rule, count in cost.jobs.items()]
    lines.append(f"  {'total':<{width}}{sum(cost.jobs.values()):>7,}")
    lines += ["", "work:"]
    for item in cost.work:
        lines.append(f"  {item.part}: {item.amount:,.0f} {item.unit} ({item.how})")
    lines += [f"  note: {note}" for note in cost.notes]
    if cost.device is None:
        lines += ["", "device-hours: give --device NAME (measured rates: meddap/planning/rates.yaml)"]
        return "\n".join(lines)
    name = f" ({cost.device_name})" if cost.device_name else ""
    lines += ["", f"device-hours on {cost.device}{name}:"]
    for est in cost.estimates:
        if est.known:
            amount = f"{est.work.amount:,.0f} {est.work.unit}"
            lines.append(f"  {est.work.part}: {est.hours:.2f} h = {amount} / {_rate_text(est)}")
        else:
            lines.append(f"  {est.work.part}: {est.missing}")
    known = [e.work.part for e in cost.estimates if e.known]
    bookkeeping = [rule for rule in BOOKKEEPING_RULES if rule in cost.jobs]
    lines.append("")
    lines.append(
        f"total: {cost.known_hours:.2f} device-hours measured ({', '.join(known) or 'none'})"
        if known
        else "total: no part has a measured rate on this device"
    )
    unknown = cost.unknown_parts + [f"the jobs of {', '.join(bookkeeping)} (no rate measured for them)"]
    lines.append(f"  plus, not measured on {cost.device}: " + "; ".join(unknown))
    return "\n".join(lines)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "plan", help="jobs per rule, images, classifier image-passes and device-hours of a config, before a run"
    )
    p.add_argument(
        "--configfile",
        nargs="+",
        required=True,
        metavar="FILE",
        help="config files layered in order, as snakemake --configfile (the embedded default only if named)",
    )
    p.add_argument("--device", help="estimate device-hours from the measured rates of this device (e.g. nvidia-h100)")
    p.set_defaults(func=run)


def run(args) -> int:
    cost = make_plan(args.configfile, args.device)  # a ConfigError: one line, exit 2 (meddap.cli)
    for warning in cost.settings.warnings:
        print(f"warning: {warning}")
    print(format_plan(cost))
    return 0
