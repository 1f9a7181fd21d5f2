"""The parse-time weights lookup (brainldm.metric_weights, no torch) finds the files
torchvision and torch.hub would: the same URLs, the same hub folder."""

from __future__ import annotations

import pytest
import torch.hub
import torchvision

from brainldm.metric_features import _TORCHVISION
from brainldm.metric_weights import TORCHVISION_URLS, torch_hub_dir


def test_urls_are_torchvisions():
    assert set(TORCHVISION_URLS) == set(_TORCHVISION)
    for name, (_, enum_name, member) in _TORCHVISION.items():
        assert TORCHVISION_URLS[name] == getattr(getattr(torchvision.models, enum_name), member).url


@pytest.mark.parametrize("env", [{}, {"XDG_CACHE_HOME": "/x/cache"}, {"TORCH_HOME": "/t", "XDG_CACHE_HOME": "/x"}])
def test_hub_dir_is_torch_hubs(monkeypatch, env):
    for key in ("TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert torch_hub_dir() == torch.hub.get_dir()
