"""Caches stay under the project whatever HOME and TMPDIR are."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from brainldm.cache_env import project_cache_env


def test_caches_under_the_working_directory(tmp_path):
    env = project_cache_env(tmp_path, {})
    cache = tmp_path.resolve() / ".cache"
    assert env == {
        "MPLCONFIGDIR": str(cache / "matplotlib"),
        "XDG_CACHE_HOME": str(cache),
        "TORCHINDUCTOR_CACHE_DIR": str(cache / "torchinductor"),
        "TRITON_CACHE_DIR": str(cache / "triton"),
        "HF_HOME": str(cache / "huggingface"),
    }


def test_the_users_hf_home_and_existing_hf_cache_are_kept(tmp_path):
    assert "HF_HOME" not in project_cache_env(tmp_path, {"HF_HOME": "/models/hf"})
    home = tmp_path / "home"
    (home / ".cache" / "huggingface").mkdir(parents=True)
    assert project_cache_env(tmp_path / "proj", {"HOME": str(home)})["HF_HOME"] == str(home / ".cache" / "huggingface")
    # a user's XDG_CACHE_HOME is replaced for the tools, but the models cached under it stay visible
    xdg = tmp_path / "xdg"
    (xdg / "huggingface").mkdir(parents=True)
    env = project_cache_env(tmp_path / "proj", {"XDG_CACHE_HOME": str(xdg)})
    assert env["HF_HOME"] == str(xdg / "huggingface") and env["XDG_CACHE_HOME"] == str((tmp_path / "proj").resolve() / ".cache")



@pytest.mark.parametrize("home", ["unset", "elsewhere"])
def test_matplotlib_and_fontconfig_write_under_the_project(tmp_path, home):
    """With HOME/TMPDIR unset or pointing elsewhere; without the env, matplotlib writes to $HOME/.cache."""
    proj, elsewhere = tmp_path / "proj", tmp_path / "elsewhere"
    proj.mkdir()
    (elsewhere / "home").mkdir(parents=True)
    (elsewhere / "tmp").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("HOME", "TMPDIR", "MPLCONFIGDIR", "XDG_CACHE_HOME", "HF_HOME")}
    if home == "elsewhere":
        env.update(HOME=str(elsewhere / "home"), TMPDIR=str(elsewhere / "tmp"))
    env.update(project_cache_env(proj, env))
    code = (
        "import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt; "
        "fig = plt.figure(); fig.text(0.5, 0.5, 'x'); fig.savefig('f.png'); print(matplotlib.get_cachedir())"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=proj, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(proj.resolve() / ".cache" / "matplotlib")
    assert any((proj / ".cache" / "matplotlib").iterdir())  # the font cache is there
    assert not any((elsewhere / "home").iterdir()) and not any((elsewhere / "tmp").iterdir())
