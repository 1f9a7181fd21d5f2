"""Rule decoding_scores: concatenate every subject's decoding score tables."""
from brainldm.decoding import gather_scores
from brainldm.logs import redirect_to_log

with redirect_to_log(snakemake.log[0]):
    gather_scores(snakemake.input, snakemake.output[0])
