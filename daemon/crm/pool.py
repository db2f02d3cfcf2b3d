"""One Sell client and one rate budget per token, shared by all work for that token.

Owns the lifetimes of the per-token ``SellClient``s: ``client(token)`` opens one on first
use and hands the same instance (same keep-alive connections, same ``RateBudget``) to
every caller; ``discard(token)`` closes it when a channel's token is removed or replaced;
leaving the pool closes them all. Two channels pasting the same token share one budget,
which is what Sell's per-token limit demands. Keys are ``Secret``s (hashed by value),
never logged. Imports trio and this package.
"""

from __future__ import annotations

from typing import Any

import trio

from ..secrets import Secret
from .budget import RateBudget
from .client import SellClient


class ClientPool:
    """``async with ClientPool(base_url) as pool: sell = await pool.client(token)``."""

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
        self._lock = trio.Lock()

    async def __aenter__(self) -> ClientPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __len__(self) -> int:
        return len(self._clients)

    async def client(self, token: Secret) -> SellClient:
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
        """Close the client of ``token`` (its token was removed or replaced)."""
        async with self._lock:
            sell = self._clients.pop(token, None)
        if sell is None:
            return False
        await sell.aclose()
        return True

    async def aclose(self) -> None:
        async with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for sell in clients:
            await sell.aclose()
