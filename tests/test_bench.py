"""The benchmarks cannot rot: their --quick mode runs here (tiny N, the cheap servers).

Speed is never asserted (that is the benchmarks' job, on a quiet machine); what is checked
is that every server measured delivered every broadcast to every client, with no duplicates.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_peer_benchmark_quick_delivers_everything(tmp_path: Path) -> None:
    out = tmp_path / "peers.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "peers.py"), "--quick", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(out.read_text())
    measured = {r["server"]: r for r in data["results"]}
    assert {"pycable", "websockets"} <= measured.keys()
    for name, r in measured.items():
        assert r["ok"] and r["complete"], (name, r.get("error"))
        for window in (1, 8):
            t = r[f"tput{window}"]
            assert t["delivered"] == t["expected"] == t["broadcasts"] * r["n"], (name, window, t)
        assert r["loadgen_stat"]["dup"] == 0 and r["loadgen_stat"]["closes"] == 0, (name, r["loadgen_stat"])
        assert len(r["fan_ms"]) == r["fan"]["broadcasts"], name
    assert "pycable" not in data["ratios"] and "websockets" in data["ratios"]
