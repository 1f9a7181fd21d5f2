"""brainldm.nsd_copy: the parse-time view of an NSD copy (present / missing keys, sizes)."""

from __future__ import annotations

import re
import socket
import time
import uuid

import boto3
import pytest

from brainldm import nsd, nsd_copy


def test_needed_keys_lists_shared_and_per_subject_files():
    keys = nsd_copy.needed_keys(["subj01", "subj02"], {"subj01": [1, 2, 3], "subj02": [1, 2]}, "hdf5")
    assert keys[0] == nsd.relpath("expdesign")
    assert len(keys) == len(set(keys)) == 5 + 2 * 4 + 3 + 2
    assert nsd.relpath("betas_hdf5", "subj01", 3) in keys
    assert nsd.relpath("betas_hdf5", "subj02", 3) not in keys
    assert nsd.relpath("captions_val") in keys and nsd.relpath("roi_streams", "subj02") in keys
    nifti = nsd_copy.needed_keys(["subj01"], {"subj01": [1]}, "nifti")
    assert nsd.relpath("betas_nifti", "subj01", 1) in nifti


def test_split_present_checks_files_only(tmp_path):
    keys = [nsd.relpath("expdesign"), nsd.relpath("responses", 1), nsd.relpath("brainmask", 1)]
    (tmp_path / keys[0]).parent.mkdir(parents=True)
    (tmp_path / keys[0]).write_bytes(b"x")
    (tmp_path / keys[2]).mkdir(parents=True)  # a folder under a file's name is not the file
    present, missing = nsd_copy.split_present(tmp_path, keys)
    assert present == [keys[0]] and missing == keys[1:]


def test_key_constraint_matches_exactly_the_missing_keys():
    missing = [nsd.relpath("betas_hdf5", 1, 2), nsd.relpath("expdesign")]
    regex = re.compile(nsd_copy.key_constraint(missing))
    for key in missing:
        assert regex.fullmatch(key)
    for key in [nsd.relpath("betas_hdf5", 1, 1), nsd.relpath("betas_hdf5", 1, 12),
                nsd.relpath("stim_info"), missing[0] + ".part", "x" + missing[1]]:
        assert not regex.fullmatch(key), key
    # dots are literal
    assert not regex.fullmatch(missing[1].replace(".mat", "Xmat"))
    nothing = re.compile(nsd_copy.key_constraint([]))
    assert not any(nothing.fullmatch(k) for k in ["", "x", "(?!x)x", missing[0]])


def test_summary_counts_lists_and_sizes():
    present, missing = ["a"] * 3, ["b/one.hdf5", "b/two.hdf5"]
    text = nsd_copy.summary("/data/nsd", present, missing, {"b/one.hdf5": 1024, "b/two.hdf5": 2048})
    assert text == "NSD copy at /data/nsd: 3 of 5 files present; missing: b/one.hdf5, b/two.hdf5 (3.0 KiB)"
    assert nsd_copy.summary("/r", present, missing).endswith("(size unknown)")
    partial = nsd_copy.summary("/r", present, missing, {"b/one.hdf5": 10, "b/two.hdf5": None})
    assert partial.endswith("(10 B for 1 of 2, the rest size unknown)")
    assert nsd_copy.summary("/r", present, []) == "NSD copy at /r: 3 of 3 files present; nothing to download"
    many = nsd_copy.summary("/r", [], [f"k{i}" for i in range(20)])
    assert f"and {20 - nsd_copy.MAX_LISTED} more" in many


def test_object_sizes_by_head(endpoint):
    admin = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                         aws_access_key_id="testing", aws_secret_access_key="testing")
    bucket = f"nsd-{uuid.uuid4().hex[:12]}"
    admin.create_bucket(Bucket=bucket)
    keys = [nsd.relpath("expdesign"), nsd.relpath("responses", 1)]
    for i, key in enumerate(keys):
        admin.put_object(Bucket=bucket, Key=key, Body=b"x" * (100 + i), ACL="public-read")
    absent = nsd.relpath("brainmask", 1)
    coco = nsd.relpath("captions_train")
    sizes = nsd_copy.object_sizes([*keys, absent, coco], endpoint, bucket)
    assert sizes == {keys[0]: 100, keys[1]: 101, absent: None, coco: None}


