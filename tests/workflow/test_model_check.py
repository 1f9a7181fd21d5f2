"""A model that is not there stops the dry run (DAG construction) before anything is
downloaded or computed, with a message naming model.name and how to get it."""

from __future__ import annotations

import json

from .conftest import WorkflowRun, copy_workflow


def test_uncached_hub_id_and_incomplete_folder_fail_in_the_dry_run(tmp_path):
    run = WorkflowRun(copy_workflow(tmp_path / "wf", {"model": {"name": "CompVis/stable-diffusion-v1-4"}}))
    proc = run.snakemake("-n", check=False, extra_env={"HF_HOME": str(tmp_path / "empty_hf")})
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "model.name 'CompVis/stable-diffusion-v1-4' cannot be used" in out
    assert "hf download CompVis/stable-diffusion-v1-4" in out
    assert "Job stats" not in out

    folder = tmp_path / "sd"
    components = ["vae", "unet", "text_encoder", "tokenizer", "scheduler"]
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({c: ["diffusers", "X"] for c in components}))
    for c in components[:1]:
        (folder / c).mkdir()
        (folder / c / "config.json").write_text("{}")
        (folder / c / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    run = WorkflowRun(copy_workflow(tmp_path / "wf2", {"model": {"name": str(folder)}}))
    proc = run.snakemake("-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert f"model.name {str(folder)!r} cannot be used" in out and "lacks the component 'unet'" in out


def test_absent_pretrained_metric_weights_warn_at_start(tmp_path):
    run = WorkflowRun(copy_workflow(tmp_path / "wf", {"evaluation": {
        "metrics_weights": "pretrained", "torch_weights_dir": str(tmp_path / "none"),
        "clip_model": str(tmp_path / "no_clip")}}))
    proc = run.snakemake("-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for name in ("alexnet", "inception_v3", "efficientnet_b1", "swav", "clip"):
        assert f"warning: metric network {name} will be reported as unavailable" in out
