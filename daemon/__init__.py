"""kuloo_daemon: the Kuloo Sync daemon and everything it owns.

One folder per capability: ``control/`` (the local admin socket and its protocol),
``sync/`` (the Sell connection, soon the sync engine), ``store/`` (tortoise-orm models and
the trio bridge), ``crm/`` (the only code that talks HTTP to Zendesk Sell). ``services``
is the floor the capabilities stand on (one ``Services`` object per run). Top-level
modules are the process shell — ``cli`` (commands), ``app`` (lifetimes and signals) — and
the base modules every layer may use: ``clock`` (business time), ``vocabulary`` (the
product's words and field table), ``config``, ``logs``, ``secrets``, ``systemd``,
``scheduler``. The layers are drawn and checked in ``tests/test_layering.py``.

This package's ``__init__`` imports nothing, so the TUI can import the sans-IO protocol
module without pulling in trio or tortoise.
"""

__version__ = "0.1.0"
