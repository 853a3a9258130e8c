"""Fixtures shared by the training, generation, CLI and example tests: a tiny corpus and a private cache."""

import pytest

# Short sentences repeated: a tokenizer of ~300 ids and a 16-wide GPT learn it within a hundred steps.
TINY_TEXT = (
    "the cat sat on the mat. the dog sat on the log. a cat and a dog met on the mat.\n"
    "the bird sang in the tree. the fish swam in the sea. a bird and a fish never met.\n"
) * 40


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """Point NPLLM_CACHE at a fresh folder, so token files never touch the user's cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("NPLLM_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def tiny_text():
    return TINY_TEXT


@pytest.fixture
def tiny_corpus(tmp_path, isolated_cache, tiny_text):
    """A small repetitive text file to train on (with the cache isolated)."""
    path = tmp_path / "tiny.txt"
    path.write_text(tiny_text, encoding="utf-8")
    return path


# A few pages of a MediaWiki dump, as Wikipedia writes them: two articles with templates (nested), a table,
# references, links, a file with a captioned link, categories; a redirect; a talk page (namespace 1).
WIKI_PAGES = [
    ("Tortoise", 0, None, """{{Short description|Reptile of the family Testudinidae}}
{{Infobox animal|name=Tortoise|image=Tortoise.jpg|caption={{lang|la|Testudinidae}} in a garden}}
'''Tortoises''' are [[reptile]]s of the family ''[[Testudinidae]]''.<ref name="book">{{cite book|title=Turtles|year=1990}}</ref>
They live on [[land (geography)|land]], unlike most [[turtle]]s.<ref>Ernst, p.&nbsp;12.</ref>

== Description ==
[[File:Tortoise shell.jpg|thumb|The shell of a [[Galapagos tortoise]]]]
A tortoise's shell is hard.<!-- a hidden note --> Many live over 100&nbsp;years.<ref name="book"/>

{| class="wikitable"
|-
! Species !! Lifespan
|-
| Aldabra || 150 {{convert|150|year}}
|}

=== Diet ===
* Grasses
* Fruit

See the [https://example.org/tortoises tortoise society].

[[Category:Turtles]]
[[de:Landschildkröten]]
"""),
    ("Tortoises", 0, "Tortoise", "#REDIRECT [[Tortoise]]"),
    ("Talk:Tortoise", 1, None, "This talk page should never reach a corpus. ~~~~"),
    ("Lighthouse", 0, None, """{{Use dmy dates|date=May 2020}}
A '''lighthouse''' is a [[tower]] that emits light.<ref>{{cite web|url=https://example.org|title=Lights}}</ref>

==History==
The [[Pharos of Alexandria]] was built in the 3rd century BC.

{{Reflist}}
"""),
]


def write_wiki_dump(path, pages=WIKI_PAGES):
    """A MediaWiki XML dump of ``pages`` (title, namespace, redirect target, wikitext) at ``path`` (.xml or .xml.bz2)."""
    import bz2
    from xml.sax.saxutils import escape, quoteattr

    parts = ['<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" version="0.11" xml:lang="en">',
             "  <siteinfo><sitename>Wikipedia</sitename></siteinfo>"]
    for number, (title, namespace, redirect, text) in enumerate(pages, start=1):
        parts += ["  <page>", f"    <title>{escape(title)}</title>", f"    <ns>{namespace}</ns>", f"    <id>{number}</id>"]
        if redirect:
            parts.append(f"    <redirect title={quoteattr(redirect)} />")
        parts += ["    <revision>", f"      <id>{100 + number}</id>",
                  f'      <text bytes="{len(text)}" xml:space="preserve">{escape(text)}</text>', "    </revision>",
                  "  </page>"]
    parts.append("</mediawiki>\n")
    data = "\n".join(parts).encode("utf-8")
    path.write_bytes(bz2.compress(data) if str(path).endswith(".bz2") else data)
    return path


@pytest.fixture
def wiki_dump(tmp_path):
    """A small MediaWiki dump, bzip2-compressed as Wikipedia publishes it."""
    return write_wiki_dump(tmp_path / "tinywiki-pages-articles.xml.bz2")
