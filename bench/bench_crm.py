"""The crm client over loopback: raw throughput with the budget lifted, and the paced rate
of five tasks sharing one token at the default budget (peak per second, from sellsim's own
counters, must stay <= 9)."""

from __future__ import annotations

import trio

from kuloo_daemon.crm.budget import RateBudget
from kuloo_daemon.crm.client import SellClient
from kuloo_daemon.secrets import Secret
from sellsim.testing import SellSim

SECONDS = 3.0


async def _rate(sim: SellSim, budget: float) -> float:
    """Requests per second that 5 tasks sharing one client and budget get through."""
    count = 0
    async with SellClient(sim.base_url, Secret(sim.token), budget=RateBudget(budget)) as sell:

        async def worker() -> None:
            nonlocal count
            while True:
                await sell.users_self()
                count += 1

        start = trio.current_time()
        with trio.move_on_after(SECONDS):
            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(worker)
        return count / (trio.current_time() - start)


def main() -> dict[str, float]:
    with SellSim(rate_per_second=100_000) as sim:
        rate = trio.run(_rate, sim, 100_000.0)
        sim.reset()
        sim.set_options(rate_per_second=100_000)
        paced = trio.run(_rate, sim, 9.0)
        peak = sim.peak_rps()
    print(f"   unpaced: {rate:,.0f} req/s (5 tasks, 1 client)")
    print(f"   paced at 9/s: {paced:.2f} req/s, sellsim peak {peak}/s")
    if peak > 9:
        raise RuntimeError(f"peak {peak}/s above the 9/s budget")
    return {
        "client req/s (unpaced)": rate,
        "paced req/s (budget 9)": paced,
        "peak rps": float(peak),
    }


if __name__ == "__main__":
    main()
