"""Refresh daemon/delivery/caniemail.json from the caniemail npm package (caniemail.com's data).

    cd "$(mktemp -d)" && npm pack caniemail && tar xzf caniemail-*.tgz
    python scripts/caniemail_snapshot.py package/data/caniemail.json

Keeps, for every feature, its title and the newest tested support ("y", "a" partial,
"n", "u" unknown) on each platform of the clients we promise (Gmail, Apple Mail,
Outlook — incl. Windows for the preview warnings — and Yahoo). The daemon ships the
snapshot: it reads no network at run time.
"""

import json
import sys
from pathlib import Path

FAMILIES = ("gmail", "apple-mail", "outlook", "yahoo")
OUT = Path(__file__).resolve().parents[1] / "daemon" / "delivery" / "caniemail.json"


def newest(results: dict) -> str:
    value = list(results.values())[-1] if results else "u"
    return value.split()[0][:1]  # "a #1" -> "a"


def main(src: str) -> None:
    raw = json.loads(Path(src).read_text())
    package = json.loads((Path(src).parents[1] / "package.json").read_text())
    features = {}
    for item in raw["data"]:
        support = {}
        for family in FAMILIES:
            for platform, results in item["stats"].get(family, {}).items():
                support[f"{family}.{platform}"] = newest(results)
        features[item["slug"]] = {"title": item["title"], "support": support}
    OUT.write_text(
        json.dumps(
            {
                "source": f"npm caniemail {package['version']}",
                "last_update_date": raw["last_update_date"],
                "features": features,
            },
            indent=0,
            sort_keys=True,
        )
        + "\n"
    )
    print(f"wrote {OUT} ({len(features)} features)")


if __name__ == "__main__":
    main(sys.argv[1])
