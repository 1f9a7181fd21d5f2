"""Rule download_nsd_file: fetch one key of the public NSD bucket into nsd_root."""
from brainldm.download import fetch_nsd_file
from brainldm.logs import redirect_to_log

with redirect_to_log(snakemake.log[0]):
    fetch_nsd_file(
        key=snakemake.params.key,
        dest=snakemake.output[0],
        endpoint_url=snakemake.params.endpoint_url,
        bucket=snakemake.params.bucket,
    )
