"""Rule pretrain_base: the small Stable Diffusion, trained on its captioned corpus, saved with save_pretrained."""

from meddap.runtime.rulescript import start

log = start(snakemake)  # noqa: F821

import pandas as pd  # noqa: E402

from meddap.diffusion.pretraining import decontaminate, pretraining_corpus  # noqa: E402
from meddap.diffusion.small_model import pretrain_small_model  # noqa: E402
from meddap.provenance.lineage import write_lineage  # noqa: E402
from meddap.runtime.atomic import atomic_path, write_csv, write_json  # noqa: E402
from meddap.runtime.versions import library_versions  # noqa: E402
from meddap.settings.choices import PHANTOM_CORPUS  # noqa: E402
from meddap.settings.stages import PretrainSettings  # noqa: E402

params = snakemake.params
settings = PretrainSettings.from_params(params.pretraining)
corpus = pretraining_corpus(
    settings.corpus,
    snakemake.input.corpus,
    list(params.classes),
    list(settings.adjectives),
    settings.adjective_share,
    params.seed,
)
dropped = corpus.iloc[:0]
if settings.corpus == PHANTOM_CORPUS:
    # The corpus must not hold a near-copy of any image the classifiers are judged on.
    manifest = pd.read_csv(snakemake.input.manifest)
    unseen = [pd.read_csv(path) for path in snakemake.input.unseen]
    reference_paths = [*manifest["path"], *(p for table in unseen for p in table["path"])]
    reference_hashes = [*manifest["phash"], *[""] * (len(reference_paths) - len(manifest))]
    corpus, dropped = decontaminate(corpus, reference_paths, reference_hashes, params.max_distance)
    log.info(
        "decontamination: dropped %d corpus images within %d hash bits of a dataset or unseen image",
        len(dropped),
        params.max_distance,
    )
n_captioned = int((corpus["adjective"] != "none").sum())
log.info(
    "pretraining corpus (%s): %d images, %d captioned with an adjective", settings.corpus, len(corpus), n_captioned
)
with atomic_path(snakemake.output[0]) as folder:
    info = pretrain_small_model(
        list(corpus["path"]),
        list(corpus["caption"]),
        list(corpus["adjective"]),
        folder,
        settings,
        list(params.tokenizer_words),
        params.seed,
    )
    write_csv(folder / "pretraining_corpus.csv", corpus)
    write_csv(folder / "pretraining_corpus_dropped.csv", dropped)
    summary = {
        **info,
        "corpus": settings.corpus,
        "decontaminated_away": len(dropped),
        "settings": params.pretraining,
        "seed": params.seed,
        "versions": library_versions(),
    }
    write_json(folder / "meddap_pretrain.json", summary)
    # Last: the record lists the folder's files with their sha256.
    write_lineage(folder, "base_model", images=corpus["path"], corpus=settings.corpus)
log.info("pretrained small SD: %s", info)
