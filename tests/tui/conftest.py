"""TUI tests: the real daemon as a subprocess (``Daemon`` of tests/plugins/daemon_proc.py), the
TUI's asyncio client against it, on asyncio (``@pytest.mark.anyio``, see tests/conftest.py)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import pytest
from plugins.daemon_proc import Daemon

# A manual clock: nothing moves unless a test moves it, so screens are the same every run.
MANUAL_CLOCK = '[clock]\nmode = "manual"\nstart = "2026-01-05T09:00:00Z"\n'


@pytest.fixture
def make_daemon(short_tmp, daemon_factory):
    def make(sell: str = "", sub: str = "d", extra: str = "") -> Daemon:
        root = os.path.join(short_tmp, sub)
        os.makedirs(f"{root}/creds", exist_ok=True)
        # Previews and mail sign links: a signing key, as a credential file (never TOML).
        key = f"{root}/creds/link-signing-key"
        with open(key, "w") as fh:
            fh.write("tui-tests-signing-key-0123456789abcdef\n")
        os.chmod(key, 0o600)
        extra_config = MANUAL_CLOCK + f'[credentials]\ndirectory = "{root}/creds"\n' + extra
        d = daemon_factory(extra_config, sub=sub, sell=sell)
        d.start()
        d.wait_for("READY=1", timeout=30)
        return d

    return make


@pytest.fixture
def daemon(make_daemon):
    return make_daemon()


def restart(d: Daemon) -> None:
    """Start the same daemon again (same state folder, same socket) after it stopped."""
    d.proc.wait(10)
    d.start()
    d.wait_for("READY=1", timeout=30)


async def until(
    condition: Callable[[], bool], pilot=None, tries: int = 300, step: float = 0.05
) -> None:
    """Wait, boundedly, until ``condition()`` holds (never a timing assertion)."""
    for _ in range(tries):
        if condition():
            return
        if pilot is not None:
            await pilot.pause(step)
        else:
            await asyncio.sleep(step)
    raise AssertionError(f"condition never held: {getattr(condition, '__name__', condition)}")
