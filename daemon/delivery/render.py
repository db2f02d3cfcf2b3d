"""Rendering: the expensive work once per article version and template, cheap per recipient.

``render_email`` turns articles (Markdown, HTML or a clipped page) into the channel's
table-based template, inlines the CSS with premailer (network fetches off; external
stylesheets are dropped, never fetched), makes the plain-text part, checks size and
client compatibility, and compiles both parts into ``Compiled`` pieces: literal text
with named slots. ``Compiled.fill`` then only joins strings with the recipient's
greeting and signed links — no parsing, no CSS.

Slots are ``@@KULOO:name@@``: ``greeting``, ``unsubscribe``, ``frequency`` and
``link0``, ``link1``, … (the article's links, replaced by signed click links per
recipient). Pure apart from premailer and markdown (CPU-bound: callers run it in a
thread and cache the result, see ``service``).
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

import lxml.html
import markdown
import nh3
from lxml import etree

SIZE_WARNING_BYTES = 100 * 1024  # Gmail clips at about 102 KB and hides the footer
SLOT = re.compile(r"@@KULOO:([a-z0-9_]+)@@")
MUST_WORK = (
    "gmail.",
    "apple-mail.",
    "outlook.outlook-com",
    "yahoo.",
)  # the major clients we promise
OUTLOOK_WINDOWS = "outlook.windows"


@dataclass(frozen=True)
class Piece:
    """An article as the renderer needs it (one version)."""

    id: int
    version: int
    title: str
    format: str  # markdown | html | clip
    body: str
    url: str = ""
    summary: str = ""  # the preheader; empty = the first sentence of the text


@dataclass(frozen=True)
class Compiled:
    """A text split into literal chunks and slot names: ``chunks[0] slot[0] chunks[1] …``."""

    chunks: tuple[str, ...]
    slots: tuple[str, ...]

    @classmethod
    def of(cls, text: str) -> Compiled:
        parts = SLOT.split(text)
        return cls(tuple(parts[0::2]), tuple(parts[1::2]))

    def fill(self, values: dict[str, str]) -> str:
        out = [self.chunks[0]]
        for slot, chunk in zip(self.slots, self.chunks[1:], strict=True):
            out.append(values[slot])
            out.append(chunk)
        return "".join(out)


@dataclass(frozen=True)
class Rendered:
    subject: str
    html: Compiled
    text: Compiled
    links: tuple[str, ...]  # link{n} -> the target it stands for
    size_bytes: int
    warnings: tuple[str, ...]
    preheader: str = ""
    full: int = 0  # articles carried in full (a digest too big carries the rest as titles)


@cache
def template_text() -> str:
    return resources.files("kuloo_daemon.delivery").joinpath("templates/email.html").read_text()


def template_version() -> str:
    return hashlib.sha256(template_text().encode()).hexdigest()[:12]


_MD = markdown.Markdown(extensions=["tables", "fenced_code", "sane_lists"], output_format="html")


def body_html(piece: Piece) -> str:
    """The article's body as an HTML fragment (without the template)."""
    if piece.format == "markdown":
        _MD.reset()
        return _MD.convert(piece.body)
    doc = lxml.html.document_fromstring(piece.body or "<p></p>")
    body = doc.find("body")
    root = body if body is not None else doc
    return (root.text or "") + "".join(
        etree.tostring(child, encoding="unicode", method="html") for child in root
    )


def _take_links(fragment: str, links: list[str]) -> str:
    """Replace each http(s) link of the article by a slot; drop stylesheets, scripts, forms."""
    root = lxml.html.fragment_fromstring(fragment, create_parent="div")
    for bad in root.xpath("//link|//script|//form|//iframe|//object|//embed"):
        bad.drop_tree()
    for a in root.iter("a"):
        href = (a.get("href") or "").strip()
        if href.startswith(("http://", "https://")):
            a.set("href", f"@@KULOO:link{len(links)}@@")
            links.append(href)
    return (
        "".join(etree.tostring(c, encoding="unicode", method="html") for c in root)
        if len(root)
        else (root.text or "")
    )


