"""Wikipedia as plain text: a MediaWiki XML dump read as a stream, and its markup cleaned away.

Wikipedia publishes its articles as one XML file (``enwiki-latest-pages-articles.xml.bz2``,
about 20 GB of text once unpacked).  Its shape::

    <mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/">
      <siteinfo> ... </siteinfo>
      <page>
        <title>Alan Turing</title>
        <ns>0</ns>                          0: an article; 1: its talk page; 6: a file; 14: a category ...
        <redirect title="..." />            only on a page that merely points to another
        <revision><text>wiki markup</text></revision>
      </page>
      ...

``iter_articles`` reads it with ``xml.etree.ElementTree.iterparse``, which hands
over each element as soon as its end tag is parsed.  Each finished ``<page>`` is
read and then cleared, and cleared from the root too, so memory holds one page at
a time however large the dump.  Only namespace 0 (the articles) is kept; redirects
are skipped.  A file whose root element is not MediaWiki's ``<mediawiki>`` is
refused, as is one that ends mid-element.

``clean_wikitext`` turns an article's markup into the plain text a reader sees,
in this order (each step assumes the ones before it):

1. comments ``<!-- ... -->`` are removed;
2. references ``<ref>...</ref>`` and ``<ref name="x"/>``, and the blocks that are not
   prose (``<math>``, ``<gallery>``, ``<timeline>``, ...) are removed with their content;
   any other tag (``<small>``, ``<sup>``, ``<span ...>``) is removed, its content kept;
3. templates ``{{...}}`` are removed, innermost first, so nested ones go too
   (infoboxes, citations, ``{{lang|fr|...}}``: a template's output is not in the dump);
4. tables ``{| ... |}`` are removed, innermost first;
5. links: ``[[File:...]]``, ``[[Image:...]]``, ``[[Category:...]]`` and
   interlanguage links are removed; ``[[target|text]]`` becomes ``text`` and
   ``[[target]]`` becomes ``target``, innermost first (so a link inside a file's
   caption does not keep the file);  ``[http://x text]`` becomes ``text``;
6. headings ``== History ==`` become the line ``History``;
7. bold and italic quotes (``'''``, ``''``), list markers at a line's start, rules
   (``----``) and magic words (``__TOC__``) are removed;
8. character entities (``&nbsp;``, ``&ndash;``) are decoded, and runs of blank
   lines and trailing spaces tidied.

Left out on purpose: expanding templates (that needs the whole wiki and a Lua
interpreter), and keeping tables as text.
"""

import html
import re
from xml.etree import ElementTree
from collections.abc import Iterator
from typing import IO

from npllm.errors import NpllmError

MEDIAWIKI_NAMESPACE = "http://www.mediawiki.org/xml/export-"  # + the version, e.g. 0.11/
ARTICLE_NAMESPACE = "0"


class DumpError(NpllmError, ValueError):
    """A file that is not a readable MediaWiki XML dump."""


def local_name(tag: str) -> str:
    """``{http://www.mediawiki.org/xml/export-0.11/}page`` -> ``page``."""
    return tag.rpartition("}")[2]


def iter_articles(file: IO[bytes], name: str) -> Iterator[str]:
    """The raw wiki markup of every article (namespace 0, no redirect) in a dump, one page in memory at a time."""
    events = ElementTree.iterparse(file, events=("start", "end"))
    try:
        _, root = next(events)
        if local_name(root.tag) != "mediawiki" or not root.tag.startswith("{" + MEDIAWIKI_NAMESPACE):
            raise DumpError(f"{name} is not a MediaWiki XML dump (its root element is <{root.tag}>, not <mediawiki>)")
        for event, element in events:
            if event == "end" and local_name(element.tag) == "page":
                text = article_text(element)
                root.clear()  # the finished page and everything before it: constant memory
                if text is not None:
                    yield text
    except ElementTree.ParseError as error:
        line, column = error.position
        raise DumpError(f"{name}: not well-formed XML at line {line}, column {column}"
                        " (a truncated or damaged dump?)") from None
    except StopIteration:
        raise DumpError(f"{name} is empty, not a MediaWiki XML dump") from None


