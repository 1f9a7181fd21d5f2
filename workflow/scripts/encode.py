"""Rule encode: fit one encoding analysis (wildcard analysis) of one subject."""
from brainldm.encoding import run
from brainldm.logs import redirect_to_log

with redirect_to_log(snakemake.log[0]):
    run(
        analysis=snakemake.wildcards.analysis,
        inputs={k: str(v) for k, v in snakemake.input.items()},
        settings=dict(snakemake.params.settings),
        npz_path=snakemake.output.npz,
        threads=snakemake.threads,
    )
