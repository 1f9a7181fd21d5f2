"""Rule download_coco_captions: COCO's caption JSONs from its annotation archive."""
import sys

from brainldm.download import fetch_coco_captions

sys.stderr = open(snakemake.log[0], "w", buffering=1)  # progress and errors go to the log
fetch_coco_captions(
    url=snakemake.params.url,
    train_dest=snakemake.output.train,
    val_dest=snakemake.output.val,
)
