"""Rule features_zc: the zc and U-Net features of every stimulus from one img2img pass (resumable shards, then one file each)."""
from brainldm.feature_shards import extract_family
from brainldm.logs import redirect_to_log

with redirect_to_log(snakemake.log[0]):
    i, p = snakemake.input, snakemake.params
    extract_family(
        "zc", i.table, snakemake.output.zc, unet_out_file=snakemake.output.unet, model=p.model, settings=dict(p.settings),
        z_file=i.z, c_file=i.c,
        device=p.device, local_files_only=p.local_files_only, threads=snakemake.threads,
        require_gpu=bool(snakemake.resources.get("gpu", 0)),
    )
