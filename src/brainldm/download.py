"""Fetch the NSD files the method needs, and COCO's caption JSONs.

NSD files come from the public bucket ``s3://natural-scenes-dataset`` with anonymous
(unsigned) S3 requests; COCO's captions come from its annotation archive over HTTP.
Every transfer

- writes into ``<dest>.part`` and renames it to ``dest`` only once complete (atomic),
- resumes an existing ``.part`` with an HTTP Range request (after a crash, or in the
  same call after a dropped connection),
- is checked against the size the server reports (S3 ``ContentLength``, HTTP
  ``Content-Length``); on a mismatch the ``.part`` is removed and nothing is left
  under the final name,
- is skipped when ``dest`` already has the server's size,
- logs its progress in bytes as plain lines (brainldm.logs.Progress, one every 30 s).
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import boto3
import botocore.exceptions
import urllib3.exceptions
from botocore import UNSIGNED
from botocore.config import Config

from brainldm.logs import Progress
from brainldm.nsd_layout import COCO_KINDS, SESSIONS_PER_SUBJECT, NSDError, relpath

#: Bytes read from the network per write (and per progress update).
CHUNK_SIZE = 1 << 20

#: Failures that end a transfer early but leave a valid prefix in the .part file.
_TRANSIENT = (
    botocore.exceptions.ConnectionError,  # also EndpointConnectionError, ConnectionClosedError
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ResponseStreamingError,
    botocore.exceptions.IncompleteReadError,
    urllib3.exceptions.HTTPError,
    http.client.IncompleteRead,
    urllib.error.URLError,  # HTTPError (a server's answer) is turned into DownloadError first
    ConnectionError,
    TimeoutError,
)


class DownloadError(NSDError):
    """A file could not be fetched; the message names the key or URL and the fix."""


# --------------------------------------------------------------------- common core
def _part(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _transfer(
    dest: Path,
    size: int,
    open_from: Callable[[int], tuple[int, Iterator[bytes]]],
    source: str,
    attempts: int,
    callback: Callable[[int], None] | None,
) -> None:
    """Fill ``dest.part`` up to ``size`` bytes, resuming it, then rename it to ``dest``.

    open_from(offset) starts a response at byte ``offset`` and returns (start, chunks),
    where start is the byte the response really starts at (0 when a server ignored
    the Range request). callback(n_bytes_in_part) is called after every chunk.
    """
    part = _part(dest)
    part.touch()
    for attempt in range(1, attempts + 1):
        offset = part.stat().st_size
        if offset > size:  # left by another version of the object: start afresh
            os.truncate(part, 0)
            offset = 0
        if offset == size:
            break
        if offset:
            print(f"resuming {source} at byte {offset} of {size} into {part}", file=sys.stderr)
        elif attempt == 1:
            print(f"fetching {source} ({size} bytes) into {part}", file=sys.stderr)
        try:
            start, chunks = open_from(offset)
            with open(part, "r+b") as f, Progress(size, dest.name, unit="B", initial=start, every_s=30) as bar:
                f.seek(start)
                f.truncate()
                for chunk in chunks:
                    f.write(chunk)
                    bar.update(len(chunk))
                    if callback is not None:
                        callback(f.tell())
                    if f.tell() > size:  # not the object that HEAD described
                        break
                f.flush()
                os.fsync(f.fileno())
            break
        except _TRANSIENT as err:
            done = part.stat().st_size if part.exists() else 0
            if attempt == attempts:
                raise DownloadError(
                    f"transfer of {source} failed {attempts} times, last with "
                    f"{type(err).__name__}: {err}. {done} of {size} bytes are kept in {part}; "
                    "rerun to resume from there"
                ) from err
            wait = min(2.0**attempt, 30.0)
            print(f"transfer of {source} interrupted at byte {done} ({type(err).__name__}: {err}); "
                  f"resuming in {wait:.0f} s (attempt {attempt + 1} of {attempts})", file=sys.stderr)
            time.sleep(wait)
    got = part.stat().st_size if part.exists() else 0
    if got != size:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{source}: received {got} bytes but the server reported {size}; the object may have "
            f"changed during the transfer. The partial file was removed and nothing was written "
            f"to {dest}; rerun to fetch it again"
        )
    os.replace(part, dest)


def _already_complete(dest: Path, size: int, source: str) -> bool:
    if dest.exists():
        if dest.stat().st_size == size:
            print(f"{dest} is complete ({size} bytes, as on {source}); skipped", file=sys.stderr)
            return True
        print(f"{dest} has {dest.stat().st_size} bytes but {source} has {size}; fetching it again",
              file=sys.stderr)
    return False


# --------------------------------------------------------------------- S3 (NSD)
def s3_client(endpoint_url: str):
    """An S3 client sending anonymous (unsigned) requests to ``endpoint_url``."""
    config = Config(
        signature_version=UNSIGNED,
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=30,
        read_timeout=120,
    )
    return boto3.client("s3", endpoint_url=endpoint_url, config=config)


def _where(client, bucket: str) -> str:
    return f"bucket {bucket!r} at {client.meta.endpoint_url}"


def _missing_key_hint(key: str) -> str:
    match = re.search(r"(subj0[1-8]).*betas_session(\d\d)", key)
    if match:
        subject, session = match.group(1), int(match.group(2))
        n = SESSIONS_PER_SUBJECT[int(subject[4:])]
        if session > n:
            return f"{subject} has only {n} sessions in NSD: lower data.sessions to {n} or less, or set it to 'all'"
    return ("check data.subjects, data.sessions and data.betas_format, and that "
            "download.endpoint_url and download.bucket point at the NSD bucket")


def object_size(client, bucket: str, key: str) -> int:
    """Size in bytes of one object, from a HEAD request (ContentLength)."""
    try:
        return int(client.head_object(Bucket=bucket, Key=key)["ContentLength"])
    except botocore.exceptions.ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NoSuchBucket", "403", "AccessDenied"):
            raise DownloadError(
                f"key {key!r} not found{' (or not public)' if code in ('403', 'AccessDenied') else ''} "
                f"in {_where(client, bucket)} (HTTP {code}): "
                + _missing_key_hint(key)
            ) from err
        raise DownloadError(f"cannot read key {key!r} in {_where(client, bucket)}: {err}") from err
    except botocore.exceptions.BotoCoreError as err:
        raise DownloadError(
            f"cannot reach {_where(client, bucket)} for key {key!r} ({err}): check the network "
            "and download.endpoint_url"
        ) from err


def fetch_object(
    client,
    bucket: str,
    key: str,
    dest: str | os.PathLike,
    *,
    attempts: int = 5,
    chunk_size: int = CHUNK_SIZE,
    callback: Callable[[int], None] | None = None,
) -> bool:
    """Download one object to ``dest`` (resumable, atomic, size-checked).

    Returns False when ``dest`` already had the object's size (no GET was sent),
    True after a transfer. ``attempts`` bounds the in-process resumptions after
    dropped connections; callback(n_bytes) runs after every chunk.
    """
    dest = Path(dest)
    size = object_size(client, bucket, key)
    source = f"s3://{bucket}/{key}"
    if _already_complete(dest, size, source):
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)

    def open_from(offset: int) -> tuple[int, Iterator[bytes]]:
        kwargs = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            response = client.get_object(Bucket=bucket, Key=key, **kwargs)
        except botocore.exceptions.ClientError as err:
            raise DownloadError(f"cannot get key {key!r} from {_where(client, bucket)}: {err}") from err
        start = 0
        content_range = response.get("ContentRange")  # "bytes start-end/total" when honoured
        if offset and content_range:
            match = re.fullmatch(r"bytes (\d+)-\d+/(\d+)", content_range)
            if match is None or int(match.group(2)) != size:
                response["Body"].close()
                _part(dest).unlink(missing_ok=True)
                raise DownloadError(
                    f"{source} changed since the partial download began (range {content_range!r}, "
                    f"expected total {size}); the partial file was removed: rerun to fetch it again"
                )
            start = int(match.group(1))
        return start, response["Body"].iter_chunks(chunk_size)

    _transfer(dest, size, open_from, source, attempts, callback)
    return True


def check_key(key: str) -> str:
    """Reject keys that are not plain relative paths inside the bucket layout."""
    parts = key.split("/")
    if "\\" in key or any(p in ("", ".", "..") for p in parts):
        raise DownloadError(f"invalid NSD key {key!r}: expected a relative path such as "
                            f"{relpath('expdesign')!r}")
    coco = {relpath(kind) for kind in COCO_KINDS}
    if key in coco:
        raise DownloadError(f"{key!r} is not in the NSD bucket; it comes from COCO's annotation "
                            "archive (download.coco_annotations_url)")
    return key


def fetch_nsd_file(key: str, dest: str | os.PathLike, endpoint_url: str, bucket: str) -> bool:
    """Fetch one NSD key (e.g. ``nsddata/experiments/nsd/nsd_expdesign.mat``) to ``dest``."""
    return fetch_object(s3_client(endpoint_url), bucket, check_key(key), dest)


# --------------------------------------------------------------------- HTTP (COCO)
def _http_error(url: str, err: urllib.error.HTTPError) -> DownloadError:
    return DownloadError(f"{url} answered HTTP {err.code} {err.reason}: check "
                         "download.coco_annotations_url")


def url_size(url: str, timeout: float = 60.0) -> int:
    """Size in bytes of the file at ``url``, from a HEAD request (Content-Length)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout) as r:
            length = r.headers.get("Content-Length")
    except urllib.error.HTTPError as err:
        raise _http_error(url, err) from err
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(f"cannot reach {url} ({err}): check the network and "
                            "download.coco_annotations_url") from err
    if length is None or not length.isdigit():
        raise DownloadError(f"{url} does not report its size (Content-Length), so the transfer "
                            "cannot be checked or resumed: use a server that does")
    return int(length)


