"""kuloo_daemon: the Kuloo Sync daemon and everything it owns.

One folder per capability: ``control/`` (the local admin socket and its protocol),
``store/`` (tortoise-orm models and the trio bridge), ``crm/`` (the only code that talks
HTTP to Zendesk Sell). Top-level modules are the process shell: ``cli`` (commands),
``app`` (service lifetimes and signals), ``config``, ``logs``, ``secrets``, ``systemd``.

This package's ``__init__`` imports nothing, so the TUI can import the sans-IO protocol
module without pulling in trio or tortoise.
"""

__version__ = "0.1.0"
