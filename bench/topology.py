"""Benchmark of the veth lab backend.

1. build + tear-down time of Mininet-style linear topologies: N switches in a
   chain, each with one host (2N namespaces, 2N-1 veth pairs, N switchd
   processes, capture on every link), with a ping from the first host to the
   last as a sanity check. Mininet's linear,200 took 35-75 s to build.
2. forwarding rate on veth: 64-byte frames sent from h1 through an AF_PACKET
   socket as fast as one Python thread can, counted at h2 (its rx_packets), for
   a plain veth pair, the switch's bridge (learned unicast) and the switch's
   forwarding table (nftables ``fwd`` with a destination-MAC rewrite).

    python bench/topology.py [--sizes 8,50,200] [--seconds 1] [--json]

Needs root.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ftsslab.lab.model import Endpoint, ForwardingEntry, Link, Node, Scenario  # noqa: E402
from ftsslab.lab.veth.backend import VethBackend, _open_send_socket  # noqa: E402
from ftsslab.lab.veth.netns import call_in_netns  # noqa: E402


def mac(node: int, iface: int) -> str:
    return f"02:00:{node >> 8:02x}:{node & 0xff:02x}:{iface:02x}:00"


def linear(n: int) -> Scenario:
    """s1..sN in a chain (s_i:p2 - s_i+1:p1), h_i:eth0 - s_i:p0; hosts 10.0.x.y/16."""
    nodes, links = [], []
    for i in range(1, n + 1):
        nodes += [Node(f"h{i}", "host"), Node(f"s{i}", "switch")]
        ip = f"10.0.{i >> 8}.{i & 0xff}/16"
        links.append(Link(Endpoint(f"h{i}", "eth0", mac(2 * i, 0), ip),
                          Endpoint(f"s{i}", "p0", mac(2 * i + 1, 0))))
        if i > 1:
            links.append(Link(Endpoint(f"s{i - 1}", "p2", mac(2 * i - 1, 2)),
                              Endpoint(f"s{i}", "p1", mac(2 * i + 1, 1))))
    return Scenario(f"linear-{n}", "<bench>", "", tuple(nodes), tuple(links), (), ())


def bench_linear(n: int) -> dict:
    sc = linear(n)
    b = VethBackend()
    t0 = time.perf_counter()
    try:
        b.up(sc)
        t_up = time.perf_counter() - t0
        last = f"10.0.{n >> 8}.{n & 0xff}"
        r = b.exec("h1", ("ping", "-c", "1", "-W", "5", last), timeout=20)
        ping_ok = r.status == 0
    finally:
        t1 = time.perf_counter()
        b.down()
        t_down = time.perf_counter() - t1
    return {"switches": n, "hosts": n, "namespaces": len(sc.nodes), "links": len(sc.links),
            "up_s": round(t_up, 3), "down_s": round(t_down, 3), "ping_first_last": ping_ok}


def _rx_packets(ifname: str) -> int:
    with open("/proc/thread-self/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == ifname:
                return int(rest.split()[1])
    raise KeyError(ifname)


def _blast(sock, frame: bytes, seconds: float) -> tuple[int, int]:
    sent = failed = 0
    send = sock.send
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(1000):
            try:
                send(frame)
                sent += 1
            except OSError:
                failed += 1
    return sent, failed


def rate(b: VethBackend, frame: bytes, seconds: float) -> dict:
    sock = call_in_netns(b.namespace("h1"), _open_send_socket, "eth0")
    try:
        rx0 = call_in_netns(b.namespace("h2"), _rx_packets, "eth0")
        t0 = time.perf_counter()
        sent, failed = _blast(sock, frame, seconds)
        elapsed = time.perf_counter() - t0
        time.sleep(0.2)
        got = call_in_netns(b.namespace("h2"), _rx_packets, "eth0") - rx0
    finally:
        sock.close()
    return {"sent_pps": round(sent / elapsed), "recv_pps": round(got / elapsed),
            "delivered": round(got / max(sent, 1), 4), "send_errors": failed}


def eth(dst: str, src: str, etype: bytes, payload: bytes) -> bytes:
    return bytes.fromhex(dst.replace(":", "")) + bytes.fromhex(src.replace(":", "")) + etype + \
        payload.ljust(50, b"\0")


def ipv4_udp(src: str, dst: str, sport: int, dport: int) -> bytes:
    import ipaddress
    import struct
    udp = struct.pack("!HHHH", sport, dport, 8 + 18, 0) + b"ftsslab-bench-data"
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                      ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    s = sum(struct.unpack("!10H", hdr))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return hdr[:10] + struct.pack("!H", ~s & 0xffff) + hdr[12:] + udp


def bench_rate(seconds: float) -> dict:
    h1 = Endpoint("h1", "eth0", "02:00:00:00:01:00", "10.1.0.1/24")
    h2 = Endpoint("h2", "eth0", "02:00:00:00:02:00", "10.1.0.2/24")
    out = {}
    plain = Scenario("pair", "<bench>", "", (Node("h1", "host"), Node("h2", "host")),
                     (Link(h1, h2),), (), ())
    exp = b"\x88\xb5"   # IEEE local experimental ethertype: the host stacks ignore it
    b = VethBackend(capture=False)
    try:
        b.up(plain)
        out["veth pair"] = rate(b, eth(h2.mac, h1.mac, exp, b"x"), seconds)
    finally:
        b.down()
    sw = Scenario("switch", "<bench>", "",
                  (Node("h1", "host"), Node("h2", "host"), Node("s1", "switch")),
                  (Link(h1, Endpoint("s1", "p1", "02:00:00:00:03:01")),
                   Link(h2, Endpoint("s1", "p2", "02:00:00:00:03:02"))), (), ())
    b = VethBackend(capture=False)
    try:
        b.up(sw)
        b.send("h2:eth0", eth(h1.mac, h2.mac, exp, b"learn"))   # the bridge learns h2
        b.send("h1:eth0", eth(h2.mac, h1.mac, exp, b"learn"))
        time.sleep(0.05)
        out["switch: bridge"] = rate(b, eth(h2.mac, h1.mac, exp, b"x"), seconds)
        b.table("s1", "add", ForwardingEntry(vip="10.1.0.100", out_port="p2", proto=17,
                                             vport=80, dst_mac=h2.mac))
        frame = eth("02:00:00:00:00:99", h1.mac, b"\x08\x00",
                    ipv4_udp("10.1.0.1", "10.1.0.100", 40000, 80))
        out["switch: table (nft fwd + MAC rewrite)"] = rate(b, frame, seconds)
    finally:
        b.down()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="8,50,200", help="switch counts of the linear topologies")
    ap.add_argument("--seconds", type=float, default=1.0, help="duration of each rate run")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    topo = [bench_linear(int(n)) for n in a.sizes.split(",") if n]
    rates = bench_rate(a.seconds)
    if a.json:
        print(json.dumps({"linear": topo, "forwarding": rates}, indent=1))
        return 0
    print(f"{'topology':<12}{'namespaces':>11}{'links':>7}{'up s':>9}{'down s':>9}  ping h1->hN")
    for r in topo:
        print(f"linear-{r['switches']:<5}{r['namespaces']:>11}{r['links']:>7}{r['up_s']:>9.2f}"
              f"{r['down_s']:>9.2f}  {'ok' if r['ping_first_last'] else 'FAILED'}")
    print()
    print(f"{'forwarding (64-byte frames)':<40}{'sent pps':>11}{'recv pps':>11}{'delivered':>10}")
    for name, r in rates.items():
        print(f"{name:<40}{r['sent_pps']:>11,}{r['recv_pps']:>11,}{r['delivered']:>10.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
