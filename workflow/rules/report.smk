rule report:
    """Long-form metrics, fold summaries with paired tests, class fidelity, and a readable summary."""
    input:
        evaluation_targets(),
    output:
        metrics="results/report/metrics.csv",
        summary="results/report/summary.csv",
        fidelity="results/report/fidelity.csv",
        readable="results/report/summary.md",
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{BENCH}/report.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        settings=SETTINGS.to_dict(),
        generation=config["generation"],
    script:
        "../scripts/report.py"
