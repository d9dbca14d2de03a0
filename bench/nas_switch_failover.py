# SPDX-License-Identifier: GPL-2.0-or-later
"""Benchmark of seed 002's switch failover on veth (Fig. 12, check 28).

    python bench/nas_switch_failover.py [--runs 10] [--json]                 (root)

Runs ``scenarios/nas-switch-failover.yaml`` ``--runs`` times (two 32 MiB downloads, placed on
d1 and d2 by s1; mid-download s1's process is killed and its links go down; its standby s2
takes over) and reports, per run and as p50/p95/max:

* detection: s2's silence verdict on s1, from s1's last heartbeat (``health`` event);
* takeover: s2's takeover itself -- fence, MAC, addresses, bridge, XAP socket (``ms``);
* stall: the longest silence of either connection on the client's link, from just before the
  kill to the end -- what the unmodified client lives through;
* whether every run passed (same bytes, 0 RST).

``spread`` and the printing are ``bench/nas_failover.py``'s.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import socket
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ftsslab.lab.runner import Runner  # noqa: E402
from ftsslab.lab.scenario import load_scenario  # noqa: E402

SCENARIO = ROOT / "scenarios" / "nas-switch-failover.yaml"
VIP = "10.0.0.100"


def _failover():
    """bench/nas_failover.py: its ``spread`` and ``print_spreads``."""
    spec = importlib.util.spec_from_file_location("nas_failover", ROOT / "bench" /
                                                  "nas_failover.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def to_client(result) -> list[tuple[float, int, int, int]]:
    """(time, TCP flags, payload length, client port) of the VIP's frames reaching c1."""
    out = []
    for f in result.frames:
        d = f.data
        if f.dst != "c1:eth0" or d[12:14] != b"\x08\x00" or d[23] != 6 \
                or socket.inet_ntoa(d[26:30]) != VIP:
            continue
        ihl = (d[14] & 0xF) * 4
        size = struct.unpack_from(">H", d, 16)[0] - ihl - (d[14 + ihl + 12] >> 4) * 4
        out.append((f.time, d[14 + ihl + 13], size, struct.unpack_from(">H", d, 16 + ihl)[0]))
    return out


def measure(result) -> dict:
    """What one run shows (see the module docstring)."""
    def detail(e) -> dict:
        return dict(kv.split("=", 1) for kv in e.detail.split() if "=" in kv)

    kill = next(e.time for e in result.events if e.node == "s1" and e.kind == "kill")
    took = next((detail(e) for e in result.events if e.node == "s2" and e.kind == "takeover"),
                {})
    frames = to_client(result)
    stall = None
    for port in {f[3] for f in frames}:  # each connection's longest silence
        data = [t for t, _, n, p in frames if n > 0 and p == port and t > kill - 0.1]
        gaps = [b - a for a, b in zip(data, data[1:], strict=False)]
        if gaps:
            stall = max(stall or 0.0, *gaps)
    return {"passed": result.passed,
            "detection_ms": float(took["detection_ms"]) if took else None,
            "takeover_ms": float(took["ms"]) if took else None,
            "stall_ms": stall * 1e3 if stall is not None else None,
            "rst_to_client": sum(1 for f in frames if f[1] & 0x04)}


def run(runs: int) -> dict:
    from ftsslab.lab.veth.backend import VethBackend

    spread = _failover().spread
    recs = [measure(Runner(load_scenario(SCENARIO), VethBackend()).run()) for _ in range(runs)]
    return {"runs": recs, "passed": sum(r["passed"] for r in recs),
            **{k: spread([r[k] for r in recs]) for k in ("detection_ms", "takeover_ms",
                                                         "stall_ms")},
            "rst_to_client": sum(r["rst_to_client"] for r in recs)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    res = run(args.runs)
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    print(f"{res['passed']}/{args.runs} runs passed (same bytes, 0 RST); RST to the client "
          f"{res['rst_to_client']}")
    _failover().print_spreads(res, ("detection_ms", "takeover_ms", "stall_ms"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
