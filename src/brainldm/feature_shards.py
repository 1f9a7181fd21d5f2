"""Compute one feature family for every stimulus, in resumable shards, then gather.

Layout (``shard_dir`` defaults to ``<out_file's folder>/shards/<family>``)::

    shards/<family>/manifest.json   fingerprint + one entry per finished shard
    shards/<family>/00000.h5        rows [0, shard_size) of stimuli.tsv: nsd_id + datasets
    shards/<family>/gathered.h5     after the gather: a hard link to <family>.h5
    <family>.h5                     the gathered file (docs/contracts.md)

A shard counts as finished when its file exists and the manifest lists it with the
same image ids. After a gather that checked every shard's ids, the shard files are
replaced by ``gathered.h5``, a second name of the gathered file (no extra disk), and
the manifest entries point at their rows in it (``file``, ``file_rows``): a later run
(a deleted or re-requested <family>.h5, more images) reuses them from there. Where no
hard link can be made (another filesystem) the shard files are kept. the manifest's fingerprint covers the model, the family's settings
and its input files, and a changed fingerprint discards old shards. Files enter the
fingerprint by content (SHA-256), not by modification time, so a copied model folder
or stimuli file keeps the finished shards; the digests are cached in
``shards/digests.json`` keyed by (path, size, mtime), so a file is hashed again only
when one of those changes. The model and the inputs are checked (and the model
loaded) before any stale shard is removed, so a broken model folder costs no
finished shard. Every file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from brainldm import nsd
from brainldm.feature_keys import family_keys
from brainldm.features import FAMILIES, FeatureError, FeatureSettings, compute_family, compute_zc_unet, dataset_attrs
from brainldm.io import atomic_path
from brainldm.logs import Progress
from brainldm.threads import limit_threads

#: Name of the hard link to the gathered file that stands in for the shard files.
GATHERED = "gathered.h5"


def family_settings(family: str, section: dict | FeatureSettings | None) -> dict:
    """The keys of the ``features:`` section that one family depends on, checked (the workflow's
    params use :func:`brainldm.feature_keys.family_config`, which equals this for its config)."""
    s = section if isinstance(section, FeatureSettings) else FeatureSettings.from_config(section)
    d = s.as_dict()
    return {k: d[k] for k in family_keys(family)}


def read_stimuli_table(file: str | os.PathLike) -> pd.DataFrame:
    """results/stimuli/stimuli.tsv: one row per image (nsd_id cocoId cocoSplit)."""
    file = Path(file)
    if not file.is_file():
        raise FeatureError(f"missing stimulus table {file}: run the rule stimuli_table first")
    table = pd.read_csv(file, sep="\t")
    missing = {"nsd_id", "cocoId", "cocoSplit"} - set(table.columns)
    if missing:
        raise FeatureError(f"{file} lacks the column(s) {sorted(missing)}; it must have nsd_id cocoId cocoSplit "
                           "(rerun the rule stimuli_table)")
    if table["nsd_id"].duplicated().any():
        raise FeatureError(f"{file} lists nsd_id {int(table['nsd_id'][table['nsd_id'].duplicated()].iloc[0])} "
                           "twice; rerun the rule stimuli_table")
    return table


class DigestCache:
    """SHA-256 of files, cached in a JSON file keyed by (absolute path, size, mtime).

    A file whose size or mtime changed (e.g. a copy) is hashed again, so the digest
    always reflects the content; an unchanged file is not read again.
    """

    def __init__(self, cache_file: str | os.PathLike):
        self.file = Path(cache_file)
        try:
            self.entries = json.loads(self.file.read_text()) if self.file.is_file() else {}
        except (json.JSONDecodeError, OSError):
            self.entries = {}
        self._dirty = False

    def digest(self, path: str | os.PathLike) -> str:
        """Hex SHA-256 of the file's bytes."""
        path = Path(path).resolve()
        st = path.stat()
        key = str(path)
        entry = self.entries.get(key)
        if entry and entry["size"] == st.st_size and entry["mtime_ns"] == st.st_mtime_ns:
            return entry["sha256"]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        self.entries[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": h.hexdigest()}
        self._dirty = True
        return h.hexdigest()

    def folder_digest(self, folder: str | os.PathLike) -> list[list[str]]:
        """[relative path, sha256] of every file under ``folder`` (sorted; hidden files skipped)."""
        folder = Path(folder)
        files = sorted(p for p in folder.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(folder).parts))
        return [[p.relative_to(folder).as_posix(), self.digest(p)] for p in files]

    def save(self) -> None:
        """Write the cache (merged with what other jobs wrote meanwhile) if anything was hashed."""
        if not self._dirty:
            return
        try:
            current = json.loads(self.file.read_text()) if self.file.is_file() else {}
        except (json.JSONDecodeError, OSError):
            current = {}
        current.update(self.entries)
        self.file.parent.mkdir(parents=True, exist_ok=True)
        _write_json(self.file, current)
        self._dirty = False


