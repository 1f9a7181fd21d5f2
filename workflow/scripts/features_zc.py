"""Rule features_zc: the zc features of every stimulus (resumable shards, then one file)."""
from brainldm.feature_shards import extract_family
from brainldm.logs import redirect_to_log

with redirect_to_log(snakemake.log[0]):
    i, p = snakemake.input, snakemake.params
    extract_family(
        "zc", i.table, snakemake.output[0], model=p.model, settings=dict(p.settings),
        z_file=i.z, c_file=i.c,
        device=p.device, local_files_only=p.local_files_only, threads=snakemake.threads,
        require_gpu=bool(snakemake.resources.get("gpu", 0)),
    )
