"""Entry point of ``kuloo-sell-sim``."""

import sys


def main(argv: list[str] | None = None) -> int:
    print("kuloo-sell-sim: not built yet.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
