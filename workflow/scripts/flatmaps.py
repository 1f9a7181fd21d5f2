"""Rule encoding_maps: NIfTI maps and pycortex flatmaps of one encoding analysis."""
from brainldm.logs import redirect_to_log
from brainldm.maps import write_maps

with redirect_to_log(snakemake.log[0]):
    settings = dict(snakemake.params.settings)
    write_maps(
        npz_path=snakemake.input.npz,
        voxels_path=snakemake.input.voxels,
        brainmask=snakemake.input.brainmask,
        out_dir=snakemake.output.maps,
        subject=snakemake.wildcards.subject,
        pycortex_subject=settings["pycortex_subject"],
        pycortex_xfm=settings["pycortex_xfm"],
        pycortex_filestore=settings["pycortex_filestore"],
        cache_dir=snakemake.params.cache_dir,
        r_vmax=settings["r_vmax"],
        pycortex_resample=settings["pycortex_resample"],
    )