# The article's HTML passes nh3 (never the template): no script, no on* attributes, no
# javascript: or data: links, no <style> (it would restyle the footer), and inline styles only
# through this allow-list (no width, position or float: they break the fluid layout).
ARTICLE_TAGS = (set(nh3.ALLOWED_TAGS) - {"area", "map", "details", "summary"}) | {"font"}
ARTICLE_ATTRIBUTES = {
    "*": {"style", "title", "dir", "lang", "align"},
    "a": {"href"},
    "img": {"src", "alt", "width", "height"},
    "td": {"colspan", "rowspan", "valign"},
    "th": {"colspan", "rowspan", "valign", "scope"},
    "ol": {"start", "type"},
    "table": {"cellpadding", "cellspacing", "border"},
    "font": {"color", "face", "size"},
}
STYLE_PROPERTIES = {
    "color",
    "background-color",
    "font-family",
    "font-size",
    "font-style",
    "font-weight",
    "line-height",
    "text-align",
    "text-decoration",
    "text-transform",
    "letter-spacing",
    "vertical-align",
    "white-space",
    "word-break",
    "overflow-wrap",
    "margin",
    "margin-top",
    "margin-bottom",
    "padding",
    "padding-top",
    "padding-bottom",
    "padding-left",
    "padding-right",
    "border",
    "border-top",
    "border-bottom",
    "border-left",
    "border-right",
    "border-color",
    "border-style",
    "border-collapse",
    "border-radius",
    "list-style-type",
}
STYLE_DROPPED = (
    "the article's own <style> was dropped: it would restyle the whole email, "
    "the footer included (use inline style attributes)"
)
IMAGE_WIDTH = 552  # the sheet's 600 px less its 24 px padding each side


def sanitise(fragment: str) -> tuple[str, list[str]]:
    """An article's HTML fragment made safe to send and unable to restyle the template."""
    warnings = [STYLE_DROPPED] if re.search(r"<style[\s>]", fragment, re.I) else []
    clean = nh3.clean(
        fragment,
        tags=ARTICLE_TAGS,
        clean_content_tags={"script", "style"},
        attributes=ARTICLE_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        filter_style_properties=STYLE_PROPERTIES,
        link_rel=None,
    )
    root = lxml.html.fragment_fromstring(clean or "<p></p>", create_parent="div")
    for img in root.iter("img"):
        if img.get("alt") is None:
            img.set("alt", "")
        width = (img.get("width") or "").strip()
        if not width.isdigit() or not 0 < int(width) <= IMAGE_WIDTH:
            img.set("width", str(IMAGE_WIDTH))
        img.attrib.pop("height", None)  # the ratio stays with height:auto
        img.set(
            "style",
            ";".join(
                filter(
                    None, [(img.get("style") or "").strip(" ;"), "max-width:100%", "height:auto"]
                )
            ),
        )
    for table in list(root.iter("table")):
        parent = table.getparent()
        if parent is not None and not (parent.tag == "div" and parent.get("class") == "wide"):
            wrapper = lxml.html.Element(
                "div", {"class": "wide", "style": "max-width:100%;overflow-x:auto"}
            )
            parent.replace(table, wrapper)
            wrapper.append(table)
    inner = (root.text or "") + "".join(
        etree.tostring(c, encoding="unicode", method="html") for c in root
    )
    return inner, warnings


def _articles_html(pieces: list[Piece], links: list[str], full: int, warnings: list[str]) -> str:
    parts = []
    for n, piece in enumerate(pieces):
        if n >= full:
            continue
        fragment, problems = sanitise(body_html(piece))
        if re.search(r"<style[\s>]", piece.body, re.I):  # a page's <style> sits in its head
            problems = [STYLE_DROPPED]
        warnings.extend(problems)
        parts.append(f"<h1>{html.escape(piece.title)}</h1>\n{_take_links(fragment, links)}")
        if piece.format == "clip" and piece.url:
            parts.append(f'<p><a href="@@KULOO:link{len(links)}@@">Read the original page</a></p>')
            links.append(piece.url)
    rest = pieces[full:]
    if rest:
        items = []
        for piece in rest:
            title = html.escape(piece.title)
            if piece.url:
                items.append(f'<li><a href="@@KULOO:link{len(links)}@@">{title}</a></li>')
                links.append(piece.url)
            else:
                items.append(f"<li>{title}</li>")
        parts.append("<h2>Also new</h2>\n<ul>\n" + "\n".join(items) + "\n</ul>")
    return "\n<hr>\n".join(parts)


def inline_css(document: str) -> str:
    from premailer import Premailer

    # Classes and !important stay, so the media queries kept in <style> (the leftovers
    # premailer cannot inline) still apply; width/height are never made attributes (an
    # attribute width="100%" is invalid and fixes the layout).
    return Premailer(
        document,
        allow_network=False,
        allow_loading_external_files=False,
        keep_style_tags=False,
        remove_classes=False,
        strip_important=False,
        disable_validation=True,
        disable_basic_attributes=["width", "height"],
        disable_link_rewrites=True,
        cssutils_logging_level=logging.CRITICAL,
    ).transform()


PREHEADER_CHARS = 140


