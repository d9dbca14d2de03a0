"""Throughput of ftsslab's TCP core against the kernel's TCP over the same veth pair, where
the core's time goes, and the core alone (no IO) in segments/s.

    python bench/tcp_core.py [--mbytes 32] [--mtu 1500] [--rounds 2] [--json]   (root)

Every round, on one veth pair h1 -- h2 (no impairment; checksum offload off, as in every
lab), each transfer timed by its receiver from the first byte to EOF:

- **kernel**: h1's kernel TCP to h2's and back (two Python processes, ``ip netns exec``);
- **core sends**: ``rawtcp.RawTcp`` in h1 (this process) to a kernel socket in h2 (a
  process of its own, so it takes no GIL from the core); once through the kernel's GSO
  (``veth/gso.py``, the default) and once a frame and a checksum at a time (``offload``
  off), the baseline that says what GSO is worth;
- **core receives**: a kernel socket in h2 to ``RawTcp`` in h1.

The ratio is core / kernel per direction. Then py-spy (``.venv/bin/py-spy``; cProfile when
it is missing) samples the core's loop thread during one more transfer each way, and the
samples are grouped by what they were doing. The core alone runs two TCBs back to back in
memory: segments/s through ``on_segment`` with segment objects, and through the wire
format too (``encode`` + ``decode(verify=True)``, both checksums).
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import json
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ftsslab.lab.scenario import load_scenario_text  # noqa: E402
from ftsslab.lab.tcp import Tcb, decode  # noqa: E402
from ftsslab.lab.veth.backend import VethBackend  # noqa: E402
from ftsslab.lab.veth.rawtcp import RawTcp  # noqa: E402

PY_SPY = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
CORE_IP, CORE_MAC, H1_IP, H2_IP = "10.0.0.1", "02:00:00:00:00:11", "10.0.0.3", "10.0.0.2"
PEER = r"""
import socket, sys, time
mode, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "sink":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, port)); s.listen(1); print("ready", flush=True)
    c, _ = s.accept(); n = 0; t = None; buf = bytearray(1 << 20)
    while k := c.recv_into(buf):
        t = t or time.monotonic(); n += k
    print(n, time.monotonic() - t, flush=True)
else:
    s = socket.create_connection((ip, port)); left = int(sys.argv[4]); block = b"x" * (1 << 20)
    while left > 0:
        s.sendall(block[:left]); left -= len(block)
    s.shutdown(socket.SHUT_WR); s.recv(1)
"""


def scenario(mtu: int) -> str:
    return f"""
name: tcp-core-bench
nodes: {{h1: {{kind: host}}, h2: {{kind: host}}}}
links:
  - endpoints: [{{node: h1, interface: eth0, mac: "02:00:00:00:00:01", ipv4: {H1_IP}/24}},
                {{node: h2, interface: eth0, mac: "02:00:00:00:00:02", ipv4: {H2_IP}/24}}]
    mtu: {mtu}
