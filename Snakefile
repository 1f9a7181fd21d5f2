# brainldm: reconstruct seen images from fMRI with a latent diffusion model
# (Takagi & Nishimoto, CVPR 2023) and map the model's parts on the cortex.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/decoding.smk"
include: "workflow/rules/reconstruction.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/encoding.smk"


rule all:
    default_target: True
    input:
        all_targets(),
