"""The choices the TUI offers, as the daemon's vocabulary defines them.

The TUI imports nothing of the daemon but its protocol module, so these few words are
repeated here; ``test_the_tuis_choices_are_the_daemons`` (in tests/tui/test_cli.py) checks
they match the daemon's.
"""

PLANS = ("free", "starter", "pro", "enterprise")
FREQUENCIES = ("daily", "weekly", "monthly", "disabled")
SUBSCRIPTIONS = (*FREQUENCIES, "unsubscribed")
SOURCES = {"": "app", "admin": "admin", "signup": "signup", "sync": "sync"}
CRM_KINDS = ("lead", "contact", "none")
OUTBOX_STATES = ("queued", "sending", "sent", "failed", "uncertain", "cancelled")
