"""Rule features_c: the c features of every stimulus (resumable shards, then one file)."""
from brainldm.feature_shards import extract_family
from brainldm.logs import redirect_to_log

with redirect_to_log(snakemake.log[0]):
    i, p = snakemake.input, snakemake.params
    extract_family(
        "c", i.table, snakemake.output[0], model=p.model, settings=dict(p.settings),
        stim_info=i.stim_info, captions_train=i.captions_train, captions_val=i.captions_val,
        device=p.device, local_files_only=p.local_files_only, threads=snakemake.threads,
        require_gpu=bool(snakemake.resources.get("gpu", 0)),
    )
