"""Rule evaluation_summary: per-subject scores, retrieval and sessions used -> metrics.csv/.md/.png and wilcoxon.tsv."""
from brainldm.logs import redirect_to_log
from brainldm.metrics import summarize

with redirect_to_log(snakemake.log[0]):
    o = snakemake.output
    summarize(
        scores_paths=list(snakemake.input.scores),
        retrieval_paths=list(snakemake.input.retrieval),
        sessions_paths=dict(zip(snakemake.params.subjects, snakemake.input.sessions)),
        metrics_csv=o.csv,
        metrics_md=o.md,
        metrics_png=o.png,
        wilcoxon_tsv=o.wilcoxon,
        conditions=list(snakemake.params.conditions),
        alpha=snakemake.params.alpha,
    )
