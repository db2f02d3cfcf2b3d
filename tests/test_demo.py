"""`make demo`'s script end to end: sellsim, the daemon and the demo channel come up and stop."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_smoke(short_tmp):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py"), "--smoke", "--state", short_tmp],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "sellsim (Zendesk Sell simulator): http://127.0.0.1:" in r.stdout
    assert "channel #1 'Demo channel': plan pro, token ****0000, connection verified" in r.stdout
    assert "business clock: manual, now 2026-01-05T09:00:00Z" in r.stdout
    # a second run reuses the state: same channel, no duplicate
    r2 = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py"), "--smoke", "--state", short_tmp],
                        capture_output=True, text=True, timeout=120)
    assert r2.returncode == 0 and "channel #1 'Demo channel'" in r2.stdout
    assert "business clock: manual, now 2026-01-05T09:00:00Z" in r2.stdout  # kept in the store