def model_identity(model: str | os.PathLike, digests: DigestCache) -> list:
    """What identifies a model for the fingerprint: the content of a model folder, or a hub id."""
    path = Path(str(model))
    if path.is_dir():
        return digests.folder_digest(path)
    return [str(model)]


def _write_json(path: Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1))


def _write_h5(path: Path, nsd_ids: np.ndarray, arrays: dict[str, np.ndarray], attrs: dict[str, dict],
              file_attrs: dict | None = None) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("nsd_id", data=np.asarray(nsd_ids, dtype=np.int64))
        for name, arr in arrays.items():
            d = f.create_dataset(name, data=arr)
            d.attrs.update(attrs.get(name, {}))
        f.attrs.update(file_attrs or {})


def _read_rows(file: Path, name: str, rows: slice, ids: np.ndarray) -> np.ndarray:
    with h5py.File(file, "r") as f:
        if name not in f or "nsd_id" not in f:
            raise FeatureError(f"{file} has no dataset {name!r}/nsd_id: rerun the features rule that writes it")
        if not np.array_equal(f["nsd_id"][rows], ids):
            raise FeatureError(f"{file} is for other images than results/stimuli/stimuli.tsv: rerun the rule "
                               f"that writes it (features_{name})")
        return f[name][rows].astype(np.float32)


class _Inputs:
    """Lazy access to what a family needs for a set of rows."""

    def __init__(self, family, table, stimuli_hdf5, stim_info, captions_train, captions_val, z_file, c_file):
        self.family, self.table = family, table
        self.stimuli_hdf5, self.z_file, self.c_file = stimuli_hdf5, z_file, c_file
        self.caption_files = {"train2017": captions_train, "val2017": captions_val}
        self.stim_info = stim_info
        self._captions: dict[int, list[str]] | None = None
        need = {"z": ["stimuli_hdf5"], "c": ["stim_info", "captions_train", "captions_val"],
                "zc": ["z_file", "c_file"], "unet": ["z_file", "c_file"]}[family]
        given = dict(stimuli_hdf5=stimuli_hdf5, stim_info=stim_info, captions_train=captions_train,
                     captions_val=captions_val, z_file=z_file, c_file=c_file)
        for key in need:
            if given[key] is None:
                raise FeatureError(f"features family {family!r} needs the input {key}")
            if not Path(given[key]).is_file():
                raise FeatureError(f"missing input file {given[key]} ({key}) of the {family} features")

    def stamps(self, digests: DigestCache) -> list:
        """What identifies the inputs: the SHA-256 of NSD files; for z.h5 / c.h5 the
        fingerprint they were computed with (so a mere re-gather does not count as new)."""
        if self.family in ("zc", "unet"):
            out = []
            for f in (self.z_file, self.c_file):
                with h5py.File(f, "r") as h:
                    out.append(str(h.attrs.get("fingerprint", "")) or digests.digest(f))
            return out
        files = [self.stimuli_hdf5] if self.family == "z" else [self.stim_info, *self.caption_files.values()]
        return [digests.digest(f) for f in files]

    def prefetch_captions(self, ids: np.ndarray) -> None:
        info = nsd.read_stim_info(self.stim_info)
        caps = nsd.read_captions(info, self.caption_files, ids)
        self._captions = dict(zip(ids.tolist(), caps))

    def batch(self, rows: slice, ids: np.ndarray) -> dict:
        if self.family == "z":
            return {"images": nsd.read_images(self.stimuli_hdf5, ids)}
        if self.family == "c":
            return {"captions": [self._captions[i] for i in ids.tolist()]}
        return {"z": _read_rows(Path(self.z_file), "z", rows, ids), "c": _read_rows(Path(self.c_file), "c", rows, ids)}


