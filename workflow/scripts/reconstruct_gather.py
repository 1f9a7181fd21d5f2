"""Rule reconstruct_gather: shards -> recons.h5 (with the originals)."""
from brainldm.logs import redirect_to_log
from brainldm.reconstruct import gather

with redirect_to_log(snakemake.log[0]):
    gather(
        shard_files=snakemake.input.shards,
        z_npz=snakemake.input.z,
        stimuli_file=snakemake.input.stimuli,
        out_h5=snakemake.output.h5,
        subject=snakemake.wildcards.subject,
        settings=dict(snakemake.params.settings),
    )
