"""The ``features:`` config keys each feature family's values depend on: what the
workflow tracks as each features rule's params while it parses, so this module imports
only the standard library (the settings themselves are checked in the jobs, by
:class:`brainldm.features.FeatureSettings`; the config schema checks types and ranges
at parse time).
"""

from __future__ import annotations

from collections.abc import Mapping

#: Settings that change each family's output (besides the model and dtype).
FAMILY_KEYS = {
    "z": ("z_resolution", "z_posterior", "seed"),
    "c": (),
    "zc": ("num_inference_steps", "guidance_scale", "eta", "strengths", "stage_strength", "fractions", "seed"),
    "unet": ("num_inference_steps", "guidance_scale", "eta", "stage_strength", "fractions", "seed",
             "unet_layers", "unet_pool_size"),
}
#: Settings that only change how the work is cut (not the values).
BATCHING_KEYS = ("batch_size", "shard_size", "dtype")


def family_keys(family: str) -> tuple[str, ...]:
    """The ``features:`` keys one family depends on: its own, then the batching ones."""
    return (*FAMILY_KEYS[family], *BATCHING_KEYS)


def family_config(family: str, section: Mapping) -> dict:
    """Those keys' values from a complete ``features:`` section (the workflow's config, where
    the schema has filled in every default), as ``FeatureSettings.as_dict()`` gives them:
    strengths and fractions as lists of floats, the U-Net layers as a new dict."""
    out = {}
    for key in family_keys(family):
        value = section[key]
        if key in ("strengths", "fractions"):
            value = [float(x) for x in value]
        elif key == "unet_layers":
            value = dict(value)
        out[key] = value
    return out
