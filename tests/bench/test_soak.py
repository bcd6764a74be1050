"""The soak test's 60-second mode (`bench/soak.py --quick`) as part of the suite: clients cut
at random while broadcasts flow get every message once, in order; no traceback in the log."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_soak(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--quick", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )
    assert out.exists(), f"soak.py produced no result (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    result = json.loads(out.read_text())
    assert result["broadcasts"] > 0 and result["restores"] > 0, result
    assert result["missing"] == 0 and result["duplicates"] == 0 and result["out_of_order"] == 0, result
    assert result["delivered_pct"] == 100.0, result
    assert result["tracebacks"] == 0, proc.stderr[-5000:]
    assert result["pass"], result
    assert proc.returncode == 0, proc.stderr[-3000:]
