"""Rule ingest: one subject's betas -> per-ROI train/test arrays."""
from pathlib import Path

from brainldm.ingest import ingest_subject
from brainldm.logs import redirect_to_log

with redirect_to_log(snakemake.log[0]):
    i, p = snakemake.input, snakemake.params
    ingest_subject(
        subject=snakemake.wildcards.subject,
        betas_files=list(i.betas),
        brainmask_file=i.brainmask,
        atlas_files={"streams": i.streams, "prf-visualrois": i.prf},
        responses_files=dict(zip(p.subjects, i.responses)),
        expdesign_file=i.expdesign,
        rois=p.rois,
        out_dir=Path(snakemake.output[0]).parent,
        zscore=p.zscore,
        bad_sessions=p.bad_sessions,
        sessions=p.sessions,
    )
