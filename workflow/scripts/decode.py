"""Rule decode: fit one subject's ridge decoder of one target and decode the test images."""
from brainldm.decoding import run
from brainldm.logs import redirect_to_log

with redirect_to_log(snakemake.log[0]):
    run(
        train_betas=snakemake.input.train,
        test_betas=snakemake.input.test,
        train_tsv=snakemake.input.train_tsv,
        test_tsv=snakemake.input.test_tsv,
        features=snakemake.input.features,
        npz_path=snakemake.output.npz,
        tsv_path=snakemake.output.scores,
        subject=snakemake.wildcards.subject,
        target=snakemake.wildcards.target,
        rois=snakemake.params.rois,
        settings=dict(snakemake.params.settings),
        threads=snakemake.threads,
    )
