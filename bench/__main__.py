"""Run every ``bench/bench_*.py`` module's ``main()`` in turn; each prints its figures.

A module's ``main()`` may return a dict of figure name -> number (rates, ratios); they are
printed in a summary at the end. A failing benchmark is reported and makes the exit status 1.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
import traceback
from pathlib import Path


def main() -> int:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    summary: list[tuple[str, str, object]] = []
    failed = 0
    for name in names:
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        try:
            module = importlib.import_module(f"bench.{name}")
            figures = module.main() or {}
        except Exception:
            traceback.print_exc()
            failed += 1
            continue
        for key, value in figures.items():
            summary.append((name, key, value))
        print(f"   ({time.perf_counter() - started:.1f} s)", flush=True)
    if summary:
        print("== summary")
        for name, key, value in summary:
            shown = f"{value:,.1f}" if isinstance(value, float) else str(value)
            print(f"{name:24} {key:40} {shown}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
