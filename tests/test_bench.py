"""The benchmarks cannot rot: their --quick mode runs here (tiny N, the cheap servers):
bench/peers.py and bench/workers.py.

Speed is never asserted (that is the benchmarks' job, on a quiet machine); what is checked
is that every server measured delivered every broadcast to every client, with no duplicates.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_quick(script: str, tmp_path: Path) -> dict[str, Any]:
    """``bench/<script> --quick`` as a subprocess; its JSON results."""
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--quick", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def check_complete(r: dict[str, Any]) -> None:
    """Every broadcast of both throughput phases reached every client, once."""
    assert r["ok"] and r["complete"], (r["server"], r.get("error"))
    for window in (1, 8):
        t = r[f"tput{window}"]
        assert t["delivered"] == t["expected"] == t["broadcasts"] * r["n"], (r["server"], window, t)
    assert r["loadgen_stat"]["dup"] == 0 and r["loadgen_stat"]["closes"] == 0, (r["server"], r["loadgen_stat"])
    assert r["connect_closes"] == 0, r


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_peer_benchmark_quick_delivers_everything(tmp_path: Path) -> None:
    data = run_quick("peers.py", tmp_path)
    measured = {r["server"]: r for r in data["results"]}
    assert {"pycable", "websockets"} <= measured.keys()
    for r in measured.values():
        check_complete(r)
        assert len(r["fan_ms"]) == r["fan"]["broadcasts"], r["server"]
    assert "pycable" not in data["ratios"] and "websockets" in data["ratios"]


@pytest.mark.slow
@pytest.mark.nats
@pytest.mark.timeout(300)
def test_workers_benchmark_quick_delivers_everything(tmp_path: Path) -> None:
    data = run_quick("workers.py", tmp_path)
    assert [r["workers"] for r in data["results"]] == [1, 2]
    for r in data["results"]:
        check_complete(r)
    assert set(data["summary"]) == {"2w/1w N=50 1 in flight", "2w/1w N=50 8 in flight"}
