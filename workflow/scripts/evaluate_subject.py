"""Rule evaluate_subject: recons.h5, decoded and true c, ingestion arrays and z.h5 -> per-image scores
(incl. brain correlation), per-sample similarities, retrieval."""
from brainldm.logs import redirect_to_log
from brainldm.metric_features import reuse_freed_memory
from brainldm.metrics import evaluate_subject
from brainldm.threads import limit_threads

with redirect_to_log(snakemake.log[0]):
    limit_threads(snakemake.threads)
    reuse_freed_memory()
    p, i = snakemake.params, snakemake.input
    evaluate_subject(
        recons_path=snakemake.input.recons,
        subject=snakemake.wildcards.subject,
        scores_path=snakemake.output.scores,
        sample_scores_path=snakemake.output.samples,
        weights=dict(p.weights),
        conditions=list(p.conditions),
        batch_size=p.batch_size,
        image_size=dict(p.image_size),
        retrieval_path=snakemake.output.retrieval,
        decoded_c_path=snakemake.input.decoded_c,
        true_c_path=snakemake.input.true_c,
        retrieval=dict(p.retrieval),
        brain=dict(
            ingest={
                "train": i.ingest_train, "test": i.ingest_test,
                "train_tsv": i.ingest_train_tsv, "test_tsv": i.ingest_test_tsv,
                **{f"voxels_{roi}": getattr(i, f"voxels_{roi}") for roi in p.rois},
            },
            z_h5=i.z, model=p.model, z_settings=dict(p.z_settings), encoding=dict(p.encoding),
            device=p.device, local_files_only=p.local_files_only,
        ),
    )
