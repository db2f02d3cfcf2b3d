"""Article files: YAML front matter + Markdown or HTML body, parsed into ``Document``s (pure).

Front matter keys (docs/delivery.md, "Articles"): ``id`` (identity across
re-imports; default: the path relative to ``[articles] root``), ``title``, ``tags``
(sequential tags; none = a newsletter article), ``published_at`` (date or datetime; a
date is midnight UTC), ``delay_seconds`` (the wait after the previous sequence email),
``format`` (``markdown``, ``html`` or ``clip``; default from the extension) and ``url``
(for ``clip``). A problem is returned as text, never raised, so one bad file never stops
the others.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time
from typing import Any

import frontmatter
import yaml

FORMATS = ("markdown", "html", "clip")
EXTENSIONS = {".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html"}
KNOWN_KEYS = {"id", "title", "tags", "published_at", "delay_seconds", "format", "url", "summary"}
RENAMED = {"published": "published_at", "delay": "delay_seconds"}
MAX_DELAY_SECONDS = 10 * 365 * 86400


@dataclass(frozen=True)
class Document:
    key: str
    source_file: str
    title: str
    format: str
    body: str
    url: str
    tags: tuple[str, ...]
    published_at: datetime | None
    delay_seconds: int
    summary: str = ""  # the inbox preview (preheader); empty = the text's first sentence

    @property
    def content_hash(self) -> str:
        """What decides "changed": every field that shows in the email or the schedule."""
        data = [
            self.title,
            self.format,
            self.body,
            self.url,
            list(self.tags),
            self.published_at.isoformat() if self.published_at else None,
            self.delay_seconds,
        ]
        if self.summary:  # only then: articles without one keep their hash (no new version)
            data.append(self.summary)
        return hashlib.sha256(json.dumps(data, ensure_ascii=False).encode()).hexdigest()

    def with_body(self, body: str, title: str | None = None) -> Document:
        return replace(self, body=body, title=title if title and not self.title else self.title)


def _instant(value: object) -> datetime:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(0, 0), tzinfo=UTC)
    if isinstance(value, str):
        text = value.strip().replace("Z", "+00:00")
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"published_at: {value!r} is not a date or an ISO 8601 time") from None
        return _instant(parsed)
    raise ValueError(f"published_at: {value!r} is not a date or an ISO 8601 time")


def parse(relative_path: str, text: str) -> Document | str:
    """The document in ``text`` (the file at ``relative_path``), or the problem with it."""
    suffix = "." + relative_path.rsplit(".", 1)[-1].lower() if "." in relative_path else ""
    try:
        post = frontmatter.loads(text)
    except (yaml.YAMLError, ValueError) as exc:
        return f"front matter is not valid YAML: {str(exc).splitlines()[0]}"
    meta: dict[str, Any] = post.metadata  # front matter: checked field by field below
    if not isinstance(meta, dict):
        return "front matter must be a mapping of keys to values"
    problems = []
    for old, new in RENAMED.items():
        if old in meta:
            problems.append(f"'{old}' is written '{new}'")
    unknown = sorted(set(map(str, meta)) - KNOWN_KEYS - set(RENAMED))
    if unknown:
        problems.append(f"unknown front-matter keys: {', '.join(unknown)}")
    key = meta.get("id", relative_path)
    if (
        not isinstance(key, str | int)
        or isinstance(key, bool)
        or not str(key).strip()
        or len(str(key)) > 500
    ):
        problems.append("'id' must be a non-empty string of at most 500 characters")
    title = meta.get("title", "")
    if not isinstance(title, str) or len(title) > 500:
        problems.append("'title' must be a string of at most 500 characters")
    fmt = meta.get("format", EXTENSIONS.get(suffix))
    if fmt not in FORMATS:
        problems.append(f"'format' must be one of {', '.join(FORMATS)}")
    tags = meta.get("tags") or []
    if isinstance(tags, str):
        tags = [tags]
    if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() for t in tags):
        problems.append("'tags' must be a list of tag names")
        tags = []
    published_at = None
    if meta.get("published_at") is not None:
        try:
            published_at = _instant(meta["published_at"])
        except ValueError as exc:
            problems.append(str(exc))
    delay = meta.get("delay_seconds", 0)
    if not isinstance(delay, int) or isinstance(delay, bool) or not 0 <= delay <= MAX_DELAY_SECONDS:
        problems.append(
            f"'delay_seconds' must be a whole number of seconds from 0 to {MAX_DELAY_SECONDS}"
        )
    summary = meta.get("summary", "")
    if not isinstance(summary, str) or len(summary) > 500:
        problems.append("'summary' must be a string of at most 500 characters")
        summary = ""
    url = meta.get("url", "")
    if fmt == "clip":
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            problems.append("a clip needs 'url': the http(s) address of the page")
    elif url:
        problems.append("'url' is only for format: clip")
    if published_at is None and "published_at" not in meta:
        problems.append("'published_at' is missing (it orders sequences and places digests)")
    if fmt != "clip" and not post.content.strip():
        problems.append("the article has no body")
    if problems:
        return "; ".join(problems)
    if not title and fmt != "clip":
        return "'title' is missing (it is the email's subject)"
    return Document(
        key=str(key).strip(),
        source_file=relative_path,
        title=title.strip(),
        format=str(fmt),
        body=post.content,
        url=url if fmt == "clip" else "",
        tags=tuple(dict.fromkeys(t.strip() for t in tags)),
        published_at=published_at,
        delay_seconds=delay,
        summary=" ".join(summary.split()),
    )
