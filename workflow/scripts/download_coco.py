"""Rule download_coco_captions: COCO's caption JSONs from its annotation archive."""
from brainldm.download import fetch_coco_captions
from brainldm.logs import redirect_to_log

with redirect_to_log(snakemake.log[0]):
    fetch_coco_captions(
        url=snakemake.params.url,
        train_dest=snakemake.output.get("train"),  # only the missing ones are outputs
        val_dest=snakemake.output.get("val"),
    )
