"""Run the official Durable Streams conformance suite against a pycable server (memory broker).

``python tests/ds/conformance.py`` (``make conformance``) prints the pass count per group and
exits non-zero when a test fails; ``tests/ds/test_conformance.py``
runs the same under pytest. The suite is ``@durable-streams/server-conformance-tests``
(``tests/ds/package.json``), run by vitest through ``conformance.test.mjs`` (the package's
own CLI finds no tests under ``node_modules``).
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from helpers.server import ServerProcess  # noqa: E402

#: Groups pycable does not support (none: forks are supported on the memory and Redis brokers).
#: Long-polls time out after 2 s: the suite's tests that wait for a long-poll timeout have
#: vitest's default 5 s limit.
UNSUPPORTED: tuple[str, ...] = ()
SERVER_ARGS = ("--broker", "memory", "--public", "--ds", "--ds_poll_interval", "2",
               "--stream_history", "*=limit:0,ttl:0")


def run_suite(base_url: str, timeout: float = 1200.0) -> dict[str, collections.Counter[str]]:
    """``{group: Counter(passed=…, failed=…, skipped=…)}``; failures are listed on stderr."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        proc = subprocess.run(
            ["npx", "vitest", "run", "conformance.test.mjs", "--reporter=json", f"--outputFile={out}"],
            cwd=HERE, env={**os.environ, "DS_URL": base_url}, capture_output=True, timeout=timeout,
        )
        if not out.exists():
            raise RuntimeError(f"vitest produced no report (exit {proc.returncode}):\n{proc.stderr.decode()[-3000:]}")
        report = json.loads(out.read_text())
    groups: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for file in report["testResults"]:
        for test in file["assertionResults"]:
            titles = test["ancestorTitles"]
            group = titles[1] if len(titles) > 1 else titles[0]
            if len(titles) > 2 and titles[1] in ("Property-Based Tests (fast-check)", "Stream Closure"):
                group = f"{titles[1]} / {titles[2]}"
            groups[group][test["status"]] += 1
            if test["status"] == "failed" and not group.startswith(UNSUPPORTED):
                message = (test.get("failureMessages") or [""])[0].splitlines()[:3]
                print(f"FAILED {group} :: {test['title']}\n    " + "\n    ".join(message), file=sys.stderr)
    return groups


def required_failures(groups: dict[str, collections.Counter[str]]) -> int:
    return sum(c["failed"] for g, c in groups.items() if not g.startswith(UNSUPPORTED))


def table(groups: dict[str, collections.Counter[str]]) -> str:
    lines = ["| group | passed | failed | skipped |", "|---|---|---|---|"]
    total: collections.Counter[str] = collections.Counter()
    for group, c in groups.items():
        total.update(c)
        note = " (not supported)" if group.startswith(UNSUPPORTED) else ""
        lines.append(f"| {group}{note} | {c['passed']} | {c['failed']} | {c['skipped']} |")
    lines.append(f"| **total** | {total['passed']} | {total['failed']} | {total['skipped']} |")
    return "\n".join(lines)


def main() -> int:
    with ServerProcess(*SERVER_ARGS) as srv:
        groups = run_suite(f"http://127.0.0.1:{srv.port}/ds")
    print(table(groups))
    bad = required_failures(groups)
    print(f"\n{bad} failure(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
