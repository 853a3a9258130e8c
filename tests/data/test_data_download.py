"""The optional download, served from a local http.server on 127.0.0.1: never the network."""

import functools
import hashlib
import http.server
import threading

import numpy as np
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


# --- the SMS Spam Collection: a zip of the same layout as UCI's, served locally ------------------
def sms_zip(folder, hams=40, spams=10, member="SMSSpamCollection") -> bytes:
    import io
    import zipfile

    lines = [f"ham\tsee you at lunch number {i}" for i in range(hams)] + \
            [f"spam\tWIN a prize now, call {i}" for i in range(spams)]
    lines[1] += "\x0c and \u2028 inside a message"  # line breaks to str.splitlines, not to the file
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(member, "\n".join(lines) + "\n")
        archive.writestr("readme", "The SMS Spam Collection v.1\n")
    (folder / "sms.zip").write_bytes(buffer.getvalue())
    return buffer.getvalue()


@pytest.fixture
def sms_server(server, tmp_path, monkeypatch):
    import npllm.data.download as download

    base_url, stop = server
    content = sms_zip(tmp_path / "www")
    monkeypatch.setattr(download, "SMS_SPAM_URL", f"{base_url}/sms.zip")
    monkeypatch.setattr(download, "SMS_SPAM_SHA256", hashlib.sha256(content).hexdigest())
    monkeypatch.setenv("NPLLM_CACHE", str(tmp_path / "cache"))
    return stop


def test_sms_spam_is_balanced_as_the_book_does_and_cached(sms_server):
    from npllm.data.labelled import load_labelled

    stop = sms_server
    data = load_labelled("sms-spam", seed=0)
    assert data.labels == ["ham", "spam"]
    counts = np.bincount(np.concatenate([data.train_labels, data.test_labels]))
    assert counts.tolist() == [10, 10] and len(data.test_labels) == 4  # as many hams as spams; a fifth held out
    assert all("\t" not in text for text in data.train_texts + data.test_texts)
    stop()  # the second time comes from the cache
    assert load_labelled("sms-spam", seed=0).test_texts == data.test_texts


def test_the_sms_zip_is_held_to_the_recorded_digest(sms_server, monkeypatch, tmp_path):
    import npllm.data.download as download

    assert download.SMS_SPAM_SHA256 != "1587ea43e58e82b14ff1f5425c88e17f8496bfcdb67a583dbff9eefaf9963ce3"  # the fixture's
    monkeypatch.setattr(download, "SMS_SPAM_SHA256", "1587ea43e58e82b14ff1f5425c88e17f8496bfcdb67a583dbff9eefaf9963ce3")
    with pytest.raises(DownloadError, match="checksum mismatch .*expected sha256 1587ea43.*nothing was saved"):
        download.sms_spam_zip()  # the locally served zip is not UCI's, so it is refused
    assert not list((tmp_path / "cache").iterdir())


def test_a_zip_without_the_collection_is_named(tmp_path, server, monkeypatch):
    import npllm.data.download as download
    from npllm.data.labelled import load_labelled
    from npllm.data.sources import DataSourceError

    base_url, _ = server
    content = sms_zip(tmp_path / "www", member="other.txt")
    monkeypatch.setattr(download, "SMS_SPAM_URL", f"{base_url}/sms.zip")
    monkeypatch.setattr(download, "SMS_SPAM_SHA256", hashlib.sha256(content).hexdigest())
    monkeypatch.setenv("NPLLM_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataSourceError, match="not the SMS Spam Collection's zip"):
        load_labelled("sms-spam")
