"""Rule build_tiny_model: build (VAE, text-encoder and U-Net fits included) and save the tiny SD-shaped model into the folder of model_index.json."""
from pathlib import Path

from brainldm.logs import redirect_to_log
from brainldm.models import build_tiny_model

with redirect_to_log(snakemake.log[0]):
    build_tiny_model(Path(snakemake.output[0]).parent, seed=snakemake.params.seed,
                     tokenizer_dir=Path(snakemake.input.vocab).parent, vae_steps=snakemake.params.vae_steps,
                     unet_steps=snakemake.params.unet_steps)