def extract_family(family: str, stimuli_table: str | os.PathLike, out_file: str | os.PathLike, *,
                   model: str, settings: dict | FeatureSettings | None = None,
                   shard_dir: str | os.PathLike | None = None,
                   stimuli_hdf5=None, stim_info=None, captions_train=None, captions_val=None,
                   z_file=None, c_file=None, device: str | None = None, local_files_only: bool = True,
                   threads: int | None = None, pipe=None, require_gpu: bool = False,
                   unet_out_file: str | os.PathLike | None = None) -> Path:
    """Compute ``family`` for every image of ``stimuli_table`` and write ``out_file``.

    model: folder or hub id for :func:`brainldm.models.load_pipeline` (or pass ``pipe``).
    Inputs per family: z: stimuli_hdf5 (nsd_stimuli.hdf5); c: stim_info (nsd_stim_info_merged.csv)
    + captions_train/captions_val (COCO JSONs); zc, unet: z_file (z.h5) + c_file (c.h5).
    Finished shards of an earlier run with the same fingerprint are reused.
    require_gpu: a GPU job (real model): no silent CPU fallback, see
    :func:`brainldm.models.resolve_device`. threads: CPU threads for torch and BLAS (the
    rule's threads; None = library defaults).
    unet_out_file: with family "zc", also write the U-Net activations (unet.h5, shards in
    ``shards/unet``) from the same img2img pass at the stage strength (17.2: the pass is
    not run twice). Each family keeps its own shards and fingerprint.
    """
    if family not in FAMILIES:
        raise FeatureError(f"unknown feature family {family!r}; known: {FAMILIES}")
    if unet_out_file is not None and family != "zc":
        raise FeatureError(f"unet_out_file goes with the zc family (one img2img pass for both), not {family!r}")
    s = settings if isinstance(settings, FeatureSettings) else FeatureSettings.from_config(settings)
    limit_threads(threads)
    table = read_stimuli_table(stimuli_table)
    ids = table["nsd_id"].to_numpy(np.int64)
    out_files = {family: Path(out_file)}
    if unet_out_file is not None:
        out_files["unet"] = Path(unet_out_file)
    root = Path(shard_dir).parent if shard_dir else out_files[family].parent / "shards"
    shard_dirs = {f: (Path(shard_dir) if shard_dir and f == family else root / f) for f in out_files}
    inputs = _Inputs(family, table, stimuli_hdf5, stim_info, captions_train, captions_val, z_file, c_file)
    digests = DigestCache(root / "digests.json")
    model_id = model_identity(model, digests)
    stamps = inputs.stamps(digests)
    digests.save()
    bounds = [(a, min(a + s.shard_size, len(ids))) for a in range(0, len(ids), s.shard_size)]
    names = [f"{k:05d}" for k in range(len(bounds))]
    plans = {}
    for fam, sdir in shard_dirs.items():
        sdir.mkdir(parents=True, exist_ok=True)
        fingerprint = hashlib.sha1(json.dumps(
            {"family": fam, "settings": {k: v for k, v in family_settings(fam, s).items() if k != "batch_size"},
             "model": model_id, "inputs": stamps}, sort_keys=True).encode()).hexdigest()
        manifest_path = sdir / "manifest.json"
        try:
            manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
        except json.JSONDecodeError:
            print(f"[features {fam}] unreadable {manifest_path}: recomputing every shard", file=sys.stderr)
            manifest = {}
        stale = manifest.get("fingerprint") != fingerprint
        if stale:
            manifest = {"family": fam, "fingerprint": fingerprint, "shards": {}}

        def finished(name, a, b, manifest=manifest, sdir=sdir):
            entry = manifest["shards"].get(name)
            return (entry is not None and (sdir / entry["file"]).is_file()
                    and entry["nsd_ids"] == ids[a:b].tolist())

        todo = {n for n, (a, b) in zip(names, bounds) if not finished(n, a, b)}
        print(f"[features {fam}] {len(ids)} images, {len(bounds)} shards, {len(bounds) - len(todo)} already done",
              file=sys.stderr)
        plans[fam] = dict(dir=sdir, manifest=manifest, path=manifest_path, fingerprint=fingerprint,
                          stale=stale, todo=todo)
    todo = [(n, a, b) for n, (a, b) in zip(names, bounds) if any(n in p["todo"] for p in plans.values())]
    if todo:
        # Load (and so check) the model before anything is removed: a broken model
        # folder must not cost the shards of an earlier run.
        if pipe is None:
            from brainldm.models import load_pipeline

            pipe = load_pipeline(model, device=device, local_files_only=local_files_only,
                                 require_gpu=require_gpu)
        if family == "c":
            inputs.prefetch_captions(np.concatenate([ids[a:b] for _, a, b in todo]))
    for fam, plan in plans.items():
        if plan["stale"]:
            old_shards = list(plan["dir"].glob("*.h5"))
            if old_shards:
                print(f"[features {fam}] model, inputs or settings changed: removing {len(old_shards)} old shards",
                      file=sys.stderr)
            for old in old_shards:
                old.unlink()
            _write_json(plan["path"], plan["manifest"])
    store = np.dtype(s.dtype)
    for name, a, b in todo:
        t0 = time.time()
        need = [fam for fam in plans if name in plans[fam]["todo"]]
        parts: dict[str, dict[str, list[np.ndarray]]] = {fam: {} for fam in need}
        timesteps = None
        starts = range(a, b, s.batch_size)
        with Progress(len(starts), f"{'+'.join(need)} shard {name} batches", every_s=5) as bar:
            for lo in starts:
                hi = min(lo + s.batch_size, b)
                data = inputs.batch(slice(lo, hi), ids[lo:hi])
                if need == [family]:
                    results = {family: compute_family(family, pipe, s, ids[lo:hi], **data)}
                elif need == ["unet"]:
                    results = {"unet": compute_family("unet", pipe, s, ids[lo:hi], **data)}
                else:  # zc (+ unet): one pass at the stage strength gives both
                    zc, acts = compute_zc_unet(pipe, s, ids[lo:hi], data["z"], data["c"], unet="unet" in need)
                    results = {"zc": zc, "unet": acts} if "unet" in need else {"zc": zc}
                for fam, batch in results.items():
                    timesteps = batch.pop("_timesteps", timesteps)
                    for k, v in batch.items():
                        parts[fam].setdefault(k, []).append(v.astype(store))
                bar.update()
        n_steps = None if timesteps is None else len(timesteps)
        for fam in need:
            plan = plans[fam]
            arrays = {k: np.concatenate(v) for k, v in parts[fam].items()}
            attrs = {k: dataset_attrs(k, s, n_steps, timesteps) for k in arrays}
            _write_h5(plan["dir"] / f"{name}.h5", ids[a:b], arrays, attrs)
            plan["manifest"]["shards"][name] = {
                "file": f"{name}.h5", "rows": [a, b], "nsd_ids": ids[a:b].tolist(),
                "datasets": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()},
            }
            _write_json(plan["path"], plan["manifest"])
        print(f"[features {'+'.join(need)}] shard {name} ({b - a} images) in {time.time() - t0:.1f} s",
              file=sys.stderr)
    for fam, plan in plans.items():
        entries = [plan["manifest"]["shards"][n] for n in names]
        gather(plan["dir"], entries, out_files[fam], {"family": fam, "model": str(model),
                                                      "fingerprint": plan["fingerprint"],
                                                      "settings": json.dumps(family_settings(fam, s))})
        link_gathered(plan["dir"], plan["manifest"], names, out_files[fam])
    return out_files[family]


