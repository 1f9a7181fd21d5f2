# brainldm: reconstruct seen images from fMRI with a latent diffusion model
# (Takagi & Nishimoto, CVPR 2023) and map the model's parts on the cortex.
import os

from snakemake.utils import min_version, validate

min_version("9.0")

# The rule scripts import the brainldm package from src/, in any software environment.
os.environ.update(
    PYTHONPATH=os.pathsep.join(
        p for p in (os.path.join(workflow.basedir, "src"), os.environ.get("PYTHONPATH")) if p
    )
)
# Progress bars in the jobs' log files: a fixed width and at most one update every 10 s.
for key, value in {"TQDM_MININTERVAL": "10", "TQDM_NCOLS": "100"}.items():
    os.environ.setdefault(key, value)


# The base config is the workflow's, wherever snakemake runs (--directory elsewhere):
# a user's --configfile then only overrides what it sets.
configfile: os.path.join(workflow.basedir, "config", "config.yaml")


validate(config, "workflow/schemas/config.schema.yaml")

# model.local_files_only: the jobs (models, metric networks) make no network attempt at all.
from brainldm.offline import apply_offline

apply_offline(config["model"]["local_files_only"])


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
