"""`layerflow weights download` lays every registry entry out exactly as the loaders read it.

A local HTTP server stands in for the internet: it speaks the hub's protocol (repo info, tree listing, resolve)
for the hub entries and serves the direct-link entries under their real URLs' paths (zipped where the release
zips them). What it serves is the release-layout tree the loader tests read, so a download that reproduces that
tree byte for byte gives files the loaders accept.
"""
from __future__ import annotations

import hashlib
import io
import json
import threading
import urllib.parse
import urllib.request
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from data_engine import cli, weights, weights_download
from data_engine.weights_download import DownloadError, download

COMMIT = "0123456789abcdef0123456789abcdef01234567"
DECOY = "decoy_duplicate_weights.bin"  # a hub repo holds more than the loaders read; per-file entries skip it


def files_under(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def zipped(name: str, payload: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(name, payload)
    return buf.getvalue()


class FakeInternet:
    """Hub repositories (repo id -> {path: bytes}) and direct links (url -> bytes) on 127.0.0.1."""

    def __init__(self, repos: dict[str, dict[str, bytes]], links: dict[str, bytes]) -> None:
        self.repos, self.links, self.requests = repos, links, []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def local(self, url: str) -> str:
        """A real URL rewritten onto the server: https://host/path -> http://127.0.0.1:port/_link/host/path."""
        parts = urllib.parse.urlsplit(url)
        return f"{self.endpoint}/_link/{parts.netloc}{parts.path}"

    def _route(self, path: str) -> tuple[bytes, dict[str, str]] | None:
        if path.startswith("/_link/"):
            body = self.links.get("https://" + path[len("/_link/"):])
            return None if body is None else (body, {})
        for repo, files in self.repos.items():
            if path.startswith(f"/api/models/{repo}/revision/"):
                info = {"id": repo, "sha": COMMIT, "siblings": [{"rfilename": f} for f in files]}
                return json.dumps(info).encode(), {"Content-Type": "application/json"}
            if path.startswith(f"/api/models/{repo}/tree/"):
                tree = [{"type": "file", "path": f, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                        for f, b in files.items()]
                return json.dumps(tree).encode(), {"Content-Type": "application/json"}
            prefix = f"/{repo}/resolve/"
            if path.startswith(prefix):
                filename = path[len(prefix):].split("/", 1)[1]
                body = files.get(filename)
                if body is None:
                    return None
                return body, {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha1(body).hexdigest()}"'}
        return None

    def _handler(self):
        internet = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, with_body: bool) -> None:
                path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
                internet.requests.append(path)
                found = internet._route(path)
                if found is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body, headers = found
                self.send_response(200)
                for k, v in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                self._answer(True)

            def do_HEAD(self) -> None:  # noqa: N802
                self._answer(False)

            def log_message(self, *args) -> None:
                pass

        return Handler

    def __enter__(self) -> FakeInternet:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def publish(tree: Path) -> tuple[dict[str, dict[str, bytes]], dict[str, bytes]]:
    """What the internet holds for each registry entry, made from the release-layout tree."""
    repos: dict[str, dict[str, bytes]] = {}
    links: dict[str, bytes] = {}
    for s in weights.load_registry().values():
        files = files_under(tree / s.subdir)
        if s.url:
            for filename in s.files:
                url = weights_download._file_url(s, filename)
                links[url] = zipped(filename, files[filename]) if s.archive == "zip" else files[filename]
        else:
            repos[s.hub_id] = {**files, DECOY: b"not read by any loader"} if not s.snapshot else files
    return repos, links


@pytest.fixture
def internet(release_weights, monkeypatch):
    repos, links = publish(release_weights)
    with FakeInternet(repos, links) as net:
        real_urlopen = urllib.request.urlopen
        monkeypatch.setattr(weights_download.urllib.request, "urlopen", lambda url: real_urlopen(net.local(url)))
        yield net


def test_download_all_reproduces_the_release_layout_the_loaders_read(internet, release_weights, tmp_path,
                                                                    monkeypatch, capsys, reference_dir):
    # reference_dir: the official-checkpoint folders of the tree are built from ../shared's sat_tiny fixture
    monkeypatch.setenv(weights.ENV_VAR, str(tmp_path))
    assert cli.main(["weights", "download", "--all", "--endpoint", internet.endpoint]) == 0
    for name, s in weights.load_registry().items():
        got = {f: b for f, b in files_under(tmp_path / s.subdir).items() if not f.startswith(".cache/")}
        assert got == files_under(release_weights / s.subdir), name
    assert not any(p.name == DECOY for p in tmp_path.rglob("*"))
    assert not list(tmp_path.rglob("*.part"))
    capsys.readouterr()
    assert cli.main(["weights", "check"]) == 0
    report = capsys.readouterr().out
    assert report.count(": present;") == len(weights.load_registry())


def test_zipped_release_files_are_unpacked_under_their_registry_names(internet, tmp_path):
    folder = download("propainter", tmp_path, endpoint=internet.endpoint, report=lambda _: None)
    s = weights.spec("propainter")
    assert sorted(p.name for p in folder.iterdir()) == sorted(s.files)
    assert all(any(r.endswith(f + ".zip") for r in internet.requests) for f in s.files)


def test_a_download_that_breaks_off_leaves_nothing_that_looks_present(internet, tmp_path, monkeypatch):
    class BreaksOff(io.BytesIO):
        def read(self, size=-1):
            if self.tell():
                raise ConnectionResetError("connection reset by peer")
            return super().read(16)

    with monkeypatch.context() as patched:
        patched.setattr(weights_download.urllib.request, "urlopen", lambda url: BreaksOff(b"x" * 64))
        with pytest.raises(ConnectionResetError):
            download("sam-vit-h", tmp_path, endpoint=internet.endpoint, report=lambda _: None)
    target = tmp_path / "sam-vit-h" / "sam_vit_h_4b8939.pth"
    assert weights.missing_files("sam-vit-h", tmp_path) == [target]
    download("sam-vit-h", tmp_path, endpoint=internet.endpoint, report=lambda _: None)
    assert weights.missing_files("sam-vit-h", tmp_path) == [] and target.stat().st_size > 64


def test_a_release_that_is_not_the_archive_it_should_be_is_one_line(internet, tmp_path):
    s = weights.spec("propainter")
    internet.links[weights_download._file_url(s, s.files[0])] = b"<html>moved</html>"
    with pytest.raises(DownloadError) as info:
        download("propainter", tmp_path, endpoint=internet.endpoint, report=lambda _: None)
    assert "not a zip archive" in str(info.value) and "\n" not in str(info.value)
    assert not list((tmp_path / s.subdir).glob("*.part"))


def test_a_sharded_checkpoint_with_a_missing_shard_is_reported_missing(release_weights, tmp_path):
    import shutil

    s = weights.spec("qwen2.5-vl-7b-instruct")
    shutil.copytree(release_weights / s.subdir, tmp_path / s.subdir)
    shards = weights.shard_files(tmp_path / s.subdir, "model.safetensors.index.json")
    assert len(shards) >= 2
    (tmp_path / s.subdir / shards[-1]).unlink()
    assert weights.missing_files(s.name, tmp_path) == [tmp_path / s.subdir / shards[-1]]
    with pytest.raises(weights.MissingWeightsError, match=shards[-1]):
        weights.resolve(s.name, root=tmp_path)


def test_a_sharded_snapshot_entry_downloads_alone_into_the_layout_its_loader_reads(internet, release_weights,
                                                                                   tmp_path, monkeypatch):
    name = "qwen3-vl-8b-instruct"
    s = weights.spec(name)
    monkeypatch.setenv(weights.ENV_VAR, str(tmp_path))
    assert cli.main(["weights", "download", name, "--endpoint", internet.endpoint]) == 0
    got = {f: b for f, b in files_under(tmp_path / s.subdir).items() if not f.startswith(".cache/")}
    assert got == files_under(release_weights / s.subdir)
    assert len(weights.shard_files(tmp_path / s.subdir, "model.safetensors.index.json")) >= 2
    assert weights.missing_files(name) == [] and sorted(p.name for p in tmp_path.iterdir()) == [s.subdir]