def _entry_rows(entry: dict) -> tuple[int, int]:
    """Rows [a, b) of a manifest entry within its file (a shard file: all of it)."""
    if "file_rows" in entry:
        return tuple(entry["file_rows"])
    return 0, len(entry["nsd_ids"])


def gather(shard_dir: Path, entries: list[dict], out_file: Path, file_attrs: dict) -> None:
    """Concatenate the shards' rows (manifest entries, in order) into ``out_file``, one shard at a time.

    Each entry's rows must hold the image ids the manifest lists for it.
    """
    with atomic_path(out_file) as tmp:
        with h5py.File(shard_dir / entries[0]["file"], "r") as first:
            layout = {}
            first.visititems(lambda k, v: layout.__setitem__(k, v) if isinstance(v, h5py.Dataset) else None)
            specs = {k: (v.shape[1:], v.dtype, dict(v.attrs)) for k, v in layout.items()}
        n_total = sum(len(e["nsd_ids"]) for e in entries)
        with h5py.File(tmp, "w") as out:
            dsets = {}
            for k, (shape, dtype, attrs) in specs.items():
                row_bytes = max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize)
                chunks = (max(1, min(n_total, 2**20 // row_bytes)), *shape) if shape else None
                dsets[k] = out.create_dataset(k, shape=(n_total, *shape), dtype=dtype, chunks=chunks)
                dsets[k].attrs.update(attrs)
            out.attrs.update(file_attrs)
            row = 0
            for entry in entries:
                file = shard_dir / entry["file"]
                a, b = _entry_rows(entry)
                with h5py.File(file, "r") as f:
                    if not np.array_equal(f["nsd_id"][a:b], entry["nsd_ids"]):
                        raise FeatureError(f"{file} rows {a}-{b} hold other images than its manifest entry: "
                                           f"delete {shard_dir} and rerun the features rule")
                    for k in specs:
                        dsets[k][row:row + b - a] = f[k][a:b]
                row += b - a


def link_gathered(shard_dir: Path, manifest: dict, names: list[str], out_file: Path) -> None:
    """After a checked gather: make ``shard_dir/gathered.h5`` a hard link to ``out_file``, point the
    manifest entries at their rows in it and remove the shard files (they hold the same bytes).

    Where the link cannot be made (e.g. another filesystem), everything is kept as it is.
    """
    link = shard_dir / GATHERED
    try:
        with atomic_path(link) as tmp:
            os.link(out_file, tmp)
    except OSError as err:
        print(f"[features] cannot hard-link {out_file} into {shard_dir} ({err.strerror or err}): the shard files "
              "are kept beside the gathered file", file=sys.stderr)
        return
    row, old_files = 0, set()
    for name in names:
        entry = manifest["shards"][name]
        n = len(entry["nsd_ids"])
        old_files.add(entry["file"])
        entry["file"], entry["file_rows"] = GATHERED, [row, row + n]
        row += n
    _write_json(shard_dir / "manifest.json", manifest)
    old_files.discard(GATHERED)
    for name in sorted(old_files):
        (shard_dir / name).unlink(missing_ok=True)
    print(f"[features] {len(old_files)} shard files replaced by {link} (a hard link to {out_file}: no extra disk)",
          file=sys.stderr)
