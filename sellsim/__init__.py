"""sellsim: a faithful Zendesk Sell API v2 simulator. Imports nothing from the daemon.

Modules: ``options`` (behaviours no source settles, strict by default), ``envelope``
(wire shapes), ``validate`` (pure write/query rules), ``store`` (state), ``faults``, ``limits``,
``app`` (routing; also an ASGI app), ``control`` (``/_sim/``), ``server`` (HTTP/1.1 on
asyncio), ``seeds``, ``testing`` (``SellSim``), ``pytest_plugin`` (the ``sellsim`` fixture).
"""

from .app import Simulator

__all__ = ["Simulator"]
