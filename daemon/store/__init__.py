"""store: everything the daemon keeps, and the only package that imports tortoise.

``models`` are the tables (DESIGN.md §2); ``bridge.Store`` is the one door from trio;
use-case modules (``channels``, …) hold the coroutines that run behind that door, one
whole unit of work each, and return plain data (dicts, lists), never model instances.
"""


class StoreError(Exception):
    pass


class NotFound(StoreError):
    pass


class Conflict(StoreError):
    pass
