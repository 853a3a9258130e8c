"""The optional download, served from a local http.server on 127.0.0.1: never the network."""

import functools
import hashlib
import http.server
import threading

import pytest

from npllm.data.download import DownloadError, fetch, user_cache_dir

CONTENT = b"First Citizen:\nBefore we proceed any further, hear me speak.\n" * 100


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Serve tmp_path/www on a free loopback port; yields the base URL and a way to stop it."""
    monkeypatch.setenv("no_proxy", "127.0.0.1")  # a proxy configured on the machine must not intercept
    www = tmp_path / "www"
    www.mkdir()
    (www / "input.txt").write_bytes(CONTENT)
    handler = functools.partial(QuietHandler, directory=str(www))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def stop():
        httpd.shutdown()
        httpd.server_close()

    yield f"http://127.0.0.1:{httpd.server_address[1]}", stop
    if thread.is_alive():
        stop()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_a_good_checksum_caches_and_the_second_call_needs_no_server(tmp_path, server):
    base_url, stop = server
    cache = tmp_path / "cache"
    sha256 = hashlib.sha256(CONTENT).hexdigest()
    path = fetch(f"{base_url}/input.txt", sha256, "shakespeare.txt", cache_dir=cache)
    assert path == cache / "shakespeare.txt" and path.read_bytes() == CONTENT
    stop()
    assert fetch(f"{base_url}/input.txt", sha256, "shakespeare.txt", cache_dir=cache).read_bytes() == CONTENT


def test_a_wrong_checksum_errors_and_leaves_nothing(tmp_path, server):
    base_url, _ = server
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="checksum mismatch for http://127.0.0.1.*nothing was saved"):
        fetch(f"{base_url}/input.txt", "0" * 64, "shakespeare.txt", cache_dir=cache)
    assert list(cache.iterdir()) == []


def test_an_unreachable_file_is_one_clear_error(tmp_path, server):
    base_url, _ = server
    with pytest.raises(DownloadError, match="could not download .*/absent.txt"):
        fetch(f"{base_url}/absent.txt", "0" * 64, "absent.txt", cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_the_cache_folder_follows_argument_then_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("NPLLM_CACHE", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    assert user_cache_dir() == tmp_path / "env"
    monkeypatch.delenv("NPLLM_CACHE")
    assert user_cache_dir() == tmp_path / "xdg" / "npllm"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_cache_dir() == tmp_path / "home" / ".cache" / "npllm"
