"""Rule audit: results/audit/{findings,summary}.csv and verdict.txt; fails on an undeclared leak."""

from meddap.runtime.rulescript import start

log = start(snakemake)  # noqa: F821

from meddap.audit.leaks import AcceptedLeaks, fail_on, run_audit  # noqa: E402
from meddap.runtime.atomic import write_csv, write_text  # noqa: E402

params = snakemake.params
findings, summary, text = run_audit(
    list(snakemake.input.classifiers),
    snakemake.input.manifest,
    dict(zip(params.unseen_names, snakemake.input.unseen)),
    params.max_distance,
    AcceptedLeaks.from_settings(params.lora_scope, params.pretrain_corpus),
)
log.info("%s\n%s", text, summary.to_string(index=False))
if len(findings):
    log.info("findings:\n%s", findings.to_string(index=False))
fail_on(findings, text)  # before writing: a failed audit leaves no output that looks complete
write_csv(snakemake.output.findings, findings)
write_csv(snakemake.output.summary, summary)
write_text(snakemake.output.verdict, text + "\n")