def fetch_url(
    url: str,
    dest: str | os.PathLike,
    *,
    attempts: int = 5,
    chunk_size: int = CHUNK_SIZE,
    callback: Callable[[int], None] | None = None,
    timeout: float = 60.0,
) -> bool:
    """Download ``url`` to ``dest`` over HTTP(S); resumable, atomic, size-checked.

    Returns False when ``dest`` already had the reported size, True after a transfer.
    A server that ignores the Range request makes the transfer restart from byte 0.
    """
    dest = Path(dest)
    size = url_size(url, timeout)
    if _already_complete(dest, size, url):
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)

    def open_from(offset: int) -> tuple[int, Iterator[bytes]]:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
        except urllib.error.HTTPError as err:
            raise _http_error(url, err) from err
        start = 0
        if offset and response.status == 206:
            match = re.fullmatch(r"bytes (\d+)-\d+/(\d+)", response.headers.get("Content-Range", ""))
            if match is None or int(match.group(2)) != size:
                response.close()
                _part(dest).unlink(missing_ok=True)
                raise DownloadError(f"{url} changed since the partial download began; the partial "
                                    "file was removed: rerun to fetch it again")
            start = int(match.group(1))

        def chunks() -> Iterator[bytes]:
            with response:
                while chunk := response.read(chunk_size):
                    yield chunk

        return start, chunks()

    _transfer(dest, size, open_from, url, attempts, callback)
    return True


