"""rules: the sync's decisions as pure functions over plain data (docs/architecture.md).

Canonical field values (``values``), the three-way merge (``merge``), which user a Sell
record belongs to (``linking``), where a lead or contact becomes a user (``importing``:
what a new Sell record becomes, or why it does not), plan caps (``caps``), every Sync
error code and text (``texts``), when each channel syncs next (``schedule``), Sell text
cleaned as it is read (``cleaning``) and the one check on every email header value
(``headers``). The sync
engine (``sync``) and its store units of work (``store.sync``, which apply a batch
inside one transaction) both call them, so they sit in the base layer: they import only
``vocabulary`` and the standard library — no trio, no tortoise, no I/O — and are tested
exhaustively (rule tables and hypothesis properties in ``tests/sync``).
"""
