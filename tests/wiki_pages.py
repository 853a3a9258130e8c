"""A tiny MediaWiki dump for the tests of streamed corpora (a module, so tests in any folder can import it)."""

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
