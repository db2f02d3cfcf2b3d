"""store: everything the daemon keeps, and the only package that imports tortoise.

``models`` are the tables (docs/architecture.md); ``bridge.Store`` is the one door from trio;
use-case modules (``channels``, ``clock_time``, ``sync``, …) hold the coroutines
that run behind that door, one whole unit of work each (one crossing), and return typed
results (frozen dataclasses, lists of them, ids), never model instances. Business times
come in as ``now`` from the clock. May import tortoise, ``secrets``, ``vocabulary`` and ``rules``;
never ``crm``, ``services``, the capabilities or ``control``.
"""


class StoreError(Exception):
    pass


class NotFound(StoreError):
    pass


class Conflict(StoreError):
    pass


class Invalid(StoreError):
    """Input that only the store can judge (e.g. promo tags against the channel's tags)."""
