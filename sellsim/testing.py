"""``SellSim``: a real sellsim on a loopback port for tests, benchmarks and other test suites.

Owns starting/stopping a simulator in a background thread (its own asyncio loop) and thin,
synchronous wrappers over the ``/_sim/`` control API. Everything goes over HTTP, so it is safe
from any thread and any event loop (call it from trio tests through ``trio.to_thread`` only if
the call might block long; the calls are quick).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from .app import Simulator
from .seeds import default_seed
from .server import ServerThread


def _load(seed: None | dict[str, Any] | str | Path) -> dict[str, Any]:
    if seed is None:
        return default_seed()
    if isinstance(seed, dict):
        return seed
    return json.loads(Path(seed).read_text(encoding="utf-8"))


class SellSim:
    """``with SellSim(seed=None | dict | path, **options) as sim: ...``"""

    def __init__(
        self,
        seed: None | dict[str, Any] | str | Path = None,
        *,
        state: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        **options: Any,
    ) -> None:
        self.seed = _load(seed)
        self.sim = Simulator(self.seed, options, state_path=state)
        self._server = ServerThread(self.sim, host, port)
        self.base_url = ""
        self._http: httpx.Client | None = None

    # --- lifetime ---------------------------------------------------------------------------
    def start(self) -> SellSim:
        self.base_url = self._server.start()
        self._http = httpx.Client(base_url=self.base_url, timeout=10)
        return self

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        self._server.stop()

    def __enter__(self) -> SellSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- tokens -----------------------------------------------------------------------------
    def _accounts(self) -> list[dict[str, Any]]:
        return self._call("GET", "/_sim/accounts")

    @property
    def token(self) -> str:
        """The first token of the first account."""
        return self._accounts()[0]["tokens"][0]["token"]

    @property
    def token_name(self) -> str:
        """The label ``counters()["tokens"]`` uses for ``token``."""
        return self._accounts()[0]["tokens"][0]["name"]

    @property
    def account_id(self) -> int:
        return self._accounts()[0]["id"]

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        """An httpx client for the Sell API with the token, Accept and User-Agent set."""
        headers = {
            "Authorization": f"Bearer {token or self.token}",
            "Accept": "application/json",
            "User-Agent": "sellsim-tests/1",
            **kwargs.pop("headers", {}),
        }
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=10, **kwargs)

    # --- control ----------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        assert self._http is not None, "SellSim is not started"
        r = self._http.request(
            method, path, json=body if body is not None else None, params=params or None
        )
        if r.status_code >= 400:
            raise RuntimeError(f"sellsim control {method} {path}: {r.status_code} {r.text}")
        return r.json() if r.content else None

    def reset(self, empty: bool = False) -> None:
        """Back to the last loaded seed, default options, no faults, zero counters, real clock."""
        self._call("POST", "/_sim/reset", {"empty": empty})

    def load_seed(self, seed: dict[str, Any] | str | Path) -> None:
        self._call("POST", "/_sim/seed", _load(seed))

    def set_faults(self, rules: list[dict[str, Any]], seed: int | None = None) -> list[dict]:
        return self._call("PUT", "/_sim/faults", {"rules": rules, "seed": seed})["rules"]

    def faults(self) -> list[dict[str, Any]]:
        return self._call("GET", "/_sim/faults")["rules"]

    def clear_faults(self) -> None:
        self._call("DELETE", "/_sim/faults")

    def counters(self) -> dict[str, Any]:
        return self._call("GET", "/_sim/counters")

    def reset_counters(self) -> None:
        self._call("DELETE", "/_sim/counters")

    def peak_rps(self, token_name: str | None = None) -> int:
        stats = self.counters()["tokens"].get(token_name or self.token_name, {})
        return stats.get("peak_rps", 0)

    def set_options(self, **options: Any) -> dict[str, Any]:
        return self._call("POST", "/_sim/options", options)

    def options(self) -> dict[str, Any]:
        return self._call("GET", "/_sim/options")

    def advance_clock(self, seconds: float) -> str:
        return self._call("POST", "/_sim/clock", {"advance": seconds})["now"]

    def set_account(self, account_id: int | None = None, **settings: Any) -> dict[str, Any]:
        """Plan switches, e.g. ``set_account(sync_api=False)``."""
        aid = account_id or self.account_id
        return self._call("PATCH", f"/_sim/accounts/{aid}", settings)

    def state(self) -> dict[str, Any]:
        return self._call("GET", "/_sim/state")

    # --- a Sell user in the web UI ----------------------------------------------------------
    def _ui(
        self,
        method: str,
        path: str,
        body: Any = None,
        account: int | None = None,
        force: bool = False,
    ) -> Any:
        params: dict[str, Any] = {}
        if account:
            params["account"] = account
        if force:
            params["force"] = 1
        return self._call(method, "/_sim/ui/" + path, body, **params)

    def create_record(
        self, type_: str, attrs: dict[str, Any], *, account: int | None = None, force: bool = False
    ) -> dict[str, Any]:
        return self._ui("POST", type_, attrs, account, force)

    def edit_record(
        self,
        type_: str,
        id_: int,
        changes: dict[str, Any],
        *,
        account: int | None = None,
        force: bool = False,
    ) -> dict[str, Any]:
        return self._ui("PUT", f"{type_}/{id_}", changes, account, force)

    def delete_record(self, type_: str, id_: int, *, account: int | None = None) -> None:
        self._ui("DELETE", f"{type_}/{id_}", None, account)

    def convert_lead(
        self, lead_id: int, *, create_deal: bool = False, account: int | None = None
    ) -> dict[str, Any]:
        return self._ui("POST", f"lead/{lead_id}/convert", {"create_deal": create_deal}, account)

    def add_custom_field(
        self, type_: str, spec: dict[str, Any], *, account: int | None = None
    ) -> dict[str, Any]:
        return self._ui("POST", f"custom_fields/{type_}", spec, account)

    def edit_custom_field(
        self, type_: str, field_id: int, changes: dict[str, Any], *, account: int | None = None
    ) -> dict[str, Any]:
        return self._ui("PUT", f"custom_fields/{type_}/{field_id}", changes, account)

    def delete_custom_field(self, type_: str, field_id: int, *, account: int | None = None) -> None:
        self._ui("DELETE", f"custom_fields/{type_}/{field_id}", None, account)

    def records(self, type_: str, account: int | None = None) -> list[dict[str, Any]]:
        """Every stored record of a type (from the state dump; does not use the token)."""
        for acc in self.state()["accounts"]:
            if account is None or acc["id"] == account:
                return acc["records"]["lead" if type_.startswith("lead") else "contact"]
        return []