def article_text(page: ElementTree.Element) -> str | None:
    """A ``<page>``'s wiki markup if it is an article (namespace 0) that is not a redirect, else None."""
    namespace, text, redirect = None, None, False
    for child in page.iter():
        kind = local_name(child.tag)
        if kind == "ns":
            namespace = (child.text or "").strip()
        elif kind == "redirect":
            redirect = True
        elif kind == "text":
            text = child.text or ""
    if namespace != ARTICLE_NAMESPACE or redirect or text is None:
        return None
    if text.lstrip()[:9].upper() == "#REDIRECT":  # an old dump marks redirects in the text only
        return None
    return text


# ---- the cleaner -----------------------------------------------------------

COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.DOTALL)
DROPPED_BLOCKS = ("ref", "math", "gallery", "timeline", "score", "syntaxhighlight", "source", "imagemap", "graph")
DROPPED_BLOCK = re.compile(rf"<({'|'.join(DROPPED_BLOCKS)})\b[^>]*?(?<!/)>.*?</\1\s*>", re.DOTALL | re.IGNORECASE)
SELF_CLOSED_REF = re.compile(r"<ref\b[^>]*/>", re.IGNORECASE)
ANY_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
INNERMOST_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
INNERMOST_TABLE = re.compile(r"\{\|(?:(?!\{\|).)*?\|\}", re.DOTALL)
INNERMOST_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
EXTERNAL_LINK = re.compile(r"\[(?:https?:|ftp:)?//[^\s\]]+(?: ([^\]]*))?\]")
HEADING = re.compile(r"^(={1,6})\s*(.*?)\s*\1\s*$", re.MULTILINE)
BOLD_ITALIC = re.compile(r"'{2,}")
LIST_MARKER = re.compile(r"^[*#:;]+\s*", re.MULTILINE)
RULE = re.compile(r"^-{4,}\s*$", re.MULTILINE)
MAGIC_WORD = re.compile(r"__[A-Z]+__")
TRAILING_SPACE = re.compile(r"[ \t]+$", re.MULTILINE)
BLANK_LINES = re.compile(r"\n{3,}")
# Links to these namespaces are not prose: a file with its caption, a category, an interlanguage link (xx: or xx-yy:).
DROPPED_LINK = re.compile(r"\s*(?:file|image|media|category|[a-z]{2,3}(?:-[a-z]+)?)\s*:", re.IGNORECASE)


def remove_innermost(pattern: re.Pattern, text: str, replacement="") -> str:
    """Apply ``pattern`` until nothing matches: a nested construct goes from the inside out."""
    while True:
        text, count = pattern.subn(replacement, text)
        if count == 0:
            return text


def link_text(match: re.Match) -> str:
    """What a reader sees of ``[[target|text]]``: the text (or the target), nothing for files and categories."""
    inside = match.group(1)
    if DROPPED_LINK.match(inside):
        return ""
    target, _, shown = inside.partition("|")
    return (shown or target.lstrip(":")).strip()


def clean_wikitext(text: str) -> str:
    """An article's wiki markup as plain text (the steps are in the module docstring)."""
    text = COMMENT.sub("", text)
    text = DROPPED_BLOCK.sub("", text)
    text = SELF_CLOSED_REF.sub("", text)
    text = ANY_TAG.sub("", text)
    text = remove_innermost(INNERMOST_TEMPLATE, text)
    text = remove_innermost(INNERMOST_TABLE, text)
    text = text.replace("{{", "").replace("}}", "")  # an unbalanced template left behind
    text = remove_innermost(INNERMOST_LINK, text, link_text)
    text = EXTERNAL_LINK.sub(lambda match: match.group(1) or "", text)
    text = HEADING.sub(r"\2", text)
    text = BOLD_ITALIC.sub("", text)
    text = LIST_MARKER.sub("", text)
    text = RULE.sub("", text)
    text = MAGIC_WORD.sub("", text)
    text = html.unescape(text).replace("\xa0", " ")
    text = TRAILING_SPACE.sub("", text)
    return BLANK_LINES.sub("\n\n", text).strip()
