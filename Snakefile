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
# Every cache (matplotlib, fontconfig, torch inductor, Hugging Face unless HF_HOME is set)
# under the working directory's .cache/, whatever HOME and TMPDIR are; jobs inherit it.
from brainldm.cache_env import project_cache_env

os.environ.update(project_cache_env(os.getcwd(), os.environ))
# Progress bars in the jobs' log files: a fixed width and at most one update every 10 s.
for key, value in {"TQDM_MININTERVAL": "10", "TQDM_NCOLS": "100"}.items():
    os.environ.setdefault(key, value)


# The base config is the workflow's, wherever snakemake runs (--directory elsewhere):
# a user's --configfile then only overrides what it sets. A YAML syntax error in it
# names the file and line (files given with --configfile are parsed by Snakemake
# itself, before this Snakefile runs).
from brainldm.config_check import ConfigError, check_yaml, describe_error

BASE_CONFIG = os.path.join(workflow.basedir, "config", "config.yaml")
check_yaml(BASE_CONFIG)


configfile: BASE_CONFIG


# A schema error names the key, its value and the rule, not the whole schema.
try:
    validate(config, "workflow/schemas/config.schema.yaml")
except Exception as err:
    import yaml as _yaml

    with open(os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml")) as _f:
        _message = describe_error(config, _yaml.safe_load(_f))
    if _message is None:
        raise
    raise ConfigError(_message) from None

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
