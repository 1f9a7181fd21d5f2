"""Rule features: the z or c features of every stimulus (resumable shards, then one file)."""
from brainldm.feature_shards import extract_family
from brainldm.logs import redirect_to_log

with redirect_to_log(snakemake.log[0]):
    i, p = snakemake.input, snakemake.params
    family = snakemake.wildcards.family
    sources = {k: i[k] for k in ("stimuli", "stim_info", "captions_train", "captions_val") if k in i.keys()}
    extract_family(
        family, i.table, snakemake.output[0], model=p.model, settings=dict(p.settings),
        stimuli_hdf5=sources.get("stimuli"), stim_info=sources.get("stim_info"),
        captions_train=sources.get("captions_train"), captions_val=sources.get("captions_val"),
        device=p.device, local_files_only=p.local_files_only, threads=snakemake.threads,
        require_gpu=bool(snakemake.resources.get("gpu", 0)),
    )
