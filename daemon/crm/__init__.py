"""crm: the only code that talks HTTP to Zendesk Sell.

Owns: the Sell API client (``client``: retries, timeouts, typed errors, over httpx's own
transport), the limits on what a Sell response may hold (``body``), the per-token rate
budget (``budget``), the per-token client pool (``pool``: one ``SellClient``, so one
``httpx.AsyncClient`` and one budget, per token), the typed records parsed from Sell's
envelopes (``records``), the change feed (``feed``: Sync API with a polling fallback) and
the channel-connection check (``verify``: token and custom fields).

May import: trio, httpx, structlog, the standard library and the base modules
``kuloo_daemon.secrets``, ``kuloo_daemon.vocabulary`` and ``kuloo_daemon.clock``.
Imports nothing from ``store``, ``control`` or the sync engine: state goes in and out as
plain data, and the caller persists it. The token travels as ``Secret`` and is revealed
only inside ``client`` when building the ``Authorization`` header.
"""
