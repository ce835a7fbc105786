"""Rule report: results/report/{metrics,summary,fidelity}.csv and summary.md."""

from _meddap_script import start

log = start(snakemake)  # noqa: F821

from pathlib import Path  # noqa: E402

from meddap.atomic import write_csv, write_text  # noqa: E402
from meddap.report import class_fidelity, collect_metrics, readable_summary, summarise  # noqa: E402
from meddap.settings import resolve  # noqa: E402

plan = resolve(snakemake.config, check_architectures=False).plan
records, synthetic = [], []
for metrics_path in snakemake.input:
    # results/evaluation/<variant>/<arch>/fold<k>/<test_set>/metrics.json
    parts = Path(metrics_path).parts
    variant, arch, fold, test_set = parts[-5], parts[-4], int(parts[-3].removeprefix("fold")), parts[-2]
    record = {"variant": variant, "arch": arch, "fold": fold, "test_set": test_set, "metrics": metrics_path}
    if test_set == "synthetic":
        synthetic.append({**record, "predictions": str(Path(metrics_path).with_name("predictions.csv"))})
    else:
        records.append(record)
metrics = collect_metrics(records, plan)
summary = summarise(metrics)
fidelity = class_fidelity(synthetic)
write_csv(snakemake.output.metrics, metrics)
write_csv(snakemake.output.summary, summary)
write_csv(snakemake.output.fidelity, fidelity)
text = readable_summary(summary, fidelity, chance=1.0 / len(plan.classes))
write_text(snakemake.output.readable, text)
log.info("\n%s", text)
