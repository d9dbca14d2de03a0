"""Benchmark of link impairments on veth: what an impaired link's shim costs.

Two hosts on one link, h1 -> h2:

1. latency: ``ping`` RTT over a plain veth pair, through the shim with nothing set, and
   with ``delay: 1ms`` each way (what the shim adds on top of the delay);
2. forwarding: 64-byte frames sent from h1 through an AF_PACKET socket as fast as one
   Python thread can, counted at h2 (its rx_packets), through the shim with nothing set,
   ``loss: 1%`` and ``delay: 1ms``, with the backend's capture on (as ``ftsslab run``) and
   off; the shim's CPU time per frame it read (utime + stime from /proc);
3. rate: 1000-byte frames blasted through ``rate: 10mbit`` / ``100mbit`` (tbf), the rate
   h2 receives them at while the blast lasts.

    python bench/impair.py [--seconds 1] [--json]

Needs root.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from topology import _blast, _rx_packets, eth  # noqa: E402

from ftsslab.lab.model import (  # noqa: E402
    NO_IMPAIRMENTS,
    Endpoint,
    Impairment,
    Link,
    Node,
    Scenario,
    SetImpairment,
)
from ftsslab.lab.veth.backend import VethBackend, _open_send_socket  # noqa: E402
from ftsslab.lab.veth.netns import call_in_netns  # noqa: E402

H1 = Endpoint("h1", "eth0", "02:00:00:00:01:00", "10.1.0.1/24")
H2 = Endpoint("h2", "eth0", "02:00:00:00:02:00", "10.1.0.2/24")
EXP = b"\x88\xb5"   # IEEE local experimental ethertype: the host stacks ignore it
RTT_RE = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/")


def pair(impair: Impairment | None) -> Scenario:
    """h1 -- h2; ``impair`` (both directions) puts the shim in the middle, None does not."""
    link = Link(H1, H2, impair=NO_IMPAIRMENTS if impair is None else (impair, impair))
    # an impair step (the bench never runs it) gives the link its shim even with nothing set
    steps = () if impair is None else (
        SetImpairment("bench", 0, "bench", link.name, NO_IMPAIRMENTS),)
    return Scenario("pair", "<bench>", "", (Node("h1", "host"), Node("h2", "host")), (link,),
                    steps, ())


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _rx_bytes(ifname: str) -> int:
    with open("/proc/thread-self/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == ifname:
                return int(rest.split()[0])
    raise KeyError(ifname)


def latency(impair: Impairment | None, count: int) -> dict:
    b = VethBackend(capture=False)
    try:
        b.up(pair(impair))
        b.exec("h1", ("ping", "-c", "3", "-i", "0.05", "10.1.0.2"), 10)   # ARP, warm-up
        r = b.exec("h1", ("ping", "-q", "-c", str(count), "-i", "0.01", "10.1.0.2"), 60)
    finally:
        b.down()
    lo, avg, hi = (float(x) for x in RTT_RE.search(r.stdout).groups())
    return {"rtt_min_ms": lo, "rtt_avg_ms": avg, "rtt_max_ms": hi}


def forwarding(impair: Impairment, seconds: float, capture: bool) -> dict:
    b = VethBackend(capture=capture)
    try:
        b.up(pair(impair))
        pid = b.state.processes["link-0"]["pid"]
        sock = call_in_netns(b.namespace("h1"), _open_send_socket, "eth0")
        try:
            rx0 = call_in_netns(b.namespace("h2"), _rx_packets, "eth0")
            cpu0, t0 = _cpu_ticks(pid), time.perf_counter()
            sent, _ = _blast(sock, eth(H2.mac, H1.mac, EXP, b"x"), seconds)
            elapsed = time.perf_counter() - t0
            time.sleep(0.3)
            got = call_in_netns(b.namespace("h2"), _rx_packets, "eth0") - rx0
            cpu = (_cpu_ticks(pid) - cpu0) / os.sysconf("SC_CLK_TCK")
        finally:
            sock.close()
        read = b._shim_request(b.state.links[0], {"op": "stats"})["frames"][0]
    finally:
        b.down()
    return {"sent_pps": round(sent / elapsed), "recv_pps": round(got / elapsed),
            "delivered": round(got / max(sent, 1), 4),
            "shim_us_per_frame": round(cpu / max(read, 1) * 1e6, 2)}


def rate(bits: int, seconds: float) -> dict:
    b = VethBackend(capture=False)
    try:
        b.up(pair(Impairment(rate=bits)))
        sock = call_in_netns(b.namespace("h1"), _open_send_socket, "eth0")
        try:
            rx0 = call_in_netns(b.namespace("h2"), _rx_bytes, "eth0")
            t0 = time.perf_counter()
            _blast(sock, eth(H2.mac, H1.mac, EXP, b"x" * 986), seconds)
            got = call_in_netns(b.namespace("h2"), _rx_bytes, "eth0") - rx0
            elapsed = time.perf_counter() - t0
        finally:
            sock.close()
    finally:
        b.down()
    return {"set_mbit": bits / 1e6, "measured_mbit": round(got * 8 / elapsed / 1e6, 2)}


def run(seconds: float, pings: int) -> dict:
    return {
        "latency": {"veth pair": latency(None, pings),
                    "shim, nothing set": latency(Impairment(), pings),
                    "shim, delay 1ms each way": latency(Impairment(delay=0.001), pings)},
        "forwarding": {f"{name}, capture {'on' if cap else 'off'}": forwarding(imp, seconds, cap)
                       for name, imp in (("nothing set", Impairment()),
                                         ("loss 1%", Impairment(loss=0.01)),
                                         ("delay 1ms", Impairment(delay=0.001)))
                       for cap in (False, True)},
        "rate": [rate(bits, seconds) for bits in (10**7, 10**8)],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="duration of each blast")
    ap.add_argument("--pings", type=int, default=200, help="pings per latency run")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    res = run(a.seconds, a.pings)
    if a.json:
        print(json.dumps(res, indent=1))
        return 0
    print(f"{'latency (ping RTT)':<32}{'min ms':>9}{'avg ms':>9}{'max ms':>9}")
    for name, r in res["latency"].items():
        print(f"{name:<32}{r['rtt_min_ms']:>9.3f}{r['rtt_avg_ms']:>9.3f}{r['rtt_max_ms']:>9.3f}")
    print()
    print(f"{'forwarding (64-byte frames)':<32}{'sent pps':>10}{'recv pps':>10}{'delivered':>10}"
          f"{'shim us/frame':>14}")
    for name, r in res["forwarding"].items():
        print(f"{name:<32}{r['sent_pps']:>10,}{r['recv_pps']:>10,}{r['delivered']:>10.1%}"
              f"{r['shim_us_per_frame']:>14.2f}")
    print()
    for r in res["rate"]:
        print(f"rate {r['set_mbit']:g} mbit (tbf): measured {r['measured_mbit']:g} mbit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
