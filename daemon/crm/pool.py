"""One Sell client and one rate budget per token, shared by all work for that token.

Owns the lifetimes of the per-token ``SellClient``s: ``use(token)`` (or ``client(token)``)
opens one on first use and hands the same instance (same keep-alive connections, same
``RateBudget``) to every caller; ``discard(token)`` retires it when a channel's token is
removed or replaced; leaving the pool closes them all. Two channels pasting the same
token share one budget, which is what Sell's per-token limit demands. Keys are
``Secret``s (hashed by value), never logged. Imports trio and this package.

A retired client that is still in use is closed only when its last user is done: work
in flight (a check, a sync page) finishes on it, while new work for the token gets a
fresh client. Work that may outlive a token change takes its client with
``async with pool.use(token) as sell:``, which counts it as a user.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from ..secrets import Secret
from .budget import RateBudget
from .client import SellClient


class ClientPool:
    """``async with ClientPool(base_url) as pool: async with pool.use(token) as sell: ...``."""

    def __init__(
        self,
        base_url: str,
        *,
        rate_per_second: float = 9.0,
        per_hour: int = 36_000,
        **client_options: Any,
    ) -> None:
        self.base_url = base_url
        self.rate_per_second = rate_per_second
        self.per_hour = per_hour
        self.client_options = client_options
        self._clients: dict[Secret, SellClient] = {}
        self._users: dict[SellClient, int] = {}  # clients in use -> how many users
        self._lock = trio.Lock()

    async def __aenter__(self) -> ClientPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __len__(self) -> int:
        return len(self._clients)

    @asynccontextmanager
    async def use(self, token: Secret) -> AsyncIterator[SellClient]:
        """The token's client, kept open until this block ends even if ``discard`` runs."""
        sell = await self.client(token)
        self._users[sell] = self._users.get(sell, 0) + 1
        try:
            yield sell
        finally:
            left = self._users.pop(sell) - 1
            if left:
                self._users[sell] = left
            elif self._clients.get(token) is not sell:  # retired meanwhile: its last user closes it
                await sell.aclose()

    async def client(self, token: Secret) -> SellClient:
        """The token's shared client, not counted as in use (see ``use``)."""
        if not isinstance(token, Secret) or not token:
            raise ValueError("a non-empty Secret token is required")
        async with self._lock:
            existing = self._clients.get(token)
            if existing is not None and not existing.closed:
                return existing
            sell = SellClient(
                self.base_url,
                token,
                budget=RateBudget(self.rate_per_second, self.per_hour),
                **self.client_options,
            )
            await sell.open()
            self._clients[token] = sell
            return sell

    async def discard(self, token: Secret) -> bool:
        """Retire the client of ``token`` (its token was removed or replaced): closed now,
        or by its last user when it is in use."""
        async with self._lock:
            sell = self._clients.pop(token, None)
        if sell is None:
            return False
        if sell not in self._users:
            await sell.aclose()
        return True

    async def aclose(self) -> None:
        async with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for sell in clients:
            await sell.aclose()
