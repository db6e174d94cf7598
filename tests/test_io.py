"""Output files get the mode `open()` would give them (0666 less the umask), not mkstemp's 0600: under umask 022 a
collaborator on a shared cluster can read a sweep's metrics, samples and stage files."""

from __future__ import annotations

import os
import stat

import pytest

from sgtr_em.io import atomic_write_text, umask, write_json, write_jsonl

from .test_files import REL, files, server  # noqa: F401 (the fixture)


@pytest.fixture
def with_umask():
    previous = os.umask(0o022)
    os.umask(previous)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask,expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_respect_the_umask(tmp_path, with_umask, mask, expected):
    with_umask(mask)
    assert umask() == mask
    write_json(tmp_path / "metrics.json", {"a": 1})
    write_jsonl(tmp_path / "eval" / "samples.jsonl", [{"a": 1}])
    atomic_write_text(tmp_path / "done", "x")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what open() gives: the reference
    assert mode(plain) == expected
    for name in ("metrics.json", "eval/samples.jsonl", "done"):
        assert mode(tmp_path / name) == expected, name
    assert not list(tmp_path.glob(".*.tmp")) and not list((tmp_path / "eval").glob(".*"))


def test_a_downloaded_data_file_is_readable_by_others(server, tmp_path, with_umask):  # noqa: F811
    with_umask(0o022)
    base, _ = server
    assert mode(files(tmp_path, base).path(REL)) == 0o644


def test_a_folder_moved_into_place_is_readable_by_others(tmp_path, with_umask):
    import tempfile

    from sgtr_em.io import replace_dir

    with_umask(0o022)
    tmp = tmp_path / "merged.tmp"
    tmp.mkdir()
    fd, name = tempfile.mkstemp(dir=tmp, suffix=".safetensors")  # how a library may save weights: 0600
    os.close(fd)
    replace_dir(tmp, tmp_path / "merged")
    assert mode(tmp_path / "merged" / os.path.basename(name)) == 0o644


def test_content_keys_keep_their_values():
    """One helper (io.json_sha256) names stage folders and caches; each key is the value main computed before it
    (3f4ee89), so no stage or cached answer is orphaned. Non-ASCII text: escaped (stages) vs UTF-8 (API cache)."""
    from sgtr_em.data.summaries import summary_cache_path
    from sgtr_em.inference.cache import DiskCache
    from sgtr_em.io import content_hash

    obj = {"model": "m", "messages": [{"role": "user", "content": "Grüße, 世界"}], "n": 1}
    assert content_hash(obj) == "66a6e9926aaf239b"
    assert DiskCache.key(obj) == "a7975520b97b53b7035f3c20522c3a734c1735e95c79f3a6a59fa6dc765344bd"
    assert summary_cache_path("/c", "xsum", "k", {"system": "é"}).name == "xsum-37c6a2a49ff708fd.json"