def test_object_sizes_unreachable_is_unknown_and_quick():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    keys = [nsd.relpath("betas_hdf5", 1, s) for s in range(1, 30)]
    start = time.monotonic()
    sizes = nsd_copy.object_sizes(keys, f"http://127.0.0.1:{port}", "nsd", timeout=1.0)
    assert time.monotonic() - start < 5
    assert sizes == {k: None for k in keys}


# --------------------------------------------------------------------- sessions
def test_resolve_sessions_all_number_and_mapping():
    have = {"subj01": 3, "subj02": 2}
    subjects = list(have)
    assert nsd_copy.resolve_sessions("all", subjects, have) == {"subj01": [1, 2, 3], "subj02": [1, 2]}
    assert nsd_copy.resolve_sessions(2, subjects, have) == {"subj01": [1, 2], "subj02": [1, 2]}
    assert nsd_copy.resolve_sessions({1: 1, "subj02": "all"}, subjects, have) == {"subj01": [1], "subj02": [1, 2]}
    assert nsd_copy.resolve_sessions({"1": 2, "2": 1}, subjects, have) == {"subj01": [1, 2], "subj02": [1]}


def test_resolve_sessions_stops_naming_subject_and_count():
    have = {"subj01": 3, "subj02": 2}
    with pytest.raises(nsd.NSDError, match=r"data.sessions asks for 3 sessions but subj02 has only 2"):
        nsd_copy.resolve_sessions(3, list(have), have)
    with pytest.raises(nsd.NSDError, match=r"lacks subj02"):
        nsd_copy.resolve_sessions({1: 2}, list(have), have)
    with pytest.raises(nsd.NSDError, match=r"data.sessions: 0 for subj01"):
        nsd_copy.resolve_sessions({1: 0, 2: 1}, list(have), have)
    with pytest.raises(nsd.NSDError, match=r"data.sessions: unknown subject 9"):
        nsd_copy.resolve_sessions({9: 1, 1: 1, 2: 1}, list(have), have)


def test_available_sessions_from_responses_else_nsd_counts(tmp_path):
    file = nsd.path(tmp_path, "responses", "subj01")
    file.parent.mkdir(parents=True)
    file.write_text("SUBJECT\tSESSION\tRUN\tTRIAL\t73KID\n" + "".join(
        f"1\t{s}\t1\t{t}\t{s * 10 + t}\n" for s in (1, 2, 3) for t in (1, 2)))
    assert nsd_copy.available_sessions(tmp_path, ["subj01", "subj03"]) == {"subj01": 3, "subj03": 32}


def test_test_images_use_each_subjects_own_sessions():
    import numpy as np
    import pandas as pd

    from brainldm.ingest import test_images

    def table(rows):  # (session, nsd_id)
        return pd.DataFrame(rows, columns=["SESSION", "nsd_id"])

    responses = {"subj01": table([(1, 0), (2, 1), (3, 2)]), "subj02": table([(1, 0), (2, 1), (2, 2), (3, 1)])}
    sharedix = np.array([1, 2, 3])  # 1-based: nsd ids 0, 1, 2
    assert test_images(responses, sharedix, {"subj01": 3, "subj02": 2}).tolist() == [0, 1, 2]
    assert test_images(responses, sharedix, {"subj01": 2, "subj02": 2}).tolist() == [0, 1]
    assert test_images(responses, sharedix, {"subj01": 3, "subj02": 1}).tolist() == [0]
    assert test_images(responses, sharedix, 3).tolist() == [0, 1, 2]
