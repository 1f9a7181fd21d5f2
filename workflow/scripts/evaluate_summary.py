"""Rule evaluation_summary: per-subject scores and retrieval -> metrics.csv/.md/.png and wilcoxon.tsv."""
from brainldm.logs import redirect_to_log
from brainldm.metrics import summarize

with redirect_to_log(snakemake.log[0]):
    o = snakemake.output
    summarize(
        scores_paths=list(snakemake.input.scores),
        retrieval_paths=list(snakemake.input.retrieval),
        metrics_csv=o.csv,
        metrics_md=o.md,
        metrics_png=o.png,
        wilcoxon_tsv=o.wilcoxon,
        conditions=list(snakemake.params.conditions),
        alpha=snakemake.params.alpha,
    )
