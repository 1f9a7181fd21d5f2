"""brainldm.download against real servers on loopback: moto's S3 server and an HTTP server."""

from __future__ import annotations

import http.server
import io
import json
import re
import threading
import uuid
import zipfile

import boto3
import botocore.exceptions
import pytest

from brainldm import download, nsd
from brainldm.download import DownloadError


# --------------------------------------------------------------------- S3 fixtures
@pytest.fixture
def bucket(endpoint):
    """A fresh bucket and a signed client that fills it (the downloader stays anonymous)."""
    admin = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                         aws_access_key_id="testing", aws_secret_access_key="testing")
    name = f"nsd-{uuid.uuid4().hex[:12]}"
    admin.create_bucket(Bucket=name)
    return name, admin


def put(admin, bucket: str, key: str, body: bytes) -> None:
    """Store one object, readable anonymously like every object of the NSD bucket."""
    admin.put_object(Bucket=bucket, Key=key, Body=body, ACL="public-read")


def payload(n: int, seed: int = 0) -> bytes:
    return bytes((i * 31 + seed * 7 + i // 251) % 256 for i in range(n))


def record_gets(client) -> list[dict]:
    """Parameters of every GetObject the client sends (Range included)."""
    calls: list[dict] = []
    client.meta.events.register("before-parameter-build.s3.GetObject",
                                lambda params, **_: calls.append(dict(params)))
    return calls


KEYS = [
    nsd.relpath("expdesign"),
    nsd.relpath("responses", 1),
    nsd.relpath("betas_hdf5", 1, 2),
]


def test_full_fetch_mirrors_bucket_layout(endpoint, bucket, tmp_path):
    name, admin = bucket
    bodies = {key: payload(5000 + 3000 * i, i) for i, key in enumerate(KEYS)}
    bodies[nsd.relpath("roi_streams", 1)] = b""  # an empty object is fetched too
    for key, body in bodies.items():
        put(admin, name, key, body)
    for key in bodies:  # as rule download_nsd_file does, one key at a time into nsd_root
        assert download.fetch_nsd_file(key, tmp_path / key, endpoint, name) is True
    for key, body in bodies.items():
        assert (tmp_path / key).read_bytes() == body
    assert not list(tmp_path.rglob("*.part"))


def test_partial_part_file_resumes_with_range(endpoint, bucket, tmp_path):
    name, admin = bucket
    key, body = KEYS[2], payload(20000)
    put(admin, name, key, body)
    dest = tmp_path / key
    dest.parent.mkdir(parents=True)
    (dest.parent / (dest.name + ".part")).write_bytes(body[:7000])
    client = download.s3_client(endpoint)
    gets = record_gets(client)
    assert download.fetch_object(client, name, key, dest) is True
    assert dest.read_bytes() == body
    assert [g.get("Range") for g in gets] == ["bytes=7000-"]
    assert not (dest.parent / (dest.name + ".part")).exists()


class Interrupted(Exception):
    """Stands for the process being killed mid-transfer."""


def test_interrupted_transfer_resumes_on_rerun(endpoint, bucket, tmp_path):
    name, admin = bucket
    key, body = KEYS[2], payload(10000, 3)
    put(admin, name, key, body)
    dest = tmp_path / key
    part = dest.parent / (dest.name + ".part")

    def die(n_bytes):
        if n_bytes >= 3000:
            raise Interrupted

    client = download.s3_client(endpoint)
    with pytest.raises(Interrupted):
        download.fetch_object(client, name, key, dest, chunk_size=1024, callback=die)
    assert not dest.exists()  # nothing under the final name
    kept = part.read_bytes()
    assert 3000 <= len(kept) < len(body) and kept == body[: len(kept)]

    gets = record_gets(client)
    assert download.fetch_object(client, name, key, dest, chunk_size=1024) is True
    assert dest.read_bytes() == body
    assert [g.get("Range") for g in gets] == [f"bytes={len(kept)}-"]
    assert not part.exists()


def test_dropped_connection_resumes_in_the_same_call(endpoint, bucket, tmp_path, monkeypatch):
    monkeypatch.setattr(download.time, "sleep", lambda s: None)
    name, admin = bucket
    key, body = KEYS[0], payload(8192, 5)
    put(admin, name, key, body)
    dropped = []

    def drop_once(n_bytes):
        if n_bytes >= 4096 and not dropped:
            dropped.append(n_bytes)
            raise botocore.exceptions.ResponseStreamingError(error="connection reset")

    client = download.s3_client(endpoint)
    gets = record_gets(client)
    download.fetch_object(client, name, key, tmp_path / "f", chunk_size=1024, callback=drop_once)
    assert (tmp_path / "f").read_bytes() == body
    assert [g.get("Range") for g in gets] == [None, f"bytes={dropped[0]}-"]


def test_transient_failures_give_up_after_attempts_and_keep_part(endpoint, bucket, tmp_path, monkeypatch):
    monkeypatch.setattr(download.time, "sleep", lambda s: None)
    name, admin = bucket
    key, body = KEYS[0], payload(8192)
    put(admin, name, key, body)

    def always_drop(n_bytes):
        raise botocore.exceptions.ResponseStreamingError(error="connection reset")

    client = download.s3_client(endpoint)
    with pytest.raises(DownloadError, match=r"failed 3 times.*rerun to resume"):
        download.fetch_object(client, name, key, tmp_path / "f", chunk_size=1024,
                              attempts=3, callback=always_drop)
    assert not (tmp_path / "f").exists()
    assert (tmp_path / "f.part").read_bytes() == body[:3072]  # one chunk per attempt


def test_missing_key_names_key_and_bucket(endpoint, bucket, tmp_path):
    name, _ = bucket
    key = nsd.relpath("betas_hdf5", 1, 1)
    with pytest.raises(DownloadError) as err:
        download.fetch_nsd_file(key, tmp_path / key, endpoint, name)
    message = str(err.value)
    assert key in message and name in message and endpoint in message
    assert not (tmp_path / key).exists() and not list(tmp_path.rglob("*.part"))


def test_private_object_fails_naming_key(endpoint, bucket, tmp_path):
    name, admin = bucket
    admin.put_object(Bucket=name, Key=KEYS[0], Body=b"secret")  # no public-read ACL
    with pytest.raises(DownloadError, match=r"nsd_expdesign\.mat' not found \(or not public\)"):
        download.fetch_nsd_file(KEYS[0], tmp_path / "f", endpoint, name)


def test_stale_longer_part_file_is_replaced(endpoint, bucket, tmp_path):
    name, admin = bucket
    body = payload(2000)
    put(admin, name, KEYS[0], body)
    (tmp_path / "f.part").write_bytes(b"x" * 5000)
    client = download.s3_client(endpoint)
    gets = record_gets(client)
    download.fetch_object(client, name, KEYS[0], tmp_path / "f")
    assert (tmp_path / "f").read_bytes() == body
    assert [g.get("Range") for g in gets] == [None]


def test_missing_session_says_how_many_the_subject_has(endpoint, bucket, tmp_path):
    name, _ = bucket
    key = nsd.relpath("betas_hdf5", 3, 35)
    with pytest.raises(DownloadError, match=r"subj03 has only 32 sessions.*data.sessions"):
        download.fetch_nsd_file(key, tmp_path / key, endpoint, name)


def test_complete_file_is_skipped_without_get(endpoint, bucket, tmp_path):
    name, admin = bucket
    key, body = KEYS[1], payload(3000)
    put(admin, name, key, body)
    client = download.s3_client(endpoint)
    gets = record_gets(client)
    assert download.fetch_object(client, name, key, tmp_path / key) is True
    assert download.fetch_object(client, name, key, tmp_path / key) is False
    assert len(gets) == 1
    # a file of the wrong size is fetched again
    (tmp_path / key).write_bytes(b"short")
    assert download.fetch_object(client, name, key, tmp_path / key) is True
    assert (tmp_path / key).read_bytes() == body and len(gets) == 2


@pytest.mark.parametrize("partial", [0, 1000], ids=["fresh", "resumed"])
def test_object_changing_during_transfer_fails_and_leaves_nothing(endpoint, bucket, tmp_path, partial):
    """The size reported by HEAD no longer matches what GET sends."""
    name, admin = bucket
    key, body = KEYS[1], payload(3000)
    put(admin, name, key, body)
    dest = tmp_path / "responses.tsv"
    part = tmp_path / "responses.tsv.part"
    if partial:
        part.write_bytes(body[:partial])
    client = download.s3_client(endpoint)
    client.meta.events.register(
        "before-call.s3.GetObject",
        lambda **_: put(admin, name, key, payload(4000, 1)))
    with pytest.raises(DownloadError, match=r"server reported 3000|changed since") as err:
        download.fetch_object(client, name, key, dest)
    assert key in str(err.value) and "rerun" in str(err.value)
    assert not dest.exists() and not part.exists()


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs/key", "nsddata//x", nsd.relpath("captions_val")])
def test_bad_keys_are_rejected(key):
    with pytest.raises(DownloadError, match=re.escape(repr(key))):
        download.check_key(key)


def test_unreachable_endpoint_names_it(tmp_path):
    client = download.s3_client("http://127.0.0.1:9")  # discard port: connection refused
    client.meta.config.retries["max_attempts"] = 0
    with pytest.raises(DownloadError, match=r"cannot reach .*127\.0\.0\.1:9.*endpoint_url"):
        download.object_size(client, "natural-scenes-dataset", KEYS[0])


# --------------------------------------------------------------------- HTTP (COCO)
class FileServer(http.server.ThreadingHTTPServer):
    """Serves ``files`` {path: bytes}; honours Range unless ``ranges`` is False; logs requests."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), RangeHandler)
        self.files: dict[str, bytes] = {}
        self.ranges = True
        self.requests: list[tuple[str, str, str | None]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class RangeHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _head(self, send_body: bool):
        server: FileServer = self.server
        rng = self.headers.get("Range")
        server.requests.append((self.command, self.path, rng))
        if self.path not in server.files:
            self.send_error(404)
            return
        data = server.files[self.path]
        start = 0
        if rng and server.ranges:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if send_body:
            self.wfile.write(data[start:])

    def do_HEAD(self):
        self._head(False)

    def do_GET(self):
        self._head(True)


@pytest.fixture(scope="module")
def http_server():
    server = FileServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def files(http_server):
    http_server.files.clear()
    http_server.requests.clear()
    http_server.ranges = True
    return http_server


def coco_zip(members: dict[str, object]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("annotations/", "")
        for name, content in members.items():
            zf.writestr(f"annotations/{name}", json.dumps(content))
    return buffer.getvalue()


TRAIN = {"annotations": [{"image_id": 9, "id": 1, "caption": "a red ball on grass"}]}
VAL = {"annotations": [{"image_id": 139, "id": 2, "caption": "a blue cube"}]}


def caption_paths(root):
    return root / nsd.relpath("captions_train"), root / nsd.relpath("captions_val")


def test_coco_captions_extracted_and_archive_removed(files, tmp_path):
    files.files["/annotations/annotations_trainval2017.zip"] = coco_zip(
        {"captions_train2017.json": TRAIN, "captions_val2017.json": VAL,
         "instances_val2017.json": {"annotations": []}})
    url = files.url + "/annotations/annotations_trainval2017.zip"
    train, val = caption_paths(tmp_path)
    assert download.fetch_coco_captions(url, train, val) is True
    assert json.loads(train.read_text()) == TRAIN and json.loads(val.read_text()) == VAL
    assert sorted(p.name for p in train.parent.iterdir()) == [train.name, val.name]
    # complete: skipped without any request
    n = len(files.requests)
    assert download.fetch_coco_captions(url, train, val) is False
    assert len(files.requests) == n


@pytest.mark.parametrize("ranges", [True, False], ids=["range", "server-ignores-range"])
def test_url_transfer_resumes_partial_file(files, tmp_path, ranges):
    files.ranges = ranges
    body = payload(50000, 2)
    files.files["/a.zip"] = body
    (tmp_path / "a.zip.part").write_bytes(body[:12345])
    assert download.fetch_url(files.url + "/a.zip", tmp_path / "a.zip") is True
    assert (tmp_path / "a.zip").read_bytes() == body
    assert not (tmp_path / "a.zip.part").exists()
    assert [r for r in files.requests if r[0] == "GET"] == [("GET", "/a.zip", "bytes=12345-")]


def test_archive_without_captions_fails_and_writes_nothing(files, tmp_path):
    files.files["/ann.zip"] = coco_zip({"captions_train2017.json": TRAIN})
    train, val = caption_paths(tmp_path)
    with pytest.raises(DownloadError, match=r"captions_val2017\.json.*coco_annotations_url"):
        download.fetch_coco_captions(files.url + "/ann.zip", train, val)
    assert list(train.parent.iterdir()) == []  # no captions, no .part, bad archive removed


def test_corrupt_archive_fails_clearly(files, tmp_path):
    files.files["/ann.zip"] = b"this is not a zip" * 100
    train, val = caption_paths(tmp_path)
    with pytest.raises(DownloadError, match=r"not a valid zip archive"):
        download.fetch_coco_captions(files.url + "/ann.zip", train, val)
    assert list(train.parent.iterdir()) == []


def test_missing_url_names_it(files, tmp_path):
    train, val = caption_paths(tmp_path)
    with pytest.raises(DownloadError, match=r"/nothing\.zip answered HTTP 404.*coco_annotations_url"):
        download.fetch_coco_captions(files.url + "/nothing.zip", train, val)
    assert not train.exists() and not val.exists()


def test_coco_captions_writes_only_the_given_missing_file(files, tmp_path):
    files.files["/annotations/annotations_trainval2017.zip"] = coco_zip(
        {"captions_train2017.json": TRAIN, "captions_val2017.json": VAL})
    url = files.url + "/annotations/annotations_trainval2017.zip"
    train, val = caption_paths(tmp_path)
    train.parent.mkdir(parents=True)
    train.write_text("a user's own file")
    assert download.fetch_coco_captions(url, None, val) is True
    assert train.read_text() == "a user's own file"
    assert json.loads(val.read_text()) == VAL
    assert sorted(p.name for p in train.parent.iterdir()) == [train.name, val.name]
