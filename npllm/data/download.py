"""Optional downloads: Tiny Shakespeare and the SMS Spam Collection, fetched once, checked, and kept in a cache.

Nothing in npllm needs the network: the default corpus ships with Python (see
``corpus.py``). For those who want the classic toy corpus, ``shakespeare_path``
downloads Andrej Karpathy's Tiny Shakespeare (1,115,394 bytes of plays) with the
standard library's ``urllib`` and returns the path of a local copy;
``sms_spam_zip`` fetches the UCI SMS Spam Collection (5,574 text messages
labelled ham or spam, the classification set of Raschka's book) as the zip UCI
serves.

Two habits make a download trustworthy:

* **A checksum.** The expected SHA-256 is written below. Every byte is hashed as it
  arrives; if the digest differs (a truncated transfer, a changed file, a captive
  portal's login page), a ``DownloadError`` says so and nothing is kept.
* **An atomic write.** Bytes go to a temporary file that is renamed into place only
  after the checksum matched, so the cache never holds a half-downloaded file.

The cache folder is, in order of precedence: the ``cache_dir`` argument, the
``NPLLM_CACHE`` environment variable, ``$XDG_CACHE_HOME/npllm``, ``~/.cache/npllm``.
A cached file is re-hashed before use and fetched again if it does not match.

The SMS zip's SHA-256 was not computed on this machine (it has no network). It
is the digest, and 203,415 bytes the size, that several unrelated public projects
recorded for the same URL when they fetched it in 2026 (and that a Julia data
package pins for UCI's old address of the same zip). Every
byte is held to it as for Tiny Shakespeare, so should UCI ever repackage the
file, the download fails in one line naming both digests rather than reading
other bytes.

What this module leaves out on purpose: retries, resuming a partial download,
proxies beyond what ``urllib`` does by itself.
"""

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from npllm.errors import NpllmError
from npllm.io.atomic import atomic_write
from npllm.io.checksums import file_sha256

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_FILENAME = "tinyshakespeare.txt"
CHUNK_BYTES = 1 << 16

SMS_SPAM_URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
SMS_SPAM_SHA256 = "1587ea43e58e82b14ff1f5425c88e17f8496bfcdb67a583dbff9eefaf9963ce3"  # see the docstring
SMS_SPAM_FILENAME = "sms-spam-collection.zip"


class DownloadError(NpllmError, RuntimeError):
    """A download failed or delivered something other than the expected bytes."""


def user_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder where npllm keeps files it can rebuild (downloads, token files), created if needed."""
    if cache_dir is None:
        cache_dir = os.environ.get("NPLLM_CACHE")
    if not cache_dir:
        xdg_cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        cache_dir = Path(xdg_cache_home) / "npllm"
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    return cache_dir


def fetch(url: str, sha256: str, filename: str, cache_dir: str | os.PathLike | None = None,
          timeout: float = 60.0) -> Path:
    """Return the cached ``filename`` if its hash is ``sha256``; otherwise download ``url`` into it.

    Raises ``DownloadError`` (one line, naming the URL) when the server cannot be reached
    or the bytes do not hash to ``sha256``; in both cases no file is left in the cache.
    """
    path = user_cache_dir(cache_dir) / filename
    if path.is_file() and file_sha256(path) == sha256:
        return path
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, atomic_write(path) as file:
            digest = hashlib.sha256()
            while chunk := response.read(CHUNK_BYTES):
                digest.update(chunk)
                file.write(chunk)
            if digest.hexdigest() != sha256:
                raise DownloadError(f"checksum mismatch for {url}: expected sha256 {sha256}, "
                                    f"got {digest.hexdigest()}; nothing was saved")
    except (urllib.error.URLError, OSError) as error:
        raise DownloadError(f"could not download {url}: {error}") from error
    return path


def shakespeare_path(cache_dir: str | os.PathLike | None = None, url: str = SHAKESPEARE_URL) -> Path:
    """The local path of Tiny Shakespeare, downloading it on first use."""
    return fetch(url, SHAKESPEARE_SHA256, SHAKESPEARE_FILENAME, cache_dir)


def sms_spam_zip(cache_dir: str | os.PathLike | None = None, url: str | None = None) -> Path:
    """The local path of the SMS Spam Collection's zip (``SMSSpamCollection`` inside), downloading it on first use.

    ``url`` defaults to ``SMS_SPAM_URL``; the bytes must hash to ``SMS_SPAM_SHA256``.
    """
    return fetch(url or SMS_SPAM_URL, SMS_SPAM_SHA256, SMS_SPAM_FILENAME, cache_dir)
