"""Workers benchmark: pycable with 1 worker against 2 (``--workers``), on one embedded NATS.

    .venv/bin/python bench/workers.py                 # N = 1000 and 5000, 1 and 2 workers (~4 min)
    .venv/bin/python bench/workers.py --quick         # smoke run: N = 50
    SERVER_CPUS=0-3 CLIENT_CPU=4-7 .venv/bin/python bench/workers.py --workers 1,2,4   # a bigger machine

Both variants run the same configuration: ``--presets=broker`` with an embedded NATS
(JetStream broker and NATS pub/sub), so that a broadcast goes the way it goes between
workers: broker registration, then pub/sub to every process. With 1 worker that is a single
``pycable --embed_nats`` process; with N it is a supervisor, N workers and the embedded NATS
the supervisor runs. Each server is measured with bench/peers.py's procedure (connect N
subscribers, fan time, throughput with 1 and 8 broadcasts in flight, completeness), by the
same C loadgen. The CPU time counted is that of the whole process tree: supervisor, workers
and nats-server.

Pinning: a server with w workers runs on the first w CPUs of ``SERVER_CPUS`` (default: CPU 0
for 1 worker, CPUs 0-1 for 2), the loadgen on ``CLIENT_CPU`` (default 1). On this 2-CPU
machine two workers therefore share CPU 1 with the loadgen: the msg/s ratio is a floor, the
CPU per delivered message is the figure that transfers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fanout  # noqa: E402
import peers  # noqa: E402
from fanout import PYTHON, RESULTS, build_loadgen, log, pad_for_target  # noqa: E402


def cpu_list(spec: str) -> list[int]:
    out: list[int] = []
    for part in spec.split(","):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", default=None, help="comma-separated client counts (default 1000,5000; quick: 50)")
    ap.add_argument("--workers", default="1,2", help="worker counts to compare (default 1,2)")
    ap.add_argument("--quick", action="store_true", help="smoke run: N=50, tiny phases")
    ap.add_argument("--out", default=None, help="JSON output (default bench/results/workers-<time>.json)")
    args = ap.parse_args()
    quick = args.quick
    ns = [int(x) for x in (args.n or ("50" if quick else "1000,5000")).split(",")]
    counts = [int(x) for x in args.workers.split(",")]
    server_cpus = cpu_list(os.environ.get("SERVER_CPUS", "0-1"))
    client_cpus = os.environ.get("CLIENT_CPU", "1")
    fanout.CLIENT_CPU = client_cpus  # the loadgen's taskset
    args.settle = 0.2 if quick else 0.5
    args.fan_budget, args.fan_min, args.fan_max = (0.5, 5, 20) if quick else (6.0, 8, 100)
    args.tput_budget, args.tput_min, args.tput_max = (0.5, 10, 50) if quick else (5.0, 16, 2000)
    args.fan_timeout = 30.0 if quick else 60.0
    args.warm = 3
    args.max_seq = 3 + args.fan_max + 2 * args.tput_max + 100

    for w in counts:
        flags = ["--workers", str(w)] if w > 1 else ["--embed_nats"]
        peers.SERVERS[f"workers-{w}"] = peers.Peer(
            f"pycable, {w} worker{'s' if w > 1 else ''}",
            [str(PYTHON), "-m", "pycable", "--public", "--presets=broker", *flags, "--host", "127.0.0.1",
             "--port", "{port}", "--http_broadcast_port", "{bport}", "--enats_addr", "nats://127.0.0.1:{nport}"],
            [],
            cpus=",".join(str(c) for c in server_cpus[: max(1, min(w, len(server_cpus)))]),
        )  # fmt: skip

    RESULTS.mkdir(parents=True, exist_ok=True)
    build_loadgen()
    os.sched_setaffinity(0, set(cpu_list(client_cpus)))
    pad = pad_for_target()
    tag = "workers-" + time.strftime("%Y%m%d-%H%M%S")
    results: list[dict[str, Any]] = []
    for n in ns:
        for w in counts:
            log(f"{w} worker(s) N={n} ...")
            r = peers.run_one(f"workers-{w}", n, args, pad, tag)
            r["workers"] = w
            results.append(r)
    summary: dict[str, Any] = {}
    for n in ns:
        one = next((r for r in results if r["n"] == n and r["workers"] == 1 and r.get("ok")), None)
        for r in results:
            if r["n"] != n or r["workers"] == 1 or not r.get("ok") or one is None:
                continue
            for window in (1, 8):
                a, b = one[f"tput{window}"], r[f"tput{window}"]
                summary[f"{r['workers']}w/1w N={n} {window} in flight"] = {
                    "cpu_per_msg_ratio": round(b["server_cpu_us_per_msg"] / a["server_cpu_us_per_msg"], 3),
                    "msgs_per_s_ratio": round(b["msgs_per_s"] / a["msgs_per_s"], 3),
                    "cpu_us_per_msg": [a["server_cpu_us_per_msg"], b["server_cpu_us_per_msg"]],
                    "msgs_per_s": [a["msgs_per_s"], b["msgs_per_s"]],
                }
    out = {"tag": tag, "quick": quick, "server_cpus": server_cpus, "client_cpu": client_cpus,
           "summary": summary, "results": results}  # fmt: skip
    path = Path(args.out) if args.out else RESULTS / f"{tag}.json"
    path.write_text(json.dumps(out, indent=1))
    log(f"results: {path}")
    print(peers.markdown(results))
    print(json.dumps(summary, indent=1))
    return 0 if all(r.get("ok") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
