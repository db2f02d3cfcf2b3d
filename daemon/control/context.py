"""What a control method stands on: the shared services and the capabilities built on them.

``app`` builds the parts in order (``Services``, the links listener, ``Delivery``,
``LinksServer``, then the control server) and the control server makes one ``Context``
of them, complete from the start. Most methods need only the ``Services``: they are written on
``Services`` and registered through ``on_services``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..delivery.service import Delivery
from ..services import Services


@dataclass(frozen=True)
class Context:
    services: Services
    delivery: Delivery
    links_url: str  # the links service's bound address ("" when it has none)
    connections: Callable[[], int]  # open control connections, the caller's own included


Handler = Callable[[Context, dict[str, Any]], Awaitable[Any]]
ServicesHandler = Callable[[Services, dict[str, Any]], Awaitable[Any]]


def on_services(handler: ServicesHandler) -> Handler:
    """A method that needs only the shared services, as a ``Handler``."""

    async def run(context: Context, params: dict[str, Any]) -> Any:
        return await handler(context.services, params)

    run.__name__ = run.__qualname__ = getattr(handler, "__name__", "handler")
    return run


def on_services_all(handlers: Mapping[str, ServicesHandler]) -> dict[str, Handler]:
    return {name: on_services(handler) for name, handler in handlers.items()}
