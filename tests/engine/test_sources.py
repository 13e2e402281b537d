"""Inputs where large image sets live: WebDataset tar shards, brace ranges, globs and fsspec URLs
(S3 on a moto server on 127.0.0.1), with the guarantees local files have: a row per image, the
decode budget, bad members as error rows, names printed escaped and nothing written anywhere."""

from __future__ import annotations

import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import shards as wds
from featuremaps.engine import sources
from featuremaps.engine.decode_pool import DecodePool, InlineDecoder
from featuremaps.engine.inputs import collect_inputs, printable_path, skipped_note
from featuremaps.engine.preprocess import DecodeBudget, Preprocessing, preprocess_bytes
from featuremaps.errors import ImageDecodeError, InputError

PRE = Preprocessing(size=(32, 32))


@pytest.fixture(scope="module")
def shard_set(tmp_path_factory, sample_paths):
    return wds.webdataset(sample_paths, tmp_path_factory.mktemp("wds") / "shards")


def _rows(images) -> list[str]:
    return [f"{shard}#{name}" for shard, name, _ in images]


def _decode(rows, budget=DecodeBudget()):
    return InlineDecoder(PRE, batch_size=len(rows), budget=budget).decode(rows)


# ---------------------------------------------------------------- expansion


def test_brace_ranges_and_lists_expand_in_order():
    assert sources.expand_braces("s/{00008..00011}.tar") == ["s/00008.tar", "s/00009.tar", "s/00010.tar",
                                                             "s/00011.tar"]
    assert sources.expand_braces("{a,b}/{1..2}.jpg") == ["a/1.jpg", "a/2.jpg", "b/1.jpg", "b/2.jpg"]
    assert sources.expand_braces("{3..1}") == ["3", "2", "1"]
    assert sources.expand_braces("x{}y{z}.jpg") == ["x{}y{z}.jpg"]  # nothing to expand: as written
    with pytest.raises(InputError, match="more than"):
        sources.expand_braces("{0..99999999}")


def test_braces_and_globs_give_each_shards_image_members_in_tar_order(shard_set):
    folder = shard_set["shards"][0].parent
    expected = _rows(shard_set["images"])
    skipped = Counter()
    assert collect_inputs([f"{folder}/{{00000..00002}}.tar"], skipped) == expected
    assert skipped == {".cls": 9, ".json": 9}  # the WebDataset sidecars, counted like skipped files
    assert skipped_note(skipped) == "18 files skipped: .cls x9, .json x9 (not image extensions)"
    assert collect_inputs([f"{folder}/*.tar"]) == expected
    assert collect_inputs([f"{folder}/{{00001..00002}}.tar"]) == expected[3:]
    assert collect_inputs([shard_set["shards"][2], shard_set["shards"][0]]) == expected[:3] + expected[6:]
    # a shard's rows follow the tar, not the names: reversed names inside stay in tar order
    rev = wds.write_shard(folder.parent / "rev.tar", [("b.jpg", b"1"), ("a.jpg", b"2")])
    assert collect_inputs([rev]) == [f"{rev}#b.jpg", f"{rev}#a.jpg"]
    # a member named directly is that one row, sorted with its shard's members in tar order
    assert collect_inputs([f"{rev}#a.jpg", f"{rev}#b.jpg"]) == [f"{rev}#b.jpg", f"{rev}#a.jpg"]
    with pytest.raises(InputError, match="not found"):
        collect_inputs([f"{rev}#c.jpg"])


def test_a_pattern_that_finds_nothing_or_a_shard_that_is_not_one_is_one_line(shard_set, tmp_path):
    folder = shard_set["shards"][0].parent
    with pytest.raises(InputError, match=r"00003\.tar not found"):
        collect_inputs([f"{folder}/{{00000..00003}}.tar"])
    with pytest.raises(InputError, match="matches nothing"):
        collect_inputs([f"{folder}/*.tgz"])
    (tmp_path / "fake.tar").write_bytes(b"this is not a tar archive\n" * 40)
    with pytest.raises(InputError, match="fake.tar is not an uncompressed tar .*pass .tar shards"):
        collect_inputs([tmp_path / "fake.tar"])
    with pytest.raises(InputError, match="not found"):
        collect_inputs([tmp_path / "missing.tar"])
    # in a list file, a shard that is not one is kept as a row (an error row), as a missing file is
    (tmp_path / "l.txt").write_text("fake.tar\n")
    assert collect_inputs([f"@{tmp_path / 'l.txt'}"]) == [str(tmp_path / "fake.tar")]


