"""Rule download_base_model: a hub Stable Diffusion at a pinned revision -> the folder every job reads offline."""

from meddap.runtime.rulescript import start

log = start(snakemake)  # noqa: F821

from meddap.diffusion.base_models import download_base_model  # noqa: E402

params = snakemake.params
source = download_base_model(params.repo_id, params.revision, snakemake.output[0])
log.info("downloaded %s at revision %s (commit %s)", source["repo_id"], source["revision"], source["commit"])
