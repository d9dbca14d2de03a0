# SPDX-License-Identifier: GPL-2.0-or-later
"""Benchmark of seed 002's storage-device failover on veth (claim 41, check 24).

    python bench/nas_failover.py [--runs 10] [--json]                        (root)

Runs ``scenarios/nas-failover.yaml`` ``--runs`` times (a 64 MiB download from d1, whose link
goes down mid-response and whose process is killed; the switch hears the silence and d2 takes
the connection over from the switch's shadow) and reports, per run and as p50/p95/max:

* detection: the switch's silence verdict, from d1's last heartbeat (``health`` event);
* failover: the switch's Open to d2 to the session's end (``failover`` DONE, ``ms``);
* stall: on the client's link, the last data frame from d1 to the first from d2 (the probe,
  one byte at d1's ISN, left out) -- what the unmodified client lives through;
* whether every run passed (same bytes, 0 RST) and the client's retransmissions.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ftsslab.lab.runner import Runner  # noqa: E402
from ftsslab.lab.scenario import load_scenario  # noqa: E402

SCENARIO = ROOT / "scenarios" / "nas-failover.yaml"
VIP = "10.0.0.100"


def to_client(result) -> list[tuple[float, int, int, int]]:
    """(time, TCP flags, seq, payload length) of the VIP's frames on the client's link."""
    out = []
    for f in result.frames:
        d = f.data
        if f.dst != "c1:eth0" or d[12:14] != b"\x08\x00" or d[23] != 6 \
                or socket.inet_ntoa(d[26:30]) != VIP:
            continue
        ihl = (d[14] & 0xF) * 4
        seq = struct.unpack_from(">I", d, 14 + ihl + 4)[0]
        size = int.from_bytes(d[16:18]) - ihl - (d[14 + ihl + 12] >> 4) * 4
        out.append((f.time, d[14 + ihl + 13], seq, size))
    return out


def measure(result) -> dict:
    """What one run shows (see the module docstring)."""
    def detail(e) -> dict:
        return dict(kv.split("=", 1) for kv in e.detail.split() if "=" in kv)

    down = next(detail(e) for e in result.events if e.node == "s1" and e.kind == "health"
                and "new=DOWN" in e.detail)
    done = next((detail(e) for e in result.events if e.node == "s1" and e.kind == "failover"
                 and "outcome=DONE" in e.detail), {})
    cut = next(e.time for e in result.events if e.kind == "link-down")
    data = [f for f in to_client(result) if f[3] > 0]
    before = [f for f in data if f[0] < cut]
    after = [f for f in data if f[0] > cut and f[3] > 1]  # (the probe is one byte)
    finished = next(o for o in result.outcomes if "same-bytes" in o.what)
    retrans = finished.detail.split("retrans=")[-1].split("'")[0] if "retrans=" in \
        finished.detail else None
    return {"passed": result.passed, "detection_ms": float(down["detection_ms"]),
            "failover_ms": float(done["ms"]) if "ms" in done else None,
            "stall_ms": (after[0][0] - before[-1][0]) * 1e3 if before and after else None,
            "rst_to_client": sum(1 for f in to_client(result) if f[1] & 0x04),
            "client_retrans": int(retrans) if retrans and retrans.isdigit() else None}


def spread(values: list[float]) -> dict:
    v = sorted(x for x in values if x is not None)
    if not v:
        return {}
    return {"n": len(v), "p50": v[len(v) // 2], "p95": v[min(len(v) - 1, int(len(v) * 0.95))],
            "max": v[-1]}


def run(runs: int) -> dict:
    from ftsslab.lab.veth.backend import VethBackend

    recs = [measure(Runner(load_scenario(SCENARIO), VethBackend()).run()) for _ in range(runs)]
    return {"runs": recs, "passed": sum(r["passed"] for r in recs),
            **{k: spread([r[k] for r in recs]) for k in ("detection_ms", "failover_ms",
                                                         "stall_ms")},
            "rst_to_client": sum(r["rst_to_client"] for r in recs),
            "client_retrans": sum(r["client_retrans"] or 0 for r in recs)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    res = run(args.runs)
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    print(f"{res['passed']}/{args.runs} runs passed (same bytes, 0 RST); "
          f"RST to the client {res['rst_to_client']}, client retransmissions "
          f"{res['client_retrans']}")
    print_spreads(res, ("detection_ms", "failover_ms", "stall_ms"))
    return 0


def print_spreads(res: dict, keys: tuple[str, ...]) -> None:
    """One line per ``spread`` of ``res``."""
    for k in keys:
        s = res[k]
        print(f"{k:14} " + (f"p50 {s['p50']:.1f}  p95 {s['p95']:.1f}  max {s['max']:.1f}  "
                            f"(n={s['n']})" if s else "-"))


if __name__ == "__main__":
    sys.exit(main())
