"""delivery: the channel's promo sequences and newsletter digests, by email (docs/delivery.md).

Owns turning article files into articles (``documents``, ``clip``), the decisions of what
is due when (``schedule``, pure), rendering once per article version (``render``),
building the MIME message (``message``), the transports (``transport``: SMTP, Maildir)
and the I/O shell that plans, sends and records (``service``). The store side is
``store.delivery``; signed links come from ``tokens``.

May import the base modules (``clock``, ``config``, ``secrets``, ``tokens``,
``vocabulary``), ``services`` and ``store``; never ``control``, ``crm`` or ``sync``.
Clipping is the one place here that makes HTTP requests (to article pages, never to Sell).
"""
