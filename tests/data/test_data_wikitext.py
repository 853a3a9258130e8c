"""Wikipedia dumps: the streaming reader keeps articles only, and the cleaner leaves the text a reader sees."""

import bz2

import pytest

from npllm.data.streams import DocumentSource, StreamError
from npllm.data.wikitext import DumpError, clean_wikitext


@pytest.mark.parametrize("markup, plain", [
    ("a {{cite|x={{nested|y}}|z}} b", "a  b"),
    ("'''bold''' and ''italic'' and '''''both'''''", "bold and italic and both"),
    ("[[Alan Turing]] met [[Alonzo Church|Church]]", "Alan Turing met Church"),
    ("fact.<ref name=\"a\">{{cite book|title=T}}</ref> More.<ref name=\"a\"/>", "fact. More."),
    ("== History ==\ntext\n=== Early ===\nmore", "History\ntext\nEarly\nmore"),
    ("before\n{| class=\"wikitable\"\n|-\n| a || b\n|}\nafter", "before\n\nafter"),
    ("x<!-- hidden -->y", "xy"),
    ("[[File:A.jpg|thumb|A [[cat]] on a mat]] text", "text"),
    ("text\n[[Category:Cats]]\n[[fr:Chat]]", "text"),
    ("see [https://example.org the site] and [https://example.org]", "see the site and"),
    ("* one\n# two\n: three", "one\ntwo\nthree"),
    ("100&nbsp;km &ndash; far", "100 km – far"),
    ("__NOTOC__\nword <small>small</small> <math>x^2</math>", "word small"),
    ("{| outer\n| {| inner\n| x\n|}\n|}\nleft", "left"),
])
def test_the_cleaner_turns_each_construct_into_plain_text(markup, plain):
    assert clean_wikitext(markup) == plain


def test_a_dump_yields_articles_only_cleaned_without_redirects_or_talk_pages(wiki_dump):
    documents = [piece.plain_text() for piece in DocumentSource(wiki_dump).pieces()]
    assert len(documents) == 2  # Tortoise and Lighthouse; not the redirect, not the talk page
    tortoise, lighthouse = documents
    assert tortoise.startswith("Tortoises are reptiles of the family Testudinidae.\nThey live on land, unlike most")
    assert "Description\nA tortoise's shell is hard. Many live over 100 years." in tortoise
    for markup in ("{{", "}}", "[[", "<ref", "|-", "wikitable", "Category", "Galapagos", "'''", "Landschildkröten"):
        assert markup not in tortoise
    assert "talk page" not in tortoise + lighthouse
    assert lighthouse == ("A lighthouse is a tower that emits light.\n\nHistory\n"
                          "The Pharos of Alexandria was built in the 3rd century BC.")


def test_a_file_that_is_not_a_mediawiki_dump_is_refused(tmp_path):
    path = tmp_path / "other.xml"
    path.write_text("<rss><channel><title>news</title></channel></rss>")
    with pytest.raises(DumpError, match=r"other.xml is not a MediaWiki XML dump \(its root element is <rss>"):
        list(DocumentSource(path).pieces())


def test_a_dump_cut_short_is_refused_naming_the_line(tmp_path, wiki_dump):
    cut = tmp_path / "cut.xml"
    cut.write_bytes(bz2.decompress(wiki_dump.read_bytes())[:900])
    with pytest.raises(DumpError, match=r"cut.xml: not well-formed XML at line \d+, column \d+"):
        list(DocumentSource(cut).pieces())


def test_a_truncated_bz2_is_refused_in_one_line(tmp_path, wiki_dump):
    cut = tmp_path / "cut.xml.bz2"
    cut.write_bytes(wiki_dump.read_bytes()[:-40])
    with pytest.raises(StreamError, match=r"cut.xml.bz2: the compressed file is truncated"):
        list(DocumentSource(cut).pieces())
