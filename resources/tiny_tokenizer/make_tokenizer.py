"""Write the tiny model's CLIP tokenizer files (vocab.json, merges.txt) into this folder.

A hand-made, byte-level BPE vocabulary in CLIP's format: the 256 byte symbols, the
same symbols with CLIP's end-of-word marker ``</w>``, one whole-word token for every
word of the synthetic captions (colours, shapes, sizes, positions, counts,
backgrounds, articles), and CLIP's two special tokens. Any other text still
tokenizes, byte by byte. The merges are learnt from WORDS by plain BPE (the most
frequent adjacent pair first) until every word is one symbol.

Run: python resources/tiny_tokenizer/make_tokenizer.py (the output is committed).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

WORDS = """
a an the one two three four five six several some many no
of on in at to with and or near next beside above below under over by its is are
there this that it image picture photo photograph scene drawing view
left right top bottom middle center centre upper lower side corner edge half
small large big little tiny huge medium sized size
red green blue yellow orange purple pink white black gray grey brown cyan magenta
violet gold dark light bright pale
circle circles square squares triangle triangles rectangle rectangles ellipse
ellipses disk disks dot dots star stars shape shapes blob blobs stripe stripes
background backgrounds ground plain colored coloured solid filled
sky sand night grass sea object objects thing things stand stands standing out against
""".split()

HERE = Path(__file__).resolve().parent


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, map(chr, chars)))


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """BPE merges (most frequent pair first) that turn every word into one symbol."""
    byte_map = bytes_to_unicode()
    seqs = []
    for w in dict.fromkeys(words):
        symbols = [byte_map[b] for b in w.encode("utf-8")]
        symbols[-1] += "</w>"
        seqs.append(symbols)
    merges: list[tuple[str, str]] = []
    while True:
        pairs = Counter()
        for s in seqs:
            pairs.update(zip(s, s[1:]))
        if not pairs:
            return merges
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]  # deterministic ties
        merges.append(best)
        for i, s in enumerate(seqs):
            out, j = [], 0
            while j < len(s):
                if j + 1 < len(s) and (s[j], s[j + 1]) == best:
                    out.append(s[j] + s[j + 1])
                    j += 2
                else:
                    out.append(s[j])
                    j += 1
            seqs[i] = out


def main() -> None:
    byte_symbols = list(bytes_to_unicode().values())
    vocab_list = byte_symbols + [s + "</w>" for s in byte_symbols]
    merges = learn_merges(WORDS)
    for a, b in merges:
        if a + b not in vocab_list:
            vocab_list.append(a + b)
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    (HERE / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    lines = ["#version: 0.2 - hand-made tiny vocabulary for brainldm's synthetic captions"]
    lines += [f"{a} {b}" for a, b in merges]
    (HERE / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(vocab)} tokens, {len(merges)} merges, {len(set(WORDS))} whole words")


if __name__ == "__main__":
    main()
