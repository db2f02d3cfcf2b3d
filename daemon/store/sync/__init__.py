"""store.sync: the sync engine's units of work, one crossing of the store bridge each.

The engine (``kuloo_daemon.sync.engine``) reads Sell and writes Sell; everything it
decides about the Kuloo side happens here, inside one transaction per unit, with the pure
rules of ``rules`` (``linking``, ``importing``, ``merge``, ``caps``, ``texts``):

- ``runs``: begin a run (``running``, or ``skipped`` with the reason), finish it, list
  the history, the scheduler's inputs, the start-up repair of interrupted runs.
- ``batch``: ``apply_batch``, one batch of the change feed applied and committed before
  the engine acknowledges it to Sell.
- ``pushes``: ``plan_pushes``, ``confirm_writes``, ``link_pushed`` — Kuloo-side changes
  and new leads going to Sell, and what Sell made of them.
- ``lookups``: read-only questions between units (``conversion_lookups``,
  ``orphans_to_recheck``, ``linked_ids``, ``users_matching``).
- ``errors``: Sync errors kept, cleared and listed (``sync.errors``).
- ``rows``: the user and channel rows as every unit reads them (views, link index entries,
  counts of links).
- ``types``: the plain data that crosses between the engine and these units (no tortoise).
"""