"""


def peer(b: VethBackend, node: str, *args) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", b.namespace(node), sys.executable, "-c",
                             PEER, *map(str, args)], stdout=subprocess.PIPE, text=True)


def sink_result(p: subprocess.Popen) -> float:
    """MB/s the sink received at."""
    out, _ = p.communicate(timeout=600)
    n, seconds = out.split()[-2:]
    return int(n) / float(seconds) / 1e6


def kernel(b: VethBackend, nbytes: int, forward: bool) -> float:
    rx, tx, ip = ("h2", "h1", H2_IP) if forward else ("h1", "h2", H1_IP)
    sink = peer(b, rx, "sink", ip, 5003)
    sink.stdout.readline()
    subprocess.run(["ip", "netns", "exec", b.namespace(tx), sys.executable, "-c", PEER,
                    "source", ip, "5003", str(nbytes)], check=True, timeout=600)
    return sink_result(sink)


def core_sends(stack: RawTcp, b: VethBackend, nbytes: int) -> float:
    sink = peer(b, "h2", "sink", H2_IP, 5001)
    sink.stdout.readline()
    conn = stack.connect((H2_IP, 5001))
    block, left = b"x" * (1 << 20), nbytes
    while left > 0:
        conn.send(block[:left])
        left -= len(block)
    conn.shutdown()
    conn.wait_closed(600)
    return sink_result(sink)


def core_receives(stack: RawTcp, b: VethBackend, nbytes: int) -> float:
    src = peer(b, "h2", "source", CORE_IP, 5002, nbytes)
    conn = stack.accept(5002, 60)
    n, t = 0, None
    while data := conn.recv(1 << 20, 600):
        t = t or time.monotonic()
        n += len(data)
    elapsed = time.monotonic() - t
    conn.shutdown()
    src.wait(60)
    return n / elapsed / 1e6


# ---- where the time goes ------------------------------------------------------------------

AREAS = (  # (area, substrings of a sampled leaf frame), first match wins
    ("send(2) on the packet socket (includes the peer kernel's receive path)",
     ("PacketRing.send", "RawTcp._tx")),
    ("reading the ring", ("PacketRing.frames",)),
    ("checksums (one big-int fold per segment)", ("_fold",)),
    ("encode (headers, options)", ("TcpSegment.encode", "TcpSegment.options", "ipv4")),
    ("decode (headers, options)", ("decode", "ip_header", "_options", "inet_ntoa")),
    ("TCB: on_segment / ACK / data / transmit", ("Tcb.", "seq_after")),
    ("driver: frames, timers, application data, lock", ("RawTcp.", "Connection.", "Condition",
                                                         "_acquire", "notify")),
)


def area(leaf: str) -> str:
    return next((name for name, keys in AREAS if any(k in leaf for k in keys)), "other")


def pyspy_profile(run) -> dict[str, float]:
    """Share of the core loop thread's samples per area while ``run()`` runs."""
    out = tempfile.mktemp(suffix=".txt")
    spy = subprocess.Popen([PY_SPY, "record", "--pid", str(os.getpid()), "--rate", "400",
                            "--nonblocking", "--format", "raw", "--output", out],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached
    try:
        run()
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
    counts: collections.Counter[str] = collections.Counter()
    with open(out) as f:
        for line in f:
            stack, _, n = line.rstrip().rpartition(" ")
            frames = stack.split(";")
            if any("RawTcp._loop" in fr for fr in frames):
                leaf = next((fr for fr in reversed(frames) if area(fr) != "other"), frames[-1])
                counts[area(leaf)] += int(n)
    os.unlink(out)
    total = sum(counts.values()) or 1
    return {k: round(v / total, 3) for k, v in counts.most_common()}


class ProfiledRawTcp(RawTcp):
    """The loop under cProfile, for a machine without py-spy."""

    def _loop(self) -> None:
        self.profile = cProfile.Profile()
        self.profile.runcall(super()._loop)


def _label(file: str, func: str) -> str:
    """cProfile's (file, function) named as py-spy names the frame, for ``area``."""
    base = os.path.basename(file)
    if "method 'send'" in func or "from_bytes" in func:
        return "PacketRing.send" if "send" in func else "_fold"
    if base == "tcp.py":
        return func if func in ("decode", "_options", "_fold") else (
            f"TcpSegment.{func}" if func in ("encode", "options") else f"Tcb.{func}")
    return {"ring.py": "PacketRing.", "rawtcp.py": "RawTcp."}.get(base, "") + func


def cprofile_shares(stack: ProfiledRawTcp) -> dict[str, float]:
    counts: collections.Counter[str] = collections.Counter()
    for (file, _, func), (_, _, tottime, _, _) in pstats.Stats(stack.profile).stats.items():
        if "poll" not in func:  # waiting, not working
            counts[area(_label(file, func))] += tottime
    total = sum(counts.values()) or 1
    return {k: round(v / total, 3) for k, v in counts.most_common()}


# ---- the core alone -------------------------------------------------------------------------

def core_alone(nbytes: int, wire: bool) -> tuple[float, int]:
    """(segments/s, segments) for ``nbytes`` one way between two TCBs in memory."""
    kw = {"options": True, "rcvbuf": 1 << 20, "sndbuf": 1 << 20, "delack": 0.04}
    a, (syn,) = Tcb.connect(("10.0.0.1", 40000), ("10.0.0.2", 80), 1, 0.0, **kw)
    b, queue = Tcb.accept(syn, 2, 0.0, **kw)
    queue = a.on_segment(queue[0], 0.0)
    block, left, got, segments = b"x" * (1 << 20), nbytes, 0, 0
    t0 = time.perf_counter()
    while got < nbytes:
        now = time.perf_counter() - t0
        if left > 0:
            n, segs = a.write(block[:left], now)
            left -= n
            queue += segs
        while queue:
            seg = queue.pop(0)
            if wire:
                seg = decode(seg.encode(), verify=True)
            segments += 1
            dst = b if seg.dport == 80 else a
            queue += dst.on_segment(seg, now)
        got += len(b.read())
        queue += b.on_timer(now) + a.on_timer(now)
    return segments / (time.perf_counter() - t0), segments


# ---- the run --------------------------------------------------------------------------------

def run(mbytes: int, mtu: int, rounds: int) -> dict:
    nbytes = mbytes * 10**6
    res: dict = {"mtu": mtu, "mbytes": mbytes, "rounds": []}
    b = VethBackend(capture=False)
    try:
        b.up(load_scenario_text(scenario(mtu)))
        kind = RawTcp if PY_SPY else ProfiledRawTcp
        plain = RawTcp("eth0", CORE_IP, CORE_MAC, netns=b.namespace("h1"), mtu=mtu,
                       offload=False)
        try:
            plain_runs = [core_sends(plain, b, nbytes) for _ in range(rounds)]
        finally:
            plain.close()
        stack = kind("eth0", CORE_IP, CORE_MAC, netns=b.namespace("h1"), mtu=mtu)
        res["gso"] = stack.gso is not None
        stack.listen(5002)
        try:
            for i in range(rounds):
                res["rounds"].append({
                    "kernel h1->h2 MB/s": kernel(b, 8 * nbytes, True),
                    "core sends MB/s": core_sends(stack, b, nbytes),
                    "core sends, no GSO MB/s": plain_runs[i],
                    "kernel h2->h1 MB/s": kernel(b, 8 * nbytes, False),
                    "core receives MB/s": core_receives(stack, b, nbytes)})
            if kind is RawTcp:
                res["time, core sends"] = pyspy_profile(lambda: core_sends(stack, b, nbytes))
                res["time, core receives"] = pyspy_profile(
                    lambda: core_receives(stack, b, nbytes))
                res["profiler"] = "py-spy (sampling, the loop thread)"
        finally:
            stack.close()
        if kind is ProfiledRawTcp:
            res["time, both directions"] = cprofile_shares(stack)
            res["profiler"] = "cProfile (the loop thread; its overhead inflates small calls)"
    finally:
        b.down()
    med = {k: statistics.median(r[k] for r in res["rounds"]) for k in res["rounds"][0]}
    res["median"] = med
    res["ratio sends"] = med["core sends MB/s"] / med["kernel h1->h2 MB/s"]
    res["ratio sends, no GSO"] = med["core sends, no GSO MB/s"] / med["kernel h1->h2 MB/s"]
    res["ratio receives"] = med["core receives MB/s"] / med["kernel h2->h1 MB/s"]
    objects, n = core_alone(nbytes // 4, wire=False)
    wire, _ = core_alone(nbytes // 4, wire=True)
    res["core alone"] = {"segments": n, "segments/s": round(objects),
                         "segments/s with the wire format": round(wire)}
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mbytes", type=int, default=32, help="MB per core transfer (kernel: 8x)")
    ap.add_argument("--mtu", type=int, default=1500)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    res = run(a.mbytes, a.mtu, a.rounds)
    if a.json:
        print(json.dumps(res, indent=1))
        return 0
    print(f"veth pair, MTU {a.mtu}, {a.rounds} round(s), median MB/s (Mbit/s):")
    for k, v in res["median"].items():
        print(f"  {k[:-5]:<16}{v:>9.1f} ({v * 8:,.0f})")
    print(f"ratio core/kernel: sends {res['ratio sends']:.2f}x "
          f"({res['ratio sends, no GSO']:.2f}x without GSO; GSO "
          f"{'on' if res['gso'] else 'unavailable'}), receives {res['ratio receives']:.2f}x")
    alone = res["core alone"]
    print(f"core alone (two TCBs in memory): {alone['segments/s']:,} segments/s, "
          f"{alone['segments/s with the wire format']:,} with encode + verified decode")
    for key in [k for k in res if k.startswith("time")]:
        print(f"{key} ({res['profiler']}):")
        for name, share in res[key].items():
            print(f"  {share:>6.1%}  {name}")
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