def preheader_of(piece: Piece, text: str) -> str:
    """The inbox preview: the article's ``summary``, else its first sentence (<= 140)."""
    if piece.summary.strip():
        chosen = re.sub(r"\s+", " ", piece.summary).strip()
    else:
        flat = re.sub(r"\s+", " ", text).strip()
        match = re.match(r"(.+?[.!?])(\s|$)", flat)
        chosen = match.group(1) if match else flat
    if len(chosen) > PREHEADER_CHARS:
        chosen = chosen[: PREHEADER_CHARS - 1].rsplit(" ", 1)[0].rstrip(",;:") + "…"
    return chosen


def subject_for(pieces: list[Piece], channel: str) -> str:
    if len(pieces) == 1:
        return pieces[0].title
    more = len(pieces) - 1
    return f"{pieces[0].title} — and {more} more from {channel}"


_BLOCKS = {
    "p",
    "div",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "li",
    "tr",
    "pre",
    "blockquote",
    "table",
    "hr",
    "br",
    "ul",
    "ol",
}


def html_to_text(document: str) -> str:
    """A readable plain-text part: block breaks, links as ``text <url>``, no markup."""
    root = lxml.html.document_fromstring(document)
    for bad in root.xpath("//head|//style|//script|//div[@class='preheader']"):
        bad.drop_tree()
    out: list[str] = []

    def flat(text: str, pre: bool) -> str:
        return text if pre else re.sub(r"\s+", " ", text)

    def walk(el, pre: bool = False) -> None:
        tag = el.tag if isinstance(el.tag, str) else ""
        pre = pre or tag == "pre"
        if tag in _BLOCKS:
            out.append("\n\n" if tag not in ("li", "tr", "br") else "\n")
        if tag == "li":
            out.append("- ")
        if el.text:
            out.append(flat(el.text, pre))
        for child in el:
            walk(child, pre)
            if child.tail:
                out.append(flat(child.tail, pre))
        if tag == "a" and el.get("href") and not el.get("href").startswith("#"):
            out.append(f" <{el.get('href')}>")
        if tag in ("td", "th"):
            out.append("  ")

    walk(root)
    text = "".join(out)
    text = re.sub(r"[ \t]*\n[ \t]*", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def render_email(
    pieces: list[Piece],
    *,
    channel: str,
    postal_address: str,
    subject: str | None = None,
    full: int | None = None,
) -> Rendered:
    """The whole email for these articles, once; recipients only fill in the slots.

    ``full``: how many articles are carried in full (the rest as titles); default all."""
    links: list[str] = []
    warnings: list[str] = []
    full = len(pieces) if full is None else max(1, min(full, len(pieces)))
    subject = subject or subject_for(pieces, channel)
    first_text = ""
    if pieces:
        fragment, _ = sanitise(body_html(pieces[0]))
        first_text = html_to_text(f"<html><body>{fragment}</body></html>")
    preheader = preheader_of(pieces[0], first_text) if pieces else ""
    postal = "<br>".join(html.escape(line) for line in postal_address.splitlines() if line.strip())
    articles = _articles_html(pieces, links, full, warnings)
    document = (
        template_text()
        .replace("@@SUBJECT@@", html.escape(subject))
        .replace("@@PREHEADER@@", html.escape(preheader))
        .replace("@@CHANNEL@@", html.escape(channel))
        .replace("@@POSTAL@@", postal)
        .replace("@@ARTICLES@@", articles)
    )
    inlined = inline_css(document)
    text = html_to_text(inlined)
    size = len(inlined.encode())
    if size > SIZE_WARNING_BYTES:
        warnings.append(
            f"the HTML is {size // 1024} KB: Gmail clips messages over 102 KB and hides the footer "
            "(with the unsubscribe link)"
        )
    outlook = unsupported(features_used(inlined) - template_features(), OUTLOOK_WINDOWS)
    if outlook:
        warnings.append("Outlook for Windows does not support: " + ", ".join(outlook))
    return Rendered(
        subject,
        Compiled.of(inlined),
        Compiled.of(text),
        tuple(links),
        size,
        tuple(dict.fromkeys(warnings)),
        preheader,
        full,
    )


# --------------------------------------------------------------------------- client compatibility


@cache
def template_features() -> frozenset[str]:
    """What the template itself uses: chosen with its fallbacks (the hidden preheader, the
    fluid sheet), so only what an article adds is warned about."""
    document = (
        template_text()
        .replace("@@ARTICLES@@", "<p>x</p>")
        .replace("@@PREHEADER@@", "x")
        .replace("@@SUBJECT@@", "x")
        .replace("@@CHANNEL@@", "x")
        .replace("@@POSTAL@@", "x")
    )
    return frozenset(features_used(inline_css(document)))


@cache
def caniemail() -> dict:
    """caniemail.com's support data (snapshot of the npm package, scripts/caniemail_snapshot.py)."""
    return json.loads(
        resources.files("kuloo_daemon.delivery").joinpath("caniemail.json").read_text()
    )


_ELEMENT_SLUGS = {
    "table": "html-table",
    "tr": "html-table",
    "td": "html-table",
    "th": "html-table",
    "ul": "html-lists",
    "ol": "html-lists",
    "li": "html-lists",
    "dl": "html-lists",
    **{f"h{i}": "html-h1-h6" for i in range(1, 7)},
    "s": "html-strike",
    "strike": "html-strike",
    "style": "html-style",
    "link": "html-link",
    "svg": "html-svg",
    "form": "html-form",
    "input": "html-input-text",
    "video": "html-video",
    "audio": "html-audio",
    "picture": "html-picture",
    "base": "html-base",
    "object": "html-object",
    "button": "html-button-submit",
    "select": "html-select",
    "textarea": "html-textarea",
    "marquee": "html-marquee",
    "dialog": "html-dialog",
    "progress": "html-progress",
    "meter": "html-meter",
    "article": "html-semantics",
    "section": "html-semantics",
    "header": "html-semantics",
    "footer": "html-semantics",
    "nav": "html-semantics",
    "aside": "html-semantics",
    "main": "html-semantics",
}
_ATTRIBUTE_SLUGS = {
    "align": "html-align",
    "valign": "html-valign",
    "cellpadding": "html-cellpadding",
    "cellspacing": "html-cellspacing",
    "width": "html-width",
    "height": "html-height",
    "role": "html-role",
    "lang": "html-lang",
    "dir": "html-dir",
    "srcset": "html-srcset",
    "background": "html-background",
    "hidden": "html-hidden",
    "loading": "html-loading-attribute",
    "target": "html-target",
}
_PROPERTY_PREFIXES = (
    ("border-radius", "css-border-radius"),
    ("border-collapse", "css-border-collapse"),
    ("border-spacing", "css-border-spacing"),
    ("border", "css-border"),
    ("margin", "css-margin"),
    ("padding", "css-padding"),
    ("font-family", "css-font"),
)


def features_used(document: str) -> set[str]:
    """The caniemail features (slugs) a rendered HTML document uses."""
    known = caniemail()["features"]
    found: set[str] = set()
    root = lxml.html.document_fromstring(document)
    for hidden in root.xpath("//div[@class='preheader']"):
        # Hidden by layered fallbacks (display:none, then max-height:0/overflow, then 1 px
        # transparent text): a client that ignores one honours the next.
        hidden.drop_tree()
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        tag = el.tag.lower()
        for slug in (_ELEMENT_SLUGS.get(tag), f"html-{tag}"):
            if slug is not None and slug in known:
                found.add(slug)
        for attr in el.attrib:
            slug = _ATTRIBUTE_SLUGS.get(attr.lower()) or (
                f"html-{attr.lower()}" if attr.startswith("aria-") else None
            )
            if slug is not None and slug in known:
                found.add(slug)
        if tag == "a" and (el.get("href") or "").startswith("mailto:"):
            found.add("html-mailto-links")
        if tag == "img":
            src = (el.get("src") or "").lower()
            for ext, slug in (
                (".png", "image-png"),
                (".jpg", "image-jpg"),
                (".jpeg", "image-jpg"),
                (".gif", "image-gif"),
                (".webp", "image-webp"),
                (".svg", "image-svg"),
                (".avif", "image-avif"),
            ):
                if src.split("?")[0].endswith(ext):
                    found.add(slug)
            if src.startswith("data:"):
                found.add("image-base64")
        for declaration in (el.get("style") or "").split(";"):
            if ":" not in declaration:
                continue
            prop, value = (s.strip().lower() for s in declaration.split(":", 1))
            slug = next((s for p, s in _PROPERTY_PREFIXES if prop.startswith(p)), f"css-{prop}")
            if slug in known:
                found.add(slug)
            if prop == "display" and f"css-display-{value}" in known:
                found.add(f"css-display-{value}")
            if "!important" in value:
                found.add("css-important")
            for unit in re.findall(r"\d(px|em|rem|%|pt|vh|vw)\b", value):
                name = {"%": "percent"}.get(unit, unit)
                if f"css-unit-{name}" in known:
                    found.add(f"css-unit-{name}")
    return found


def unsupported(features: set[str], *client_prefixes: str) -> list[str]:
    """Features that a client (platform prefix, e.g. ``gmail.``) does not support at all."""
    known = caniemail()["features"]
    out = []
    for slug in sorted(features):
        for platform, value in known[slug]["support"].items():
            if platform.startswith(client_prefixes) and value == "n":
                out.append(f"{known[slug]['title']} ({platform})")
    return out
