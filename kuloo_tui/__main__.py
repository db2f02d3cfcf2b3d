"""Entry point of ``kuloo-tui``."""

import sys


def main(argv: list[str] | None = None) -> int:
    print("kuloo-tui: the admin UI is not built yet; use kuloo-ctl meanwhile.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
