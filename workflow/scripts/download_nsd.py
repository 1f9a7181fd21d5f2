"""Rule download_nsd_file: fetch one key of the public NSD bucket into nsd_root."""
import sys

from brainldm.download import fetch_nsd_file

sys.stderr = open(snakemake.log[0], "w", buffering=1)  # progress and errors go to the log
fetch_nsd_file(
    key=snakemake.params.key,
    dest=snakemake.output[0],
    endpoint_url=snakemake.params.endpoint_url,
    bucket=snakemake.params.bucket,
)
