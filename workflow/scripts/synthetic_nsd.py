"""Rule synthetic_nsd: write the synthetic mini-NSD."""
from brainldm import nsd
from brainldm.logs import redirect_to_log
from brainldm.synthetic import SyntheticDesign, write_synthetic_nsd

with redirect_to_log(snakemake.log[0]):
    p = snakemake.params
    s = p.synthetic
    design = SyntheticDesign(
        subjects=tuple(p.subjects), n_sessions=p.n_sessions, trials_per_session=s["trials_per_session"],
        n_shared_images=s["n_shared_images"], n_images=s["n_images"], image_size=s["image_size"],
        snr=s["snr"], seed=s["seed"], nsd_quirks=s["nsd_quirks"],
    )
    expdesign = str(snakemake.output[0])  # the first output; nsd_root is the part before its NSD key
    root = expdesign[: -len(nsd.relpath("expdesign"))]
    write_synthetic_nsd(root, design, p.pycortex_cache)
