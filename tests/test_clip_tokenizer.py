"""brainldm.clip_tokenizer: CLIP's own tokenizer, rebuilt offline, gives CLIP's ids (issue 17.7)."""

from __future__ import annotations

import gzip
import importlib.util
import sys
import types
import zipfile

import numpy as np
import pytest
from transformers import CLIPTokenizer

from brainldm import clip_tokenizer, scenes
from brainldm.clip_tokenizer import TokenizerBuildError

# Stable Diffusion v1.4's ids (CLIP ViT-L/14's tokenizer) of a few captions: BOS 49406 ... EOS 49407.
PINNED = {
    "a photo of a cat": [49406, 320, 1125, 539, 320, 2368, 49407],
    "A man riding a wave on top of a surfboard.":
        [49406, 320, 786, 6765, 320, 4535, 525, 1253, 539, 320, 10176, 1972, 269, 49407],
    "Two dogs playing with a frisbee in the grass!":
        [49406, 1237, 3255, 1629, 593, 320, 45768, 530, 518, 5922, 256, 49407],
    "A red circle on a blue background": [49406, 320, 736, 7117, 525, 320, 1746, 5994, 49407],
}
COCO_LIKE = [
    "A giraffe standing next to a tree in a zoo enclosure.",
    "Several people are flying kites at the beach on a sunny day",
    "a plate of food with broccoli, rice and   chicken;   tasty!!",
    "An old-fashioned clock tower (built in 1890s) near the café.",
    "There's a bathroom with a toilet & a sink — very clean :)",
]


@pytest.fixture(scope="module")
def tok() -> CLIPTokenizer:
    folder = clip_tokenizer.check_tokenizer_dir()
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=77)


@pytest.fixture(scope="module")
def clip_own(tmp_path_factory):
    """CLIP's own pure-Python tokenizer (clip/simple_tokenizer.py from the pinned wheel).
    Its ftfy.fix_text (mojibake repair) is the identity here: the captions are clean text."""
    wheel = clip_tokenizer.WHEEL_DIR / clip_tokenizer.WHEEL_FILE
    assert wheel.is_file(), f"{wheel} is missing: run make install"
    d = tmp_path_factory.mktemp("clip")
    with zipfile.ZipFile(wheel) as z:
        (d / "simple_tokenizer.py").write_bytes(z.read("clip/simple_tokenizer.py"))
        (d / "bpe.txt.gz").write_bytes(z.read(clip_tokenizer.BPE_MEMBER))
    saved = sys.modules.get("ftfy")
    sys.modules["ftfy"] = types.SimpleNamespace(fix_text=lambda text: text)
    try:
        spec = importlib.util.spec_from_file_location("clip_simple_tokenizer", d / "simple_tokenizer.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        encoder = module.SimpleTokenizer(str(d / "bpe.txt.gz"))
    finally:
        sys.modules.pop("ftfy")
        if saved is not None:
            sys.modules["ftfy"] = saved
    return lambda text: [49406, *encoder.encode(text), 49407]


def test_pinned_ids(tok):
    assert len(tok) == clip_tokenizer.VOCAB_SIZE == 49408
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (49406, 49407, 49407)
    for caption, ids in PINNED.items():
        assert tok(caption).input_ids == ids, caption


def test_same_ids_as_clips_own_tokenizer(tok, clip_own):
    rng = np.random.default_rng(0)
    synthetic = [c for _ in range(20) for c in scenes.captions(scenes.random_scene(rng), rng)]
    for caption in [*PINNED, *COCO_LIKE, *synthetic]:
        assert tok(caption).input_ids == clip_own(caption), caption
    # padded to CLIP's 77 tokens as Stable Diffusion's pipelines do
    ids = tok(COCO_LIKE[0], padding="max_length", max_length=77, truncation=True).input_ids
    assert len(ids) == 77 and ids[-1] == 49407


def test_build_from_the_bare_bpe_file_and_refuse_other_files(tmp_path, tok):
    with zipfile.ZipFile(clip_tokenizer.WHEEL_DIR / clip_tokenizer.WHEEL_FILE) as z:
        data = z.read(clip_tokenizer.BPE_MEMBER)
    bpe = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    bpe.write_bytes(data)
    out = clip_tokenizer.write_tokenizer(bpe, tmp_path / "tok")
    for name in clip_tokenizer.FILES:
        assert (out / name).read_bytes() == (clip_tokenizer.DEFAULT_DIR / name).read_bytes()
    other = tmp_path / "other.txt.gz"
    other.write_bytes(gzip.compress(gzip.decompress(data).replace(b"t h", b"h t", 1)))
    with pytest.raises(TokenizerBuildError, match=r"other\.txt\.gz are not CLIP's bpe_simple_vocab_16e6"):
        clip_tokenizer.write_tokenizer(other, tmp_path / "tok2")
    assert not (tmp_path / "tok2").exists()
    fake_wheel = tmp_path / clip_tokenizer.WHEEL_FILE
    fake_wheel.write_bytes(b"PK")
    with pytest.raises(TokenizerBuildError, match=r"is not the pinned clip-anytorch==2\.6\.0 wheel"):
        clip_tokenizer.read_bpe(fake_wheel)
    with pytest.raises(TokenizerBuildError, match=r"missing\.whl does not exist: run `make install`"):
        clip_tokenizer.read_bpe(tmp_path / "missing.whl")
    with pytest.raises(TokenizerBuildError, match=r"tokenizer file .*nowhere/vocab\.json is missing: run `make install`"):
        clip_tokenizer.check_tokenizer_dir(tmp_path / "nowhere")
