"""Data sources: named corpora, files and folders, and the one-line errors for bad --data values."""

import pytest

from npllm.data.sources import DataSourceError, load_corpus


def write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")


def test_a_folder_is_read_recursively_in_sorted_order_by_extension(tmp_path):
    write(tmp_path / "b.txt", "bee")
    write(tmp_path / "a" / "z.md", "zed")
    write(tmp_path / "a" / "c.PY", "sea")
    write(tmp_path / "image.png", b"\x89PNG")
    write(tmp_path / ".git" / "notes.txt", "hidden")
    write(tmp_path / "latin1.txt", "caf\xe9".encode("latin-1"))
    corpus = load_corpus(tmp_path)
    assert corpus.text == "sea\n\nzed\n\nbee"
    assert corpus.files_skipped == 1
    assert corpus.description == f"{tmp_path}: 3 files (1 skipped: not UTF-8)"
    assert load_corpus(tmp_path, extensions=["md"]).text == "zed"


def test_a_single_file(tmp_path):
    write(tmp_path / "t.txt", "To be, or not to be")
    assert load_corpus(str(tmp_path / "t.txt")).text == "To be, or not to be"


def test_the_embedded_documentation_corpus():
    corpus = load_corpus("docs")
    assert len(corpus.text) > 100_000 and "docs" in corpus.description


@pytest.mark.parametrize("make, message", [
    (lambda root: root / "missing.txt", "no such file or folder: {root}/missing.txt"),
    (lambda root: root, "no readable .txt .md .py .rst files in {root}"),
    (lambda root: write(root / "blank.txt", "  \n\n") or root / "blank.txt", "the corpus {root}/blank.txt is empty"),
    (lambda root: write(root / "bin.txt", b"\xff\xfe\x00") or root / "bin.txt", "cannot read {root}/bin.txt as UTF-8"),
    (lambda root: write(root / "x.txt", b"\xff") or root, "no readable .txt .md .py .rst files in {root} (1 skipped"),
])
def test_bad_sources_give_one_line_naming_the_path(tmp_path, make, message):
    with pytest.raises(DataSourceError) as error:
        load_corpus(make(tmp_path))
    assert message.format(root=tmp_path) in str(error.value)
    assert "\n" not in str(error.value)
