"""Test-wide settings: offline, caches inside the test session, small synthetic NSD fixtures."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# No hub access, ever: a hub call would otherwise retry for minutes before failing.
_CACHE = Path(tempfile.mkdtemp(prefix="brainldm-test-cache-"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", str(_CACHE / "huggingface"))
os.environ.setdefault("XDG_CONFIG_HOME", str(_CACHE / "config"))
os.environ.setdefault("MPLCONFIGDIR", str(_CACHE / "matplotlib"))
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def pycortex_cache(tmp_path_factory) -> Path:
    """A writable pycortex filestore shared by the whole test session."""
    return tmp_path_factory.mktemp("pycortex")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory, pycortex_cache) -> Path:
    """A small synthetic mini-NSD (2 subjects, 4 sessions x 150 trials, 40 shared images)."""
    from brainldm.synthetic import SyntheticDesign, write_synthetic_nsd

    root = tmp_path_factory.mktemp("synthetic_nsd")
    design = SyntheticDesign(subjects=(1, 2), n_sessions=4, trials_per_session=150, n_shared_images=40,
                             n_images=1400, image_size=64, snr=1.0, seed=0)
    write_synthetic_nsd(root, design, pycortex_cache)
    return root


@pytest.fixture(scope="session")
def synthetic_ingested(synthetic_root, tmp_path_factory) -> Path:
    """subj01 of :func:`synthetic_root` ingested (early, ventral, brain): the ingest output folder."""
    from brainldm import nsd
    from brainldm.ingest import ingest_subject

    out = tmp_path_factory.mktemp("ingest") / "subj01"
    root = synthetic_root
    ingest_subject(
        "subj01", [nsd.path(root, "betas_hdf5", "subj01", s) for s in range(1, 5)], nsd.path(root, "brainmask", "subj01"),
        {"streams": nsd.path(root, "roi_streams", "subj01"), "prf-visualrois": nsd.path(root, "roi_prf-visualrois", "subj01")},
        {s: nsd.path(root, "responses", s) for s in ("subj01", "subj02")}, nsd.path(root, "expdesign"),
        {"early": {"atlas": "streams", "labels": [1]}, "ventral": {"atlas": "streams", "labels": [5]}}, out,
    )
    return out


@pytest.fixture(scope="module")
def endpoint():
    """URL of a loopback S3 server (moto) for the download tests; stopped after the module."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
