"""Shared start of every rule script (``from meddap.runtime.rulescript import start``): send the job's logging
and stderr to its log file and set its thread count.

The rule scripts import it from the installed meddap package (the workflow's environment installs
meddap at the workflow's version; workflow/rules/common.smk checks that at parse time), never from
a path beside the scripts or the repository's src/: so the workflow runs the same from a clone, as a
Snakemake ``module`` of another Snakefile, or deployed with snakedeploy.
"""

import logging
import os
import sys
from pathlib import Path


def start(snakemake) -> logging.Logger:
    """Route this job's logging and stderr (tqdm bars, warnings) to its log file; set threads."""
    # Thread count through the environment, read when torch/numpy load (rules without torch skip it).
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = str(max(1, int(snakemake.threads)))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # File digests of lineage records, cached by path, size and mtime_ns (meddap.provenance.lineage.DigestCache).
    os.environ.setdefault("MEDDAP_DIGEST_CACHE", ".snakemake/meddap/digests.json")
    log_path = Path(snakemake.log[0])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    stream = open(log_path, "w", buffering=1)
    console = sys.stderr
    sys.stderr = stream  # progress bars and warnings go to the job's log

    def report_error(kind, error, trace):
        # The full traceback goes to the log; the console gets the one line that says what to do.
        import traceback

        traceback.print_exception(kind, error, trace, file=stream)
        console.write(f"meddap: rule {snakemake.rule} failed: {kind.__name__}: {error}\n(full traceback: {log_path})\n")

    sys.excepthook = report_error
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.StreamHandler(stream)],
        force=True,
    )
    logger = logging.getLogger(f"meddap.rule.{snakemake.rule}")
    logger.info("rule %s wildcards %s threads %s", snakemake.rule, dict(snakemake.wildcards), snakemake.threads)
    # A GPU rule's job takes a device (or a slot of one) of its own before torch loads (meddap.runtime.gpu_slots).
    from meddap.runtime import gpu_slots

    gpu_slots.acquire_for_job(getattr(snakemake.resources, "gpu_slot", None), logger)
    return logger
