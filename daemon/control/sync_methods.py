"""The ``sync.*`` control methods: run a sync now, the run history, the Sync errors.

- ``sync.run {"channel"}`` — runs one sync of the channel and returns its run document
  when it ends; a run in progress is waited for, then a fresh one runs, so every change
  made before the call is included.
- ``sync.runs {"channel", "limit"?}`` — newest first (``limit`` 1..100, default 20).
- ``sync.errors {"channel", "after"?, "limit"?}`` — ``{"errors": [...], "next", "total"}``,
  oldest first, keyset-paged; records without a user (a duplicate email, a plan cap) have
  ``"user": null``; ``total`` counts the channel's errors, all pages together.

Thin: check the parameters, run the engine or a store use case, render.
"""

from __future__ import annotations

from typing import Any, Literal, overload

from ..services import Services
from ..store.sync import errors as error_store
from ..store.sync import runs as run_store
from ..sync import engine
from . import render
from .protocol import ProtocolError

RUNS_LIMIT_MAX = 100
ERRORS_LIMIT_MAX = 500


def _invalid(message: str) -> ProtocolError:
    return ProtocolError("invalid_params", message)


@overload
def _positive(
    params: dict[str, Any], key: str, *, required: Literal[True] = ..., maximum: int | None = None
) -> int: ...
@overload
def _positive(
    params: dict[str, Any], key: str, *, required: bool, default: int, maximum: int | None = None
) -> int: ...
@overload
def _positive(
    params: dict[str, Any], key: str, *, required: bool, maximum: int | None = None
) -> int | None: ...
def _positive(
    params: dict[str, Any],
    key: str,
    *,
    required: bool = True,
    default: int | None = None,
    maximum: int | None = None,
) -> int | None:
    if key not in params or params[key] is None:
        if required:
            raise _invalid(
                f"'{key}' must be a positive integer" + (" channel id" if key == "channel" else "")
            )
        return default
    value = params[key]
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < 1
        or (maximum and value > maximum)
    ):
        bound = f" up to {maximum}" if maximum else ""
        raise _invalid(f"'{key}' must be a positive integer{bound}")
    return value


async def sync_run(services: Services, params: dict[str, Any]) -> dict[str, Any]:
    channel = _positive(params, "channel")
    await services.store.run(run_store.runs, channel, 1)  # not_found for an unknown channel
    run = await engine.run_channel(services, channel)
    if (
        run is None
    ):  # PostgreSQL: this daemon stalled past its lease and another took the channel over
        raise ProtocolError(
            "unavailable",
            "the run stopped: another daemon took over this channel's lease; see sync.runs",
        )
    return render.sync_run(run)


async def sync_runs(services: Services, params: dict[str, Any]) -> dict[str, Any]:
    channel = _positive(params, "channel")
    limit = _positive(params, "limit", required=False, default=20, maximum=RUNS_LIMIT_MAX)
    return {
        "runs": [
            render.sync_run(r) for r in await services.store.run(run_store.runs, channel, limit)
        ]
    }


async def sync_errors(services: Services, params: dict[str, Any]) -> dict[str, Any]:
    channel = _positive(params, "channel")
    after = _positive(params, "after", required=False)
    limit = _positive(params, "limit", required=False, default=100, maximum=ERRORS_LIMIT_MAX)
    docs, nxt = await services.store.run(error_store.errors, channel, after, limit)
    total = await services.store.run(error_store.error_count, channel)
    return {"errors": [render.sync_error(d) for d in docs], "next": nxt, "total": total}


METHODS = {
    "sync.run": sync_run,
    "sync.runs": sync_runs,
    "sync.errors": sync_errors,
}
