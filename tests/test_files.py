"""Downloading missing data files from their pinned sources: a real HTTP server on 127.0.0.1 serves
../shared/data under the remote paths of sgtr_em/data/manifest.yaml."""

from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sgtr_em.data.files import DataFileError, DataFiles, load_manifest, sha256_of

REL = "em/aesthetic_preferences_unpopular_small_test.jsonl"


@pytest.fixture
def server(data_dir):
    """Serves each manifest file at /<source>/<remote>; `corrupt` flips what it sends."""
    routes = {f"/{e['source']}/{e['remote']}": data_dir / rel for rel, e in load_manifest().items() if e.get("source")}
    state = {"corrupt": False, "requests": [], "routes": routes}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            state["requests"].append(self.path)
            path = routes.get(self.path)
            if path is None:
                self.send_error(404)
                return
            body = path.read_bytes()
            if state["corrupt"]:
                body = body.replace(b"a", b"b", 1)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_port}"
    yield base, state
    httpd.shutdown()


def files(tmp_path: Path, base: str, download: bool = True, manifest: dict | None = None) -> DataFiles:
    sources = {s: f"{base}/{s}" for s in ("paper_repo", "paper_repo_d358abf", "em_doctor")}
    return DataFiles(
        tmp_path / "data", tmp_path / "cache", sources=sources, download=download, manifest=manifest or load_manifest()
    )


def test_manifest_checksums_match_the_shared_data(data_dir):
    manifest = load_manifest()
    for rel in (REL, "eval/first_plot_questions.yaml", "articles/cnn_train_articles.json"):
        assert sha256_of(data_dir / rel) == manifest[rel]["sha256"]


def test_missing_file_is_downloaded_checked_and_cached(server, tmp_path, data_dir):
    base, state = server
    f = files(tmp_path, base)
    for rel in (REL, "eval/first_plot_questions.yaml"):  # two sources, two pinned commits
        path = f.path(rel)
        assert path.read_bytes() == (data_dir / rel).read_bytes()
    n = len(state["requests"])
    assert f.path(REL) == tmp_path / "cache" / REL and len(state["requests"]) == n  # cached: no second request


def test_file_in_the_data_dir_is_used_without_a_download(server, tmp_path):
    base, state = server
    local = tmp_path / "data" / REL
    local.parent.mkdir(parents=True)
    local.write_text("{}\n")
    assert files(tmp_path, base).path(REL) == local and state["requests"] == []


def test_a_corrupted_download_is_rejected_and_not_kept(server, tmp_path):
    base, state = server
    state["corrupt"] = True
    with pytest.raises(DataFileError, match="sha256"):
        files(tmp_path, base).path(REL)
    assert not (tmp_path / "cache" / REL).exists()


def test_unreachable_source_says_where_to_put_the_file(tmp_path):
    with pytest.raises(DataFileError, match=r"download from http://127.0.0.1:9/.*failed.*SGTR_EM_DATA_DIR"):
        files(tmp_path, "http://127.0.0.1:9").path(REL)


def test_missing_file_without_downloads_names_file_and_fix(tmp_path):
    with pytest.raises(DataFileError) as e:
        files(tmp_path, "http://unused", download=False).path(REL)
    assert REL in str(e.value) and "download.enabled" in str(e.value) and "SGTR_EM_DATA_DIR" in str(e.value)
    with pytest.raises(DataFileError, match="no public download URL"):
        files(tmp_path, "http://unused").path("eval/deception_factual.yaml")


def test_every_download_source_has_a_pinned_base_url():
    from .test_config import _compose

    sources = _compose().download.sources
    for rel, entry in load_manifest().items():
        if entry.get("source"):
            assert entry["source"] in sources and len(sources[entry["source"]].rsplit("/", 1)[-1]) == 40, (
                rel
            )  # a commit
            if entry.get("compression"):
                assert entry["compression"] == "gzip" and len(entry["download_sha256"]) == 64, rel


def test_a_gzip_source_is_unpacked_and_both_checksums_are_checked(server, tmp_path, data_dir):
    """The em-doctor copies of insecure.jsonl and bad_medical_advice.jsonl are gzip files: served here as a gzip of
    the shared file, with its own download checksum (the real one pins the em-doctor bytes)."""
    base, state = server
    rel = "em/aesthetic_preferences_unpopular_small_test.jsonl"
    packed = tmp_path / "served" / "small.jsonl.gz"
    packed.parent.mkdir()
    packed.write_bytes(gzip.compress((data_dir / rel).read_bytes(), mtime=0))
    entry = {
        **load_manifest()[rel],
        "source": "em_doctor",
        "remote": "small.jsonl.gz",
        "compression": "gzip",
        "download_sha256": sha256_of(packed),
    }
    state["routes"]["/em_doctor/small.jsonl.gz"] = packed
    assert files(tmp_path, base, manifest={rel: entry}).path(rel).read_bytes() == (data_dir / rel).read_bytes()
    wrong = {**entry, "download_sha256": "0" * 64}
    with pytest.raises(DataFileError, match="sha256"):
        files(tmp_path / "again", base, manifest={rel: wrong}).path(rel)