def test_file_urls_name_local_files(shard_set, tmp_path):
    shard = shard_set["shards"][1]
    assert collect_inputs([f"file://{shard}"]) == collect_inputs([shard])
    (tmp_path / "a b.jpg").write_bytes(shard_set["images"][0][2])
    assert collect_inputs(["file://" + str(tmp_path).replace(" ", "%20") + "/a%20b.jpg"]) == [str(tmp_path / "a b.jpg")]


# ---------------------------------------------------------------- reading members


def test_members_read_back_exactly_with_one_range_read_per_run(shard_set, monkeypatch):
    rows = _rows(shard_set["images"])
    for row, (_, _, data) in zip(rows, shard_set["images"]):
        assert sources.read_input_bytes(row) == data
    spans = []
    real = sources._read_span
    monkeypatch.setattr(sources, "_read_span", lambda idx, a, b: spans.append((idx.shard, a, b)) or real(idx, a, b))
    got = list(sources.iter_input_bytes(rows))
    assert got == [d for _, _, d in shard_set["images"]]
    offsets = [wds.member_offsets(s) for s in shard_set["shards"]]
    # one read per shard, from its first image's data to its last image's end (tarfile's own offsets)
    want = []
    for s, table in zip(shard_set["shards"], offsets):
        first, last = [table[n] for sh, n, _ in shard_set["images"] if sh == s][::2]
        want.append((str(s), first[0], last[0] + last[1]))
    assert spans == want


def test_decoded_members_equal_the_same_bytes_decoded_as_files(shard_set):
    rows = _rows(shard_set["images"])
    got = _decode(rows)
    assert got.ok_rows == list(range(len(rows))) and not got.errors
    want = np.stack([preprocess_bytes(d, PRE) for _, _, d in shard_set["images"]])
    assert np.array_equal(got.inputs, want)


def test_decode_pool_workers_read_members(shard_set):
    rows = _rows(shard_set["images"])[:4]
    with DecodePool(PRE, workers=1, batch_size=4, slots=1) as pool:
        batch = pool.decode(rows)
        assert batch.ok_rows == [0, 1, 2, 3] and not batch.errors
        assert np.array_equal(batch.inputs, _decode(rows).inputs)
        pool.release(batch)


