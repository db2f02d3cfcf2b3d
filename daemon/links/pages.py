"""The links service's pages: small, accessible, no JavaScript, everything escaped. Pure.

Each function returns the whole HTML document. Buttons are plain ``<form method="post">``
posts back to the same URL: the signed token in the URL is the capability, the form
carries no other identity (nothing for a cross-site request to borrow).
"""

from __future__ import annotations

from html import escape

# Sent with every answer, errors included. No script may run; forms post only to us.
SECURITY_HEADERS: dict[str, str] = {
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}

# Added to every answer when ``public_url`` is https (a year; without includeSubDomains).
HSTS = "max-age=31536000"

FREQUENCY_WORDS = {
    "daily": "daily",
    "weekly": "weekly",
    "monthly": "monthly",
    "disabled": "no digests",
}

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem;"
    "line-height:1.5;color:#1a1a1a}button{font:inherit;padding:.5rem 1rem;margin:.25rem 0;"
    "min-width:12rem;cursor:pointer}fieldset{border:1px solid #ccc;margin:1rem 0}"
    "p.done{background:#eef7ee;padding:.5rem;border-left:4px solid #2a7a2a}"
)


def _document(title: str, body: str) -> str:
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )


def _button(name: str, value: str, label: str, current: bool = False) -> str:
    pressed = ' aria-pressed="true"' if current else ""
    return (
        f'<div><button type="submit" name="{escape(name)}" value="{escape(value)}"{pressed}>'
        f"{escape(label)}</button></div>"
    )


def choice_words(frequency: str, unsubscribed: bool) -> str:
    if unsubscribed:
        return "you are unsubscribed: you receive no emails from this channel"
    if frequency == "disabled":
        return "no digests (you still receive the channel's article series)"
    return f"a {FREQUENCY_WORDS.get(frequency, frequency)} digest"


def preferences(channel: str, frequency: str, unsubscribed: bool, done: str = "") -> str:
    """The footer page: the current choice and a button for each other one."""
    notice = f'<p class="done" role="status">{escape(done)}</p>' if done else ""
    buttons = "".join(
        _button(
            "frequency",
            value,
            f"{word.capitalize()}",
            current=(not unsubscribed and frequency == value),
        )
        for value, word in FREQUENCY_WORDS.items()
    )
    action = (
        _button("action", "resubscribe", "Resubscribe")
        if unsubscribed
        else _button("action", "unsubscribe", "Unsubscribe from all emails")
    )
    body = (
        f"<h1>Your emails from {escape(channel)}</h1>{notice}"
        f"<p>Your current choice: <strong>{escape(choice_words(frequency, unsubscribed))}</strong>.</p>"
        f'<form method="post" id="frequency"><fieldset><legend>How often should we send you a digest '
        f"of new articles?</legend>{buttons}</fieldset></form>"
        f'<form method="post"><fieldset><legend>All emails</legend>{action}</fieldset></form>'
    )
    return _document(f"Email preferences — {channel}", body)


def message(title: str, text: str) -> str:
    """A plain page: errors, signup answers, confirmations."""
    return _document(title, f"<h1>{escape(title)}</h1><p>{escape(text)}</p>")


def confirm(channel: str, email: str) -> str:
    """The confirmation page of a signup: a GET shows it, the button's POST confirms."""
    body = (
        f"<h1>Confirm your subscription</h1><p>Subscribe <strong>{escape(email)}</strong> to "
        f"<strong>{escape(channel)}</strong>?</p>"
        f'<form method="post">{_button("action", "confirm", "Yes, subscribe me")}</form>'
    )
    return _document(f"Confirm — {channel}", body)