def extract_members(archive: str | os.PathLike, members: dict[str, str | os.PathLike]) -> None:
    """Copy files out of a zip archive, each atomically (``.part``, then rename).

    members: {file name inside the archive (any folder), destination path}.
    """
    archive = Path(archive)
    try:
        with zipfile.ZipFile(archive) as zf:
            by_name = {PurePosixPath(info.filename).name: info for info in zf.infolist()
                       if not info.is_dir()}
            missing = [name for name in members if name not in by_name]
            if missing:  # checked before anything is written
                raise DownloadError(f"{archive} has no {', '.join(missing)}: "
                                    "download.coco_annotations_url must be COCO's "
                                    "annotations_trainval2017.zip")
            for name, dest in members.items():
                dest = Path(dest)
                dest.parent.mkdir(parents=True, exist_ok=True)
                part = _part(dest)
                try:
                    with zf.open(by_name[name]) as src, open(part, "wb") as out:
                        shutil.copyfileobj(src, out, CHUNK_SIZE)  # zipfile checks the CRC
                        out.flush()
                        os.fsync(out.fileno())
                    os.replace(part, dest)
                finally:
                    part.unlink(missing_ok=True)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as err:
        raise DownloadError(f"{archive} is not a valid zip archive ({err}); delete it and fetch "
                            "it again") from err


def fetch_coco_captions(
    url: str, train_dest: str | os.PathLike | None, val_dest: str | os.PathLike | None
) -> bool:
    """Fetch COCO's annotation archive and extract captions_{train,val}2017.json.

    A destination given as None is not written (the workflow passes only the missing
    ones, so an existing caption file is never overwritten). The archive is
    downloaded next to the captions (resumable) and removed after extraction.
    Returns False when every given file already existed (nothing fetched).
    """
    dests = {name: Path(dest) for name, dest in
             (("captions_train2017.json", train_dest), ("captions_val2017.json", val_dest))
             if dest is not None}
    if not dests:
        raise DownloadError("fetch_coco_captions needs at least one destination")
    dests = {name: dest for name, dest in dests.items() if not dest.exists()}
    if not dests:
        print("the caption files exist; skipped", file=sys.stderr)
        return False
    name = PurePosixPath(urlparse(url).path).name or "annotations.zip"
    archive = next(iter(dests.values())).parent / name
    fetch_url(url, archive)
    try:
        extract_members(archive, dests)
    except DownloadError:
        archive.unlink(missing_ok=True)  # a bad archive must not be reused by the rerun
        raise
    archive.unlink()
    return True