def test_a_truncated_shard_keeps_its_members_and_the_cut_ones_are_error_rows(sample_paths, tmp_path):
    members = [(f"{k}.jpg", wds.photo_bytes(sample_paths, 2 * k)[1]) for k in range(4)]
    whole = wds.write_shard(tmp_path / "whole.tar", members)
    table = wds.member_offsets(whole)
    off, size = table["2.jpg"]
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole.read_bytes()[:off + size // 2])  # in the middle of member 2's data
    rows = collect_inputs([cut])
    assert rows == [f"{cut}#{k}.jpg" for k in range(3)]  # member 3's header is gone
    got = _decode(rows)
    assert got.ok_rows == [0, 1] and list(got.errors) == [2]
    assert got.errors[2].startswith("truncated shard")
    header_cut = tmp_path / "header.tar"
    header_cut.write_bytes(whole.read_bytes()[:off - 512 + 100])  # inside member 2's header
    assert collect_inputs([header_cut]) == [f"{header_cut}#{k}.jpg" for k in range(2)]


def test_a_member_that_is_not_an_image_or_over_the_limit_is_an_error_row(sample_paths, tmp_path):
    _, photo = wds.photo_bytes(sample_paths, 0)
    shard = wds.write_shard(tmp_path / "s.tar", [("a.jpg", photo), ("b.jpg", b"not an image at all\n" * 100),
                                                 ("c.png", b""), ("d.jpg", photo)])
    rows = collect_inputs([shard])
    got = _decode(rows)
    assert got.ok_rows == [0, 3]
    assert "not a decodable image" in got.errors[1] and "empty file" in got.errors[2]
    small = DecodeBudget(max_file_bytes=len(photo) - 1)
    got = _decode(rows, small)
    assert got.ok_rows == [] and f"member is {len(photo)} bytes, over the {len(photo) - 1}-byte limit" in got.errors[0]
    got = _decode(rows, DecodeBudget(max_pixels=100))
    assert got.ok_rows == [] and "over the 100-pixel limit" in got.errors[0]


def test_hostile_member_names_stay_row_ids_printed_escaped(sample_paths, tmp_path):
    _, photo = wds.photo_bytes(sample_paths, 0)
    names = ["../../etc/passwd.jpg", "/abs/x.jpg", "line\nbreak.jpg", "esc\x1b[2Jape.jpg", "dir/..", "a#b.jpg"]
    shard = wds.write_shard(tmp_path / "in" / "s.tar", [(n, photo) for n in names])
    before = sorted(tmp_path.rglob("*"))
    rows = collect_inputs([shard])
    assert rows == [f"{shard}#{n}" for n in names if n.endswith(".jpg")]
    got = _decode(rows)
    assert got.ok_rows == list(range(len(rows)))  # each read as itself, through the shard
    assert sorted(tmp_path.rglob("*")) == before  # nothing unpacked or written anywhere
    shown = printable_path(rows[2]) + printable_path(rows[3])
    assert "\n" not in shown and "\x1b" not in shown and "line\\nbreak.jpg" in shown
    assert sources.row_name(f"{shard}#dir/..") == "image" and sources.row_name(rows[0]) == "passwd.jpg"


def test_links_and_devices_in_a_shard_are_skipped_never_followed(sample_paths, tmp_path):
    _, photo = wds.photo_bytes(sample_paths, 0)
    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w") as tf:
        wds.add(tf, "ok.jpg", photo)
        for name, kind in (("sym.jpg", tarfile.SYMTYPE), ("hard.jpg", tarfile.LNKTYPE), ("fifo.jpg", tarfile.FIFOTYPE),
                           ("d", tarfile.DIRTYPE)):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, "/etc/passwd" if kind == tarfile.SYMTYPE else "ok.jpg"
            tf.addfile(info)
    skipped = Counter()
    assert collect_inputs([shard], skipped) == [f"{shard}#ok.jpg"]
    assert skipped == {"(symbolic link)": 1, "(hard link)": 1, "(device or FIFO)": 1}
    with pytest.raises(ImageDecodeError, match="has no member sym.jpg"):
        sources.read_input_bytes(f"{shard}#sym.jpg")


def test_a_file_named_like_a_member_wins_over_the_member(sample_paths, tmp_path):
    """The ``#`` rule: ``x.tar#y.jpg`` is the file of that name when one exists, else member y.jpg."""
    _, a = wds.photo_bytes(sample_paths, 0)
    _, b = wds.photo_bytes(sample_paths, 2)
    shard = wds.write_shard(tmp_path / "x.tar", [("y.jpg", b)])
    literal = tmp_path / "x.tar#y.jpg"
    literal.write_bytes(a)
    skipped = Counter()
    assert collect_inputs([tmp_path], skipped) == [str(literal)]  # the walk finds the file; x.tar is not an image
    assert sources.read_input_bytes(str(literal)) == a
    assert collect_inputs([shard]) == [str(literal)]  # the member's row id is the same name ...
    literal.unlink()
    assert sources.read_input_bytes(str(literal)) == b  # ... and reads the member once the file is gone
    # a member named with '#' and '.tar#' inside: the shard is the part that is a file
    odd = wds.write_shard(tmp_path / "o.tar", [("p.tar#q.jpg", a)])
    assert sources.read_input_bytes(f"{odd}#p.tar#q.jpg") == a


def test_the_member_index_is_built_once_per_shard(sample_paths, tmp_path):
    shard = wds.write_shard(tmp_path / "s.tar", [(f"{k}.jpg", wds.photo_bytes(sample_paths, k)[1]) for k in range(3)])
    sources._local_index.cache_clear()
    for k in range(3):
        sources.read_input_bytes(f"{shard}#{k}.jpg")
    info = sources._local_index.cache_info()
    assert (info.misses, info.hits) == (1, 2)


def test_redact_removes_credentials_from_urls():
    url = "https://user:s3cr3t@host.example/x.tar?X-Amz-Signature=abcdef&X-Amz-Credential=KEY#000001.jpg"
    shown = printable_path(url)
    assert shown == "https://host.example/x.tar#000001.jpg"
    text = sources.redact(f"failed to GET {url} (403)")
    assert "s3cr3t" not in text and "abcdef" not in text and "KEY" not in text and text.endswith("(403)")
    assert printable_path("/local/a?b@c.jpg") == "/local/a?b@c.jpg"  # local names are not URLs


def test_an_input_error_quoting_the_environments_credentials_shows_stars(monkeypatch):
    """A client library's error may quote the key it was given: the reason printed for an input
    (an error row or a one-line refusal) blanks the AWS_* values, as the store's messages do."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    reason = sources._storage_reason(OSError("signature mismatch for AKIAIOSFODNN7EXAMPLE / wJalrXUtnFEMI/K7MDENG"))
    assert "AKIAIOSFODNN7EXAMPLE" not in reason and "wJalrXUtnFEMI" not in reason
    assert reason == "OSError: signature mismatch for *** / ***"


# ---------------------------------------------------------------- S3 (moto on 127.0.0.1)


def _upload(s3, key: str, data: bytes) -> str:
    s3.fs().pipe(f"{s3.bucket}/{key}", data)
    return s3.url(key)


def _upload_shards(s3, shard_set) -> list[str]:
    return [_upload(s3, f"wds/{p.name}", p.read_bytes()) for p in shard_set["shards"]]


def test_s3_shards_by_brace_range_and_glob_read_like_local_ones(s3, shard_set):
    urls = _upload_shards(s3, shard_set)
    expected = [f"{s3.url('wds/' + Path(sh).name)}#{n}" for sh, n, _ in shard_set["images"]]
    skipped = Counter()
    assert collect_inputs([s3.url("wds/{00000..00002}.tar")], skipped) == expected
    assert skipped == {".cls": 9, ".json": 9}
    assert collect_inputs([s3.url("wds/*.tar")]) == expected
    assert collect_inputs([urls[1]]) == expected[3:6]
    got = list(sources.iter_input_bytes(expected))
    assert got == [d for _, _, d in shard_set["images"]]
    assert np.array_equal(_decode(expected).inputs, _decode(_rows(shard_set["images"])).inputs)


def test_s3_prefix_and_list_file(s3, shard_set):
    images = shard_set["images"][:3]
    for _, name, data in images:
        _upload(s3, f"photos/sub/{name}", data)
    _upload(s3, "photos/notes.txt", b"not an image")
    skipped = Counter()
    rows = collect_inputs([s3.url("photos")], skipped)
    assert rows == sorted(s3.url(f"photos/sub/{n}") for _, n, _ in images) and skipped == {".txt": 1}
    assert [sources.read_input_bytes(r) for r in rows] == [d for _, _, d in sorted(images, key=lambda t: t[1])]
    _upload(s3, "photos/list.txt", f"sub/{images[1][1]}\n# a comment\n{s3.url('photos/sub/' + images[0][1])}\n"
            f"sub/missing.jpg\n".encode())
    listed = collect_inputs([f"@{s3.url('photos/list.txt')}"])
    assert listed == sorted([s3.url(f"photos/sub/{images[1][1]}"), s3.url(f"photos/sub/{images[0][1]}"),
                             s3.url("photos/sub/missing.jpg")])
    got = _decode(listed)
    assert got.ok_rows == [0, 1] and got.errors[2].startswith("not found")


def test_s3_object_gone_after_listing_is_an_error_row(s3, shard_set):
    keep, gone = shard_set["images"][0], shard_set["images"][1]
    _upload(s3, f"p/{keep[1]}", keep[2])
    _upload(s3, f"p/{gone[1]}", gone[2])
    rows = collect_inputs([s3.url("p/")])
    s3.fs().rm(f"{s3.bucket}/p/{gone[1]}")
    got = _decode(rows)
    assert got.ok_rows == [0] and got.errors == {1: "not found (removed since the inputs were listed?)"}
    with pytest.raises(InputError, match=r"^input s3://.*/nothing-here not found"):
        collect_inputs([s3.url("nothing-here")])
    shard = _upload(s3, "s.tar", shard_set["shards"][0].read_bytes())
    rows = collect_inputs([shard])
    s3.fs().rm(f"{s3.bucket}/s.tar")
    assert _decode(rows).errors[0].startswith(f"shard {shard} not found")


def test_s3_object_over_the_limit_is_refused_before_reading(s3, shard_set, monkeypatch):
    _, name, data = shard_set["images"][0]
    url = _upload(s3, name, data)
    opened = []
    monkeypatch.setattr(sources, "_read_url", lambda u, m, real=sources._read_url: opened.append(u) or real(u, m))
    got = _decode([url], DecodeBudget(max_file_bytes=len(data) - 1))
    assert got.errors == {0: f"object is {len(data)} bytes, over the {len(data) - 1}-byte limit; raise "
                             "--max-file-bytes to accept it"} and opened == [url]


def test_credentials_in_an_unreachable_url_never_reach_the_message():
    url = "http://user:s3cr3t@127.0.0.1:9/x.jpg?token=hidden"  # port 9 (discard): refused at once
    got = InlineDecoder(PRE, batch_size=1).decode([url])
    assert got.ok_rows == [] and "s3cr3t" not in got.errors[0] and "hidden" not in got.errors[0]
    with pytest.raises(InputError) as err:
        collect_inputs([url])
    assert "s3cr3t" not in str(err.value) and "hidden" not in str(err.value) and "\n" not in str(err.value)


def test_remote_members_read_one_by_one_share_one_read_ahead(s3, shard_set, monkeypatch):
    """A decode worker reads its rows one at a time: on object storage each member would be a request.
    The first read brings the following members (up to READAHEAD bytes) with it."""
    _upload_shards(s3, shard_set)
    rows = [f"{s3.url('wds/' + Path(sh).name)}#{n}" for sh, n, _ in shard_set["images"]]
    spans = []
    real = sources._read_span
    monkeypatch.setattr(sources, "_read_span", lambda idx, a, b: spans.append((idx.shard, a, b)) or real(idx, a, b))
    got = [sources.read_input_bytes(r) for r in rows]
    assert got == [d for _, _, d in shard_set["images"]]  # tarfile's bytes, member for member
    assert len(spans) == len(shard_set["shards"])  # one request per shard, not one per member
    spans.clear()
    monkeypatch.setattr(sources, "READAHEAD", 1)  # read-ahead off: one request per member
    sources._READ_AHEAD.span = None
    assert [sources.read_input_bytes(r) for r in rows] == got
    assert len(spans) == len(rows)


def test_remote_shards_of_a_pattern_are_listed_concurrently_and_errors_stay_in_order(s3, shard_set, monkeypatch):
    import threading

    from featuremaps.engine import inputs

    urls = _upload_shards(s3, shard_set)
    sources._url_index.cache_clear()
    where = []
    real = inputs.shard_index
    monkeypatch.setattr(inputs, "shard_index", lambda s: where.append((s, threading.current_thread().name)) or real(s))
    rows = collect_inputs([s3.url("wds/{00000..00002}.tar")])
    assert rows == [f"{s3.url('wds/' + Path(sh).name)}#{n}" for sh, n, _ in shard_set["images"]]
    listed = {s for s, thread in where if thread.startswith("fm-list")}
    assert listed == set(urls)  # every shard's headers were read by the listing threads
    s3.fs().rm_file(f"{s3.bucket}/wds/00001.tar")
    sources._url_index.cache_clear()
    with pytest.raises(InputError, match="00001.tar"):
        collect_inputs([s3.url("wds/{00000..00002}.tar")])


@pytest.mark.parametrize("url", ["https://user:pw@example.org/a.jpg",
                                 "https://example.org/a.jpg?X-Amz-Signature=abc&X-Amz-Credential=x",
                                 "s3://bucket/a.jpg?token=SECRET"])
def test_input_urls_carrying_credentials_are_refused(url, monkeypatch):
    from featuremaps.engine import inputs

    monkeypatch.setattr(inputs, "_url", lambda item, skipped: [((item, -1), item)])  # no network: just the rows
    with pytest.raises(InputError, match="carries credentials") as err:
        collect_inputs([url])
    assert "pw" not in str(err.value) and "SECRET" not in str(err.value) and "abc" not in str(err.value)


def test_an_ordinary_query_is_kept(monkeypatch):
    from featuremaps.engine import inputs

    monkeypatch.setattr(inputs, "_url", lambda item, skipped: [((item, -1), item)])
    assert collect_inputs(["https://example.org/a.jpg?w=640"]) == ["https://example.org/a.jpg?w=640"]
