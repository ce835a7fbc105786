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
    """Route this job's logging and stderr (tqdm bars, warnings) to its log file; set threads.

    A local CPU job first hands itself to a warm server (meddap.runtime.warm), whose fork runs this
    same script again (and this start again, in the fork); this process then only waits and exits
    with the fork's status."""
    from meddap.runtime import gpu_slots, warm

    gpu_kind = getattr(snakemake.resources, "gpu_slot", None)
    cold_because = warm.eligible(os.environ, gpu_slots.takes_device(gpu_kind), sys.argv[0])
    if cold_because is None:
        status = warm.run_in_server(list(sys.argv), dict(os.environ), os.getcwd())
        if status is not None:
            sys.stdout.flush()
            os._exit(status)
        cold_because = "no warm server could be started (its log: meddap.runtime.warm.folder())"
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
    if warm.in_server_fork():
        _limit_loaded_thread_pools(int(snakemake.threads))
        logger.info("warm start: in a fork (pid %d) of the warm server %d", os.getpid(), os.getppid())
    else:
        logger.info("warm start: no (%s)", cold_because)
    # A GPU rule's job takes a device (or a slot of one) of its own before torch loads (meddap.runtime.gpu_slots).
    gpu_slots.acquire_for_job(gpu_kind, logger)
    return logger


def _limit_loaded_thread_pools(threads: int) -> None:
    """In a warm fork torch and the BLAS libraries are loaded already: the thread variables set above
    come too late for them, so their pools are set directly (as the variables would have)."""
    threads = max(1, threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=threads)
