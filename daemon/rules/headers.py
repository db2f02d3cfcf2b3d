"""The one gate every email header value passes (``delivery.message``, the signup
confirmation in ``links.server``).

A header value holding CR or LF ends the header and starts another (or the body): a name
``Eve\\r\\nBcc: x@evil.example`` became a real ``Bcc:``. No value Kuloo writes may hold
CR, LF or any other control character (Unicode ``Cc``: C0, DEL, C1; a tab too): such a
message is not built, and the caller marks it failed with ``HeaderError``'s text. Pure.
"""

from __future__ import annotations

import re

CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


class HeaderError(ValueError):
    """A header value with a control character: the message is refused, never sent."""


def header_value(field: str, value: str) -> str:
    """``value`` as it may stand in the ``field`` header; ``HeaderError`` if it holds CR,
    LF or another control character (folding is the encoder's job, never the value's)."""
    bad = CONTROL.search(value)
    if bad is not None:
        raise HeaderError(
            f"not sent: the {field} header would hold a control character "
            f"({bad.group()!r}); correct the value it comes from"
        )
    return value
