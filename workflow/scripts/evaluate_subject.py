"""Rule evaluate_subject: recons.h5, decoded and true c -> per-image scores, per-sample similarities, retrieval."""
import torch

from brainldm.logs import redirect_to_log
from brainldm.metrics import evaluate_subject

with redirect_to_log(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    p = snakemake.params
    evaluate_subject(
        recons_path=snakemake.input.recons,
        subject=snakemake.wildcards.subject,
        scores_path=snakemake.output.scores,
        sample_scores_path=snakemake.output.samples,
        weights=dict(p.weights),
        conditions=list(p.conditions),
        batch_size=p.batch_size,
        image_size=dict(p.image_size),
        retrieval_path=snakemake.output.retrieval,
        decoded_c_path=snakemake.input.decoded_c,
        true_c_path=snakemake.input.true_c,
        retrieval=dict(p.retrieval),
    )
