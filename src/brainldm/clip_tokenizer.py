"""CLIP's own BPE tokenizer, rebuilt offline as a Hugging Face ``CLIPTokenizer`` folder.

Stable Diffusion v1.4's tokenizer is OpenAI CLIP's: a byte-level BPE whose merges ship as
``bpe_simple_vocab_16e6.txt.gz`` (in OpenAI's CLIP repository and in PyPI packages such as
``clip-anytorch``). ``make install`` runs ``python -m brainldm.clip_tokenizer``, which
downloads the pinned ``clip-anytorch`` wheel into ``.wheels/`` (pip, once) and writes the
``vocab.json`` and ``merges.txt`` that ``CLIPTokenizer.from_pretrained`` reads. The tiny
model and the full-architecture GPU benchmark use that folder, so every test tokenises
captions exactly as Stable Diffusion does.

The vocabulary is CLIP's: the 256 byte symbols, the same with the end-of-word marker
``</w>``, one token per merge (the file's first 48,894), then ``<|startoftext|>`` and
``<|endoftext|>``: 49,408 tokens.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

#: The PyPI wheel that carries the BPE file (pure Python, 1.37 MB), pinned by version and hash.
WHEEL = "clip-anytorch==2.6.0"
WHEEL_FILE = "clip_anytorch-2.6.0-py3-none-any.whl"
WHEEL_SHA256 = "ebc0afed243851b9dc7e16ab8afb665237e8a5838986e97cd99f123ae4ce94ce"
#: The BPE merges inside it; the same bytes as OpenAI CLIP's clip/bpe_simple_vocab_16e6.txt.gz.
BPE_MEMBER = "clip/bpe_simple_vocab_16e6.txt.gz"
BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
#: Merges CLIP uses: 49,152 - 256 - 2 (the file holds more; CLIP reads lines 1..48,894).
N_MERGES = 49152 - 256 - 2
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
VOCAB_SIZE = 2 * 256 + N_MERGES + len(SPECIAL_TOKENS)
_REPO = Path(__file__).resolve().parents[2]
#: Where ``make install`` writes the folder, and keeps the wheel (both ignored by git).
DEFAULT_DIR = _REPO / "resources" / "clip_tokenizer"
WHEEL_DIR = _REPO / ".wheels"
FILES = ("vocab.json", "merges.txt")


class TokenizerBuildError(ValueError):
    """The BPE source is missing, corrupt or not the pinned one; the message names the file."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_bpe(source: str | os.PathLike) -> bytes:
    """The gzipped BPE merges from the pinned wheel (.whl) or the bare .txt.gz, hash-checked."""
    source = Path(source)
    if not source.is_file():
        raise TokenizerBuildError(f"{source} does not exist: run `make install` (it downloads {WHEEL})")
    if source.suffix == ".whl":
        if _sha256(source.read_bytes()) != WHEEL_SHA256:
            raise TokenizerBuildError(f"{source} is not the pinned {WHEEL} wheel (SHA-256 differs): delete it "
                                      "and run `make install` again")
        with zipfile.ZipFile(source) as wheel:
            data = wheel.read(BPE_MEMBER)
    else:
        data = source.read_bytes()
    if _sha256(data) != BPE_SHA256:
        raise TokenizerBuildError(f"the BPE merges from {source} are not CLIP's bpe_simple_vocab_16e6.txt.gz "
                                  f"(SHA-256 {_sha256(data)[:12]}..., expected {BPE_SHA256[:12]}...)")
    return data


def fetch_wheel(dest: str | os.PathLike = WHEEL_DIR) -> Path:
    """The pinned wheel in ``dest``, downloaded from the package index with pip if absent."""
    wheel = Path(dest) / WHEEL_FILE
    if not wheel.is_file():
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
               "--dest", str(dest), WHEEL]
        if subprocess.run(cmd).returncode != 0 or not wheel.is_file():
            raise TokenizerBuildError(f"could not download {WHEEL} into {dest} (`{' '.join(cmd)}`): this needs "
                                      "the package index once; or put the wheel (or bpe_simple_vocab_16e6.txt.gz) "
                                      "there by hand")
    return wheel


def clip_merges(bpe_gz: bytes) -> list[tuple[str, str]]:
    """The N_MERGES merge pairs CLIP uses, in rank order (line 0 of the file is a header)."""
    lines = gzip.decompress(bpe_gz).decode("utf-8").split("\n")[1:N_MERGES + 1]
    return [tuple(line.split()) for line in lines]


def byte_symbols() -> list[str]:
    """The 256 byte symbols of byte-level BPE (GPT-2's and CLIP's) in CLIP's vocabulary order:
    the printable Latin-1 bytes, which stand for themselves, in byte order; then the other
    bytes, in byte order, as the code points 256, 257, ..."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    n_other = 256 - len(printable)
    return [chr(b) for b in printable] + [chr(256 + k) for k in range(n_other)]


def clip_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """token -> id as CLIP builds it: bytes, bytes + ``</w>``, merges, special tokens."""
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + list(SPECIAL_TOKENS)
    return {token: i for i, token in enumerate(tokens)}


def write_tokenizer(source: str | os.PathLike, out_dir: str | os.PathLike = DEFAULT_DIR) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` (CLIPTokenizer's files) into ``out_dir``, atomically."""
    merges = clip_merges(read_bpe(source))
    vocab = clip_vocab(merges)
    if len(vocab) != VOCAB_SIZE:
        raise TokenizerBuildError(f"{source}: {len(vocab)} tokens, expected {VOCAB_SIZE}")
    from brainldm.io import atomic_dir  # numpy: not at parse time, where only check_tokenizer_dir runs

    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
        (tmp / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return out_dir


def check_tokenizer_dir(folder: str | os.PathLike = DEFAULT_DIR) -> Path:
    """``folder`` if it holds the tokenizer files, else an error that says how to build them."""
    folder = Path(folder)
    for name in FILES:
        if not (folder / name).is_file():
            raise TokenizerBuildError(
                f"CLIP tokenizer file {folder / name} is missing: run `make install` (it builds the folder from "
                f"the pinned {WHEEL} wheel; or `python -m brainldm.clip_tokenizer SOURCE {folder}` with SOURCE "
                "that wheel or CLIP's bpe_simple_vocab_16e6.txt.gz)"
            )
    return folder


def main(argv: list[str] | None = None) -> int:
    """``python -m brainldm.clip_tokenizer [SOURCE [OUT_DIR]]``: build the tokenizer folder.

    SOURCE: the wheel or CLIP's .txt.gz (default: the pinned wheel in .wheels/, downloaded
    if absent); OUT_DIR: default resources/clip_tokenizer.
    """
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 2 or any(a.startswith("-") for a in args):
        print(main.__doc__, file=sys.stderr)
        return 2
    try:
        source = args[0] if args else fetch_wheel()
        out = write_tokenizer(source, *args[1:])
    except TokenizerBuildError as err:
        print(err, file=sys.stderr)
        return 1
    print(f"CLIP tokenizer ({VOCAB_SIZE} tokens, from {source}) written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
