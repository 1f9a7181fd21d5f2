"""Rule reconstruct_shard: zc, z-only and c-only images for one shard of test images."""
from brainldm.logs import redirect_to_log
from brainldm.reconstruct import reconstruct_shard

with redirect_to_log(snakemake.log[0]):
    reconstruct_shard(
        model=snakemake.params.model,
        z_npz=snakemake.input.z,
        c_npz=snakemake.input.c,
        out_h5=snakemake.output[0],
        subject=snakemake.wildcards.subject,
        shard=int(snakemake.wildcards.shard),
        settings=dict(snakemake.params.settings),
        device=snakemake.params.device,
        local_files_only=snakemake.params.local_files_only,
        threads=snakemake.threads,
        require_gpu=bool(snakemake.resources.get("gpu", 0)),
    )
