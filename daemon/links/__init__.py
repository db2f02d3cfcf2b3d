"""The links service: the public HTTP endpoints every email links to (docs/delivery.md).

- ``limits``: pure decisions at the edge — the client address behind trusted proxies,
  the per-address token bucket, the per-link (and per-client signup) hourly counts.
- ``listener``: our listener around hypercorn — the connection cap, each request's
  deadline to arrive, the open-file check at start.
- ``pages``: the small HTML pages (no JavaScript) and the security headers. Pure.
- ``app``: the ASGI app (Starlette routing) over ``Services``: footer page and one-click
  unsubscribe ``/u/{token}``, double opt-in signup ``/signup/{channel}`` and ``/c/{token}``,
  click redirect ``/r/{token}``, ``/healthz``. Every change goes through ``store.users``
  with actor ``link`` and publishes ``user.updated``.
- ``server``: binds the listener, serves the app with hypercorn (through ``listener``) inside
  the daemon's nursery (``nursery.start``: READY=1 waits for the listener), and sends
  signup confirmation emails through delivery's transport.

Tokens are verified only with ``kuloo_daemon.tokens`` (the one format delivery signs).
May import: the base modules, ``services``, ``store`` use cases, ``delivery``'s transport.
Never ``control``.
"""
