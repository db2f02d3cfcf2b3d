"""kuloo_daemon: the Kuloo Sync daemon and everything it owns.

One folder per capability: ``control/`` (the local admin socket and its protocol),
``sync/`` (the sync engine and the Sell connection check), ``delivery/`` (sequences,
digests, the outbox), ``links/`` (the public HTTP service); below them ``store/``
(tortoise-orm models, the trio bridge, the use cases) and ``crm/`` (the only code that
talks HTTP to Zendesk Sell). ``services`` is the floor the capabilities stand on (one
``Services`` object per run). Top-level modules are the process shell — ``cli``
(commands), ``app`` (lifetimes and signals) — and the base modules every layer may use:
``clock`` (business time), ``vocabulary`` (the product's words and field table),
``rules/`` (the sync's pure decisions), ``tokens``, ``config``, ``logs``, ``secrets``,
``systemd``, ``scheduler``. The floors are described in docs/architecture.md and checked
in ``tests/test_layering.py``.

This package's ``__init__`` imports nothing, so the TUI can import the sans-IO protocol
module without pulling in trio or tortoise.
"""

__version__ = "0.1.0"
