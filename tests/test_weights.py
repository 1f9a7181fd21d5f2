"""brainldm.weights: weights files are checked against the SHA-256 prefix in their name (issue 17.5)."""

from __future__ import annotations

import hashlib

import pytest
import torch

from brainldm.metric_features import MetricWeightsError, WeightsConfig, load_network
from brainldm.weights import WeightsHashError, check_hash_in_name, hash_prefix


def test_hash_prefix_from_torchvision_names():
    assert hash_prefix("alexnet-owt-7be5be79.pth") == "7be5be79"
    assert hash_prefix("/x/efficientnet_b1-c27df63c.pth") == "c27df63c"
    assert hash_prefix("inception_v3_google-0cc3c7bd.pth") == "0cc3c7bd"
    assert hash_prefix("swav_800ep_pretrain.pth.tar") is None
    assert hash_prefix("my-weights.pth") is None  # "weights" is not hex


def test_matching_file_passes_and_mismatch_is_refused(tmp_path):
    data = b"some checkpoint bytes"
    digest = hashlib.sha256(data).hexdigest()
    good = tmp_path / f"net-{digest[:8]}.pth"
    good.write_bytes(data)
    check_hash_in_name(good)
    (tmp_path / "plain.pth").write_bytes(b"anything")
    check_hash_in_name(tmp_path / "plain.pth")  # no hash in the name: nothing to check
    bad = tmp_path / f"net-{'0' if digest[0] != '0' else '1'}{digest[1:8]}.pth"
    bad.write_bytes(data)
    with pytest.raises(WeightsHashError, match=rf"{bad.name} is not the file its name says: .*prefix "
                                               rf".* hashes to {digest[:8]}.*from https://x"):
        check_hash_in_name(bad, "https://x")


def test_torchvision_file_with_other_weights_is_refused(tmp_path):
    """A random AlexNet saved under torchvision's ImageNet file name is not reported as ImageNet."""
    import torchvision

    torch.manual_seed(0)
    path = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    with pytest.raises(MetricWeightsError, match=r"alexnet weights: .*alexnet-owt-7be5be79.pth is not the file its "
                                                 r"name says: .*download.pytorch.org"):
        load_network("alexnet", WeightsConfig(mode="pretrained", torch_weights_dir=str(tmp_path)))
