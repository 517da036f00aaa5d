"""Downloads of pretrained files, against a real HTTP server on 127.0.0.1 that the test starts.

The server is reached through `GANZIP_ASSETS_MIRROR`, as an offline cluster's
internal host would be. Each case ends with the file installed, or with one
line and no partial file.
"""
from __future__ import annotations

import hashlib
import http.server
import os
import threading
import time

import pytest

from ganzip import assets
from ganzip.errors import GanzipError

PAYLOAD = os.urandom(300_000)  # stands in for a weights file: the real ones cannot be fetched here


class _Handler(http.server.BaseHTTPRequestHandler):
    mode = "good"

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):  # noqa: N802 (http.server's name)
        body = PAYLOAD if self.mode != "wrong" else PAYLOAD[::-1]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.mode == "truncated":
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            self.connection.close()
            return
        if self.mode == "stalled":
            self.wfile.write(body[:1000])
            self.wfile.flush()
            time.sleep(3)  # longer than the client's timeout; bounded, so the server stops by itself
            return
        self.wfile.write(body)


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("GANZIP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GANZIP_ASSETS_MIRROR", f"http://127.0.0.1:{server.server_address[1]}/mirror/")
    monkeypatch.delenv("GANZIP_OFFLINE", raising=False)
    spec = assets.AssetSpec(name="test_weights", filename="test-weights.pth",
                            sha256=hashlib.sha256(PAYLOAD).hexdigest(), url="https://example.invalid/test-weights.pth",
                            size=len(PAYLOAD), description="test stand-in weights")
    monkeypatch.setitem(assets._REGISTRY, spec.name, spec)
    yield server
    server.shutdown()
    server.server_close()


def _leftovers(tmp_path):
    folder = tmp_path / "home" / "assets"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_good_file_is_announced_and_installed(mirror, tmp_path, capsys):
    _Handler.mode = "good"
    path = assets.resolve("test_weights")
    assert path == tmp_path / "home" / "assets" / "test-weights.pth"
    assert path.read_bytes() == PAYLOAD
    err = capsys.readouterr().err
    assert "downloading test-weights.pth (0 MB) from http://127.0.0.1:" in err and str(path) in err


@pytest.mark.parametrize("mode,fragment", [("wrong", "SHA-256"), ("truncated", "stopped after"),
                                           ("stalled", "timed out")])
def test_a_bad_download_leaves_nothing(mode, fragment, mirror, tmp_path):
    _Handler.mode = mode
    with pytest.raises(GanzipError, match=fragment) as err:
        assets.download("test_weights", timeout=1.0, progress=False)
    assert "\n" not in str(err.value)
    assert _leftovers(tmp_path) == []


def test_offline_refuses_to_download(mirror, tmp_path, monkeypatch):
    _Handler.mode = "good"
    monkeypatch.setenv("GANZIP_OFFLINE", "1")
    with pytest.raises(GanzipError, match="Offline"):
        assets.resolve("test_weights")
    assert _leftovers(tmp_path) == []


def test_a_mirror_that_is_not_a_url_is_one_line(mirror, monkeypatch):
    monkeypatch.setenv("GANZIP_ASSETS_MIRROR", "/srv/assets")
    with pytest.raises(GanzipError, match="GANZIP_ASSETS_MIRROR"):
        assets.resolve("test_weights")
