"""Offline for real (issue 17.4): with the offline environment the Snakefile sets for
model.local_files_only, loading the model and the metric networks attempts no connection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from brainldm.offline import OFFLINE_ENV, apply_offline, offline_env

GUARDED = textwrap.dedent("""
    import json, socket, sys
    attempts = []
    real_connect = socket.socket.connect

    def guard(self, address, *a, **k):
        attempts.append(repr(address))
        raise OSError("socket guard: no network in this test")

    socket.socket.connect = guard
    real_getaddrinfo = socket.getaddrinfo

    def guard_dns(host, *a, **k):  # a name lookup comes first (and fails first without network)
        attempts.append(f"getaddrinfo {host}")
        raise socket.gaierror("socket guard: no network in this test")

    socket.getaddrinfo = guard_dns
    socket.socket.connect_ex = lambda self, address: (attempts.append(repr(address)), 111)[1]
    # the guard works: a direct connection is caught
    try:
        socket.create_connection(("huggingface.co", 443), timeout=1)
    except OSError:
        pass
    assert attempts, "socket guard saw no connection"
    attempts.clear()

    from brainldm.models import load_pipeline
    from brainldm.metric_features import WeightsConfig, load_network
    pipe = load_pipeline(sys.argv[1], device="cpu", local_files_only=True)
    clip_folder = load_network("clip", WeightsConfig(mode="pretrained", clip_model=sys.argv[2]))
    clip_hub = load_network("clip", WeightsConfig(mode="pretrained", clip_model="openai/clip-vit-large-patch14"))
    tv = load_network("alexnet", WeightsConfig(mode="pretrained", torch_weights_dir=sys.argv[3]))
    print(json.dumps({"attempts": attempts, "clip_folder": clip_folder.weights, "clip_hub": clip_hub.weights,
                      "alexnet": tv.weights}))
""")


def test_offline_env_follows_local_files_only():
    assert offline_env(True) == OFFLINE_ENV and offline_env(False) == {}
    env: dict = {}
    assert apply_offline(True, env) == OFFLINE_ENV and env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"


def test_model_and_metric_loading_make_no_connection(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from brainldm.metric_features import SMALL_CLIP
    from brainldm.models import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny", seed=0)
    CLIPVisionModelWithProjection(CLIPVisionConfig(**SMALL_CLIP)).save_pretrained(tmp_path / "clip")
    script = tmp_path / "guarded.py"
    script.write_text(GUARDED)

    def guarded_run(local_files_only: bool) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in OFFLINE_ENV}
        apply_offline(local_files_only, env)  # what the Snakefile does for the jobs
        env["HF_HOME"] = str(tmp_path / "hf")  # an empty cache: the hub id is not there
        env["TORCH_HOME"] = str(tmp_path / "torch")
        out = subprocess.run([sys.executable, str(script), str(model), str(tmp_path / "clip"),
                              str(tmp_path / "none")], env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    res = guarded_run(True)
    assert res["attempts"] == []
    assert res["clip_folder"] == str(tmp_path / "clip")
    assert res["clip_hub"] == "unavailable" and res["alexnet"] == "unavailable"
    # control: without the offline switches the same loading does try the hub
    assert any("huggingface.co" in a for a in guarded_run(False)["attempts"])
