"""RDMA WRITE and READ between two SAN ports on veth against plain kernel UDP sockets over the
same veth pair, in one run: bandwidth, message and frame rates, latency, and their ratios.

    python bench/san_veth.py [--rounds 3] [--seconds 1] [--parts bw,lat] [--size 65536]
                             [--mtus 1024,4096] [--depth 8] [--lat-size 64] [--profile]
                             [--timeout 300] [--json]   (root)

One veth pair h1 -- h2 between two namespaces (link MTU 9000, no impairment; checksum
offload off, as in every lab), made for the run and always removed, also on an error or
Ctrl-C. Every round, in this order, each test for ``--seconds``:

- **UDP stream** (the baseline): a Python process in h1 sends datagrams of the RDMA frames'
  payload (one path MTU: 1024, 4096 bytes) on a plain connected UDP socket as fast as it can,
  one in h2 receives them; datagrams/s and MB/s at the receiver, timed first to last.
- **UDP ping-pong**: one ``--lat-size`` datagram to an echo process and back, one at a time.
- **SAN bandwidth**: a ``port.SanPort`` in h1 (this process) and one in h2 (a process of its
  own: two SANIC nodes, as the UDP ends are two processes) with one RC QP pair per path MTU;
  RDMA WRITEs, then RDMA READs, of ``--size`` bytes from h1, ``--depth`` messages
  outstanding (the QP's ``max_outstanding``) and as many queued behind them; timed from the
  first post to the last completion, every completion checked SUCCESS.
- **SAN latency**: one ``--lat-size`` WRITE, then READ, at a time: post -> completion polled.

Columns as perftest's (``ib_write_bw``, ``ib_write_lat``): #bytes, #iterations (messages
completed; duration mode), BW average [MB/sec] (MB = 10^6 bytes), MsgRate [Mpps] (messages);
t_min, t_typical (p50), t_99 [usec]. Latencies are whole round trips, both the UDP echo and a
WRITE's post -> ACK -> completion (ib_write_lat would halve its ping-pong; ib_read_lat does
not). The ratios: bandwidth, the SAN's data frames/s (a WRITE's request packets, a READ's
responses: one path MTU of payload each) over the UDP stream's datagrams/s of the same
payload; latency, the SAN's p50 over the UDP ping-pong's. Also CPU microseconds per data
frame, both ends' processes together (``os.times``: user + system; the kernel's delivery to
the peer on a veth runs in the sender's system time). Figures are the medians of
``--rounds``. The issue's aim: the node reaches >= 0.5x of the UDP baseline's frame rate.
Not met (docs/san.md, "Performance on veth"): with the struct codec, RDMA WRITE 0.23x / 0.17x
and READ 0.40x / 0.24x at path MTU 1024 / 4096 (before it 0.12x / 0.11x and 0.24x / 0.18x).

``--profile``: py-spy (``.venv/bin/py-spy``) samples both nodes during one more WRITE and READ
run at the first path MTU, the samples grouped by what they were doing. Never a hang: no
completion for 30 s, or a run past ``--timeout``, ends it, and the lab goes with it. Keep
``--depth`` x frames per message under the ports' rings' 1024 slots: RC here has no flow
control, and a ring that overflows makes the QPs go back N again and again (a warning says so).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ftsslab.san.memory import PAGE, SEGMENT_SHIFT, Vmm  # noqa: E402
from ftsslab.san.qp import WcStatus, WrOpcode  # noqa: E402
from ftsslab.san.rkeys import Access  # noqa: E402
from ftsslab.san.verbs import CQ, SGE, Context, SendWR  # noqa: E402

LINK_MTU = 9000
H1_IP, H2_IP = "10.3.0.11", "10.3.0.12"  # the namespaces' own (kernel UDP)
SAN = {"h1": ("10.3.0.1", "02:5a:00:00:00:01"), "h2": ("10.3.0.2", "02:5a:00:00:00:02")}
BASE = 1 << SEGMENT_SHIFT  # segment 1's first byte
RW = Access.REMOTE_READ | Access.REMOTE_WRITE
QP_TIMEOUT = 0.2  # the QPs' retransmission timeout: a loaded box's scheduling gap is no loss
WAIT = 30.0  # no completion for this long: the run fails (it never hangs)
AIM = 0.5
SOL_PACKET, PACKET_STATISTICS = 263, 6

UDP_PEER = r"""
import json, os, socket, struct, sys, time
mode, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
def rcvtimeo(sec):  # a kernel timeout: no poll(2) before every recv as settimeout would add
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", int(sec),
                 int(sec % 1 * 1e6)))
def cpu():
    t = os.times()
    return t.user + t.system
if mode == "sink":
    s.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)  # SO_RCVBUFFORCE
    s.bind((ip, port)); rcvtimeo(20); print("ready", flush=True)
    buf = bytearray(65536); n = 0; first = last = c0 = 0.0
    try:
        s.recv_into(buf); first = last = time.perf_counter(); c0 = cpu(); n = 1
        rcvtimeo(0.5)
        while True:
            s.recv_into(buf); n += 1
            if not n & 63:
                last = time.perf_counter()
    except OSError:
        pass
    print(json.dumps({"n": n, "seconds": last - first, "cpu": max(0.0, cpu() - c0)}))
elif mode == "source":
    size, seconds = int(sys.argv[4]), float(sys.argv[5])
    s.connect((ip, port)); data = b"x" * size; n = drops = 0
    c0 = cpu(); end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(64):
            try:
                s.send(data); n += 1
            except OSError:
                drops += 1
    print(json.dumps({"n": n, "drops": drops, "cpu": cpu() - c0}))
elif mode == "echo":
    s.bind((ip, port)); rcvtimeo(20); print("ready", flush=True); buf = bytearray(65536)
    try:
        while k := s.recvfrom_into(buf):
            if not k[0]:
                break
            s.sendto(buf[:k[0]], k[1])
    except OSError:
        pass
else:  # ping
    size, seconds = int(sys.argv[4]), float(sys.argv[5])
    s.connect((ip, port)); rcvtimeo(2); data = b"p" * size; buf = bytearray(65536); lat = []
    lost = 0; end = time.perf_counter() + seconds
    while time.perf_counter() < end and len(lat) < 200000:
        t = time.perf_counter(); s.send(data)
        try:
            s.recv_into(buf)
        except OSError:
            lost += 1; continue
        lat.append(time.perf_counter() - t)
    s.send(b"")
    print(json.dumps({"lat": lat, "lost": lost}))
"""


def scenario() -> str:
    return f"""
name: san-veth-bench
nodes: {{h1: {{kind: host}}, h2: {{kind: host}}}}
links:
  - endpoints: [{{node: h1, interface: eth0, mac: "02:00:00:00:00:01", ipv4: {H1_IP}/24}},
                {{node: h2, interface: eth0, mac: "02:00:00:00:00:02", ipv4: {H2_IP}/24}}]
    mtu: {LINK_MTU}
"""


def cpu_now() -> float:
    t = os.times()
    return t.user + t.system


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def frames_per_message(size: int, mtu: int) -> int:
    return max(1, -(-size // mtu))


# ---- the UDP baseline ----------------------------------------------------------------------

class Children:
    """The processes this run started (each killed, by its own handle, at the end)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, ns: str, argv: list[str], **kw) -> subprocess.Popen:
        p = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def udp(self, ns: str, *args) -> subprocess.Popen:
        return self.start(ns, [sys.executable, "-c", UDP_PEER, *map(str, args)])

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)
        self.procs.clear()


def readline(p: subprocess.Popen, timeout: float) -> str:
    """One line of ``p``'s output, or TimeoutError (a child never hangs the run)."""
    assert p.stdout is not None
    if not select.select([p.stdout], [], [], timeout)[0]:
        raise TimeoutError(f"no answer from {p.args[3:5]} in {timeout:g} s")
    line = p.stdout.readline()
    if not line:
        raise RuntimeError(f"{p.args[3:5]} ended (exit {p.wait(10)})")
    return line


def udp_stream(kids: Children, b, size: int, seconds: float) -> dict:
    sink = kids.udp(b.namespace("h2"), "sink", H2_IP, 5201)
    readline(sink, 30)
    src = kids.udp(b.namespace("h1"), "source", H2_IP, 5201, size, seconds)
    sent = json.loads(readline(src, seconds + 30))
    got = json.loads(readline(sink, 30))
    n, dt = got["n"], got["seconds"] or float("nan")
    return {"bytes": size, "iterations": n, "seconds": dt, "mb_s": n * size / dt / 1e6,
            "mpps": n / dt / 1e6, "frames_s": n / dt, "all_frames_s": n / dt,
            "cpu_us_frame": (sent["cpu"] / max(1, sent["n"]) + got["cpu"] / n) * 1e6,
            "loss": 1 - n / max(1, sent["n"]), "sent": sent["n"]}


def udp_pingpong(kids: Children, b, size: int, seconds: float) -> dict:
    echo = kids.udp(b.namespace("h2"), "echo", H2_IP, 5202)
    readline(echo, 30)
    ping = kids.udp(b.namespace("h1"), "ping", H2_IP, 5202, size, seconds)
    got = json.loads(readline(ping, seconds + 60))
    lat = got["lat"]
    return {"bytes": size, "iterations": len(lat), **lat_figures(lat), "lost": got["lost"]}


def lat_figures(lat: list[float]) -> dict:
    return {"t_min": min(lat) * 1e6, "t_p50": pct(lat, 0.5) * 1e6, "t_p99": pct(lat, 0.99) * 1e6,
            "t_avg": statistics.fmean(lat) * 1e6}


# ---- the SAN nodes -------------------------------------------------------------------------

def make_context(pages: int) -> Context:
    vmm = Vmm(pages + 8)
    vmm.add_segment(1, esid=1)
    vmm.map_range(vmm.process(1), BASE, pages * PAGE)
    return Context(vmm)


def ring_drops(port) -> int:
    """Frames the kernel could not put in the port's ring since the last call."""
    _, drops = struct.unpack("II", port.ring.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    return drops


def port_mtu(mtus: list[int]) -> int:
    """What the ports' rings must hold: the largest RoCEv2 frame at the largest path MTU
    (Ether 14, IPv4 20, UDP 8, BTH 12, RETH 16, ICRC 4) -- not the link's 9000, whose 16 KiB
    slots would leave the 8 MiB ring 512 of them."""
    return max(mtus) + 80


def open_qps(ctx: Context, mtus: list[int], depth: int) -> tuple[CQ, dict]:
    """One RC QP per path MTU (IBA's path MTU is a QP's attribute; ``open_qp`` takes the
    context's at the moment)."""
    pd, cq, qps = ctx.pd(1), CQ(clock=time.perf_counter), {}
    for mtu in mtus:
        ctx.mtu = mtu
        qps[mtu] = pd.open_qp(cq, max_outstanding=depth, max_send_wr=4 * depth + 8)
    return cq, qps


def node_main(a: argparse.Namespace) -> int:
    """The responder node in h2 (``--node``): its port, QPs and key; then it answers
    ``stats`` lines on stdin with its counters, until stdin closes."""
    from ftsslab.san.port import SanPort

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the bench ends it
    mtus = [int(m) for m in a.mtus.split(",")]
    pages = max(16, -(-a.size // PAGE))
    ctx = make_context(pages)
    ip, mac = SAN["h2"]
    port = SanPort(ctx, "eth0", ip, mac, mtu=port_mtu(mtus))
    try:
        _, qps = open_qps(ctx, mtus, a.depth)
        pd = next(iter(qps.values())).pd
        key = port.call(pd.allocate_rkey)
        port.call(lambda: pd.bind_rkey(key, BASE, pages * PAGE, RW))
        port.resolve(SAN["h1"][0], timeout=30)
        print(json.dumps({"qpns": {m: q.qp_num for m, q in qps.items()}, "rkey": key}),
              flush=True)
        peer = json.loads(sys.stdin.readline())["qpns"]
        for mtu, qp in qps.items():
            port.call(lambda qp=qp, mtu=mtu: qp.connect(SAN["h1"][0], peer[str(mtu)],
                                                        time.monotonic(),
                                                        timeout=QP_TIMEOUT))
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            if line.strip() == "stats":
                with port.lock:
                    got = {"frames_in": port.frames_in, "frames_out": port.frames_out,
                           "dropped": port.dropped, "malformed": port.malformed,
                           "ring_drops": ring_drops(port), "cpu": cpu_now(),
                           "duplicates": sum(q.core.counters["duplicates"]
                                             for q in qps.values()),
                           "out_of_order": sum(q.core.counters["out_of_order"]
                                               for q in qps.values())}
                print(json.dumps(got), flush=True)
    finally:
        port.close()
    return 0


class San:
    """The requester node (h1, this process) and the responder node (h2, a child)."""

    def __init__(self, kids: Children, b, mtus: list[int], size: int, depth: int) -> None:
        from ftsslab.san.port import SanPort

        self.mtus, self.size, self.depth = mtus, size, depth
        pages = 2 * max(16, -(-size // PAGE))
        self.ctx = make_context(pages)
        ip, mac = SAN["h1"]
        self.port = SanPort(self.ctx, "eth0", ip, mac, netns=b.namespace("h1"),
                            mtu=port_mtu(mtus))
        self.cq, self.qps = open_qps(self.ctx, mtus, depth)
        flight = depth * frames_per_message(size, min(mtus))
        if flight > self.port.ring.nframes // 2:
            print(f"san_veth: {depth} x {size} bytes outstanding is {flight} frames in flight at "
                  f"MTU {min(mtus)}, near the ports' rings' {self.port.ring.nframes} slots: a "
                  f"ring that overflows makes the QPs go back N again and again", file=sys.stderr)
        self.node = kids.start(b.namespace("h2"), [
            sys.executable, str(Path(__file__).resolve()), "--node", "--mtus",
            ",".join(map(str, mtus)), "--size", str(size), "--depth", str(depth)],
            cwd=str(Path(__file__).resolve().parents[1]))
        hello = json.loads(readline(self.node, 60))
        self.rkey = hello["rkey"]
        self.port.resolve(SAN["h2"][0], timeout=30)
        for mtu, qp in self.qps.items():
            self.port.call(lambda qp=qp, mtu=mtu: qp.connect(
                SAN["h2"][0], hello["qpns"][str(mtu)], time.monotonic(), timeout=QP_TIMEOUT))
        self._tell({"qpns": {m: q.qp_num for m, q in self.qps.items()}})
        readline(self.node, 30)
        self.wr_id = 0

    def _tell(self, msg) -> None:
        assert self.node.stdin is not None
        self.node.stdin.write((msg if isinstance(msg, str) else json.dumps(msg)) + "\n")
        self.node.stdin.flush()

    def peer_stats(self) -> dict:
        self._tell("stats")
        return json.loads(readline(self.node, 30))

    def local_stats(self) -> dict:
        p = self.port
        with p.lock:
            return {"frames_in": p.frames_in, "frames_out": p.frames_out,
                    "ring_drops": ring_drops(p), "cpu": cpu_now(),
                    "resent": sum(q.core.counters["resent"] for q in self.qps.values()),
                    "timeouts": sum(q.core.counters["timeouts"] for q in self.qps.values())}

    def _wr(self, op: WrOpcode, size: int, mtu: int) -> SendWR:
        self.wr_id += 1
        local = BASE if op is WrOpcode.RDMA_WRITE else BASE + self.size
        return SendWR(self.wr_id, op, (SGE(local, size),), remote_addr=BASE, rkey=self.rkey)

    def _completions(self, want: int) -> list:
        """At least one completion (up to ``want``), every one SUCCESS."""
        got: list = []
        self.port.wait(lambda: got.extend(self.cq.poll(want)) or bool(got), WAIT)
        bad = [w for w in got if w.status is not WcStatus.SUCCESS]
        if bad:
            raise RuntimeError(f"a work request failed: {bad[0]}")
        return got

    def bw(self, op: WrOpcode, mtu: int, seconds: float) -> dict:
        qp, port, size, depth = self.qps[mtu], self.port, self.size, self.depth
        self.cq.stamps.clear()
        peer0, me0 = self.peer_stats(), self.local_stats()
        posted = done = 0
        t0 = time.perf_counter()
        end = t0 + seconds
        while True:
            room = 2 * depth - (posted - done)
            if room > 0 and time.perf_counter() < end:
                wrs = [self._wr(op, size, mtu) for _ in range(room)]
                port.call(lambda wrs=wrs: [x for w in wrs
                                           for x in qp.post_send(w, time.monotonic())])
                posted += room
            if done == posted:
                break
            if time.perf_counter() > end + WAIT:
                raise TimeoutError(f"{op.name} at MTU {mtu}: {posted - done} messages still "
                                   f"outstanding {WAIT:g} s after the last post")
            done += len(self._completions(posted - done))
        elapsed = self.cq.stamps[-1][0] - t0
        me1, peer1 = self.local_stats(), self.peer_stats()
        fpm = frames_per_message(size, mtu)
        data = done * fpm
        other = data if op is WrOpcode.RDMA_WRITE else done  # ACKs / READ requests
        cpu = (me1["cpu"] - me0["cpu"]) + (peer1["cpu"] - peer0["cpu"])
        return {"bytes": size, "iterations": done, "seconds": elapsed,
                "mb_s": done * size / elapsed / 1e6, "mpps": done / elapsed / 1e6,
                "frames_s": data / elapsed, "all_frames_s": (data + other) / elapsed,
                "cpu_us_frame": cpu / data * 1e6,
                "resent": me1["resent"] - me0["resent"],
                "timeouts": me1["timeouts"] - me0["timeouts"],
                "ring_drops": me1["ring_drops"] + peer1["ring_drops"],
                "frames_out": me1["frames_out"] - me0["frames_out"]
                + peer1["frames_out"] - peer0["frames_out"],
                "duplicates": peer1["duplicates"] - peer0["duplicates"]}

    def lat(self, op: WrOpcode, mtu: int, size: int, seconds: float) -> dict:
        qp, port = self.qps[mtu], self.port
        lat: list[float] = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end and len(lat) < 200000:
            wr = self._wr(op, size, mtu)
            t = time.perf_counter()
            port.call(lambda wr=wr: qp.post_send(wr, time.monotonic()))
            self._completions(1)
            lat.append(time.perf_counter() - t)
        self.cq.stamps.clear()
        return {"bytes": size, "iterations": len(lat), **lat_figures(lat)}

    def close(self) -> None:
        try:
            if self.node.stdin is not None:
                self.node.stdin.close()
            self.node.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.port.close()


# ---- where the time goes ----------------------------------------------------------------

PY_SPY = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
AREAS = (  # (area, substrings of a sampled frame), first match from the leaf up wins
    ("send(2) on the packet socket (with the peer kernel's delivery)", ("SanPort._tx",)),
    ("reading the ring", ("PacketRing.frames",)),
    ("ICRC (build and verify)", ("_icrc_crc", "icrc_ok")),
    ("building frames (packets.frame, roce.Template)", ("Template.build", "_FRAME_HEAD",
                                                       "frame (ftsslab/san/packets")),
    ("parsing frames (packets.packet)", ("packet (ftsslab/san/packets", "parse_general",
                                         "parse_roce", "_parse_headers", "_rdeth", "_deth",
                                         "_reth", "_atomic", "_aeth", "_imm", "inet_ntoa")),
    ("RC QP (qp.py)", ("RcQp.", "_Req.", "psn_diff", "psn_add", "ack_kind")),
    ("verbs, memory, keys (gather, scatter, checks)", ("QP.", "Context.", "Reach.", "RKeys.",
                                                       "PhysicalMemory.", "PageTable.",
                                                       "SegmentTable.", "pieces", "CQ.")),
    ("port loop, lock, waking the application", ("SanPort.", "Condition.", "_acquire",
                                                 "eventfd")),
)


WAITING = "(waiting: in poll(2) or for a completion; not in the shares)"


def area(frame: str) -> str:
    return next((name for name, keys in AREAS if any(k in frame for k in keys)), "other")


def _poll_line() -> int:
    """The line of ``SanPort._loop``'s poll(2), whose samples are waiting, not work."""
    import inspect

    from ftsslab.san.port import SanPort

    lines, first = inspect.getsourcelines(SanPort._loop)
    return first + next(i for i, text in enumerate(lines) if "poll.poll(" in text)


def waiting(leaf: str, poll_line: int) -> bool:
    return leaf.startswith(("Condition.wait (", "SanPort.wait (")) or (
        leaf.startswith("SanPort._loop (") and leaf.endswith(f":{poll_line})"))


def profile(san: San, op: WrOpcode, mtu: int, seconds: float) -> dict:
    """Shares of py-spy's samples per area, in each node, during one more ``op`` bw run."""
    outs = {"requester (h1)": os.getpid(), "responder (h2)": san.node.pid}
    files, spies = {}, []
    try:
        for name, pid in outs.items():
            files[name] = tempfile.mktemp(suffix=".txt")
            spies.append(subprocess.Popen([PY_SPY, "record", "--pid", str(pid), "--rate", "400",
                                           "--nonblocking", "--format", "raw", "--output",
                                           files[name]], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, start_new_session=True))
        time.sleep(1.0)  # attached
        san.bw(op, mtu, seconds)
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)
        for spy in spies:
            try:
                spy.wait(60)
            except subprocess.TimeoutExpired:
                spy.kill()
    res, poll_line = {}, _poll_line()
    for name, path in files.items():
        counts: dict[str, int] = {}
        idle = 0
        try:
            with open(path) as f:
                for line in f:
                    stack, _, n = line.rstrip().rpartition(" ")
                    frames = stack.split(";")
                    if not any("SanPort" in fr or "San." in fr for fr in frames):
                        continue  # (not the node's work: the control channel, py-spy's own)
                    if waiting(frames[-1], poll_line):
                        idle += int(n)
                        continue
                    leaf = next((a for fr in reversed(frames) if (a := area(fr)) != "other"),
                                "other")
                    counts[leaf] = counts.get(leaf, 0) + int(n)
        finally:
            if os.path.exists(path):
                os.unlink(path)
        total = sum(counts.values()) or 1
        res[name] = {k: round(v / total, 3) for k, v in sorted(counts.items(),
                                                                 key=lambda kv: -kv[1])}
        res[name][WAITING] = round(idle / (total + idle), 3)
    return res


# ---- the run -------------------------------------------------------------------------------

def one_round(kids: Children, b, san: San, a: argparse.Namespace, mtus: list[int]) -> dict:
    res: dict = {}
    if "bw" in a.parts:
        for mtu in mtus:
            res[f"udp stream {mtu}"] = udp_stream(kids, b, mtu, a.seconds)
    if "lat" in a.parts:
        res["udp ping-pong"] = udp_pingpong(kids, b, a.lat_size, a.seconds)
    if "bw" in a.parts:
        for mtu in mtus:
            res[f"write bw {mtu}"] = san.bw(WrOpcode.RDMA_WRITE, mtu, a.seconds)
            res[f"read bw {mtu}"] = san.bw(WrOpcode.RDMA_READ, mtu, a.seconds)
    if "lat" in a.parts:
        res["write lat"] = san.lat(WrOpcode.RDMA_WRITE, mtus[0], a.lat_size, a.seconds)
        res["read lat"] = san.lat(WrOpcode.RDMA_READ, mtus[0], a.lat_size, a.seconds)
    kids.close()  # the UDP processes of this round
    return res


def run(a: argparse.Namespace) -> dict:
    from ftsslab.lab.scenario import load_scenario_text
    from ftsslab.lab.veth.backend import VethBackend

    mtus = [int(m) for m in a.mtus.split(",")]
    if any(m not in (256, 512, 1024, 2048, 4096) for m in mtus):
        raise SystemExit("--mtus: IBA path MTUs are 256, 512, 1024, 2048, 4096")
    res: dict = {"parts": sorted(a.parts), "link_mtu": LINK_MTU, "mtus": mtus, "size": a.size,
                 "depth": a.depth, "lat_size": a.lat_size, "seconds": a.seconds, "rounds": []}
    b, kids, udp_kids, san = VethBackend(capture=False), Children(), Children(), None
    t0 = time.monotonic()
    finished = threading.Event()

    def watchdog() -> None:  # a signal would wait for the main thread, which may be stuck
        if finished.wait(a.timeout):
            return
        print(f"san_veth: more than {a.timeout:g} s: stopped, the lab removed", file=sys.stderr,
              flush=True)
        try:
            udp_kids.close()
            kids.close()
            b.down()
        finally:
            os._exit(3)

    threading.Thread(target=watchdog, name="watchdog", daemon=True).start()
    try:
        b.up(load_scenario_text(scenario()))
        san = San(kids, b, mtus, a.size, a.depth)
        for _ in range(a.rounds):
            res["rounds"].append(one_round(udp_kids, b, san, a, mtus))
        if a.profile and PY_SPY:
            for op in (WrOpcode.RDMA_WRITE, WrOpcode.RDMA_READ):
                res[f"time, {op.name} bw {mtus[0]}"] = profile(san, op, mtus[0], 2 * a.seconds)
        elif a.profile:
            res["time"] = "py-spy missing: .venv/bin/pip install py-spy"
    finally:
        try:
            if san is not None:
                san.close()
        finally:
            udp_kids.close()
            kids.close()
            b.down()
            finished.set()
    res["wall_seconds"] = time.monotonic() - t0
    res["median"] = med = {k: {f: statistics.median(r[k][f] for r in res["rounds"])
                               for f in res["rounds"][0][k]} for k in res["rounds"][0]}
    ratios = {}
    for mtu in mtus if "bw" in a.parts else ():
        udp = med[f"udp stream {mtu}"]
        for op in ("write", "read"):
            s = med[f"{op} bw {mtu}"]
            ratios[f"{op} bw {mtu}"] = {"frames": s["frames_s"] / udp["frames_s"],
                                        "cpu": s["cpu_us_frame"] / udp["cpu_us_frame"]}
    for op in ("write", "read") if "lat" in a.parts else ():
        ratios[f"{op} lat"] = {"p50": med[f"{op} lat"]["t_p50"] / med["udp ping-pong"]["t_p50"],
                               "p99": med[f"{op} lat"]["t_p99"] / med["udp ping-pong"]["t_p99"]}
    res["ratios"] = ratios
    bw = {k: v["frames"] for k, v in ratios.items() if " bw " in k}
    if bw:
        res["aim"] = {"frame_rate_ratio_at_least": AIM, "met": all(v >= AIM for v in bw.values()),
                      "met_by": sorted(k for k, v in bw.items() if v >= AIM)}
    return res


def report(res: dict) -> None:
    from rich.console import Console

    med = res["median"]
    console = Console(width=None if sys.stdout.isatty() else 150)
    if "aim" in res:
        bw_table(console, res)
    if "write lat" in med:
        lat_table(console, res)
    for key in [k for k in res if k.startswith("time")]:
        if isinstance(res[key], str):
            console.print(f"{key}: {res[key]}")
            continue
        for node, shares in res[key].items():
            console.print(f"{key}, {node} (py-spy samples of its threads):")
            for name, share in shares.items():
                console.print(f"  {share:>6.1%}  {name}")
    console.print(f"({len(res['rounds'])} round(s), {res['wall_seconds']:.0f} s)")


def bw_table(console, res: dict) -> None:
    from rich.table import Table

    med, ratios, n, mtus = res["median"], res["ratios"], len(res["rounds"]), res["mtus"]
    t = Table(title=f"bandwidth, veth MTU {res['link_mtu']}, medians of {n} round(s) of "
                    f"{res['seconds']:g} s; {res['depth']} outstanding")
    for col in ("test", "path MTU", "#bytes", "#iterations", "BW average [MB/sec]",
                "MsgRate [Mpps]", "data frames/s", "frame rate / UDP", "CPU µs/frame",
                "CPU / UDP", "resends"):
        t.add_column(col, justify="left" if col == "test" else "right")
    for mtu in mtus:
        u = med[f"udp stream {mtu}"]
        t.add_row("UDP stream", "-", f"{u['bytes']}", f"{u['iterations']:,.0f}",
                  f"{u['mb_s']:,.1f}", f"{u['mpps']:.4f}", f"{u['frames_s']:,.0f}", "1.00",
                  f"{u['cpu_us_frame']:.1f}", "1.00", f"loss {u['loss']:.1%}")
        for op in ("write", "read"):
            s, r = med[f"{op} bw {mtu}"], ratios[f"{op} bw {mtu}"]
            t.add_row(f"RDMA {op.upper()}", f"{mtu}", f"{s['bytes']}",
                      f"{s['iterations']:,.0f}", f"{s['mb_s']:,.1f}", f"{s['mpps']:.4f}",
                      f"{s['frames_s']:,.0f}", f"{r['frames']:.2f}", f"{s['cpu_us_frame']:.1f}",
                      f"{r['cpu']:.2f}", f"{s['resent']:.0f}")
    console.print(t)
    aim = res["aim"]
    bw = {k: v["frames"] for k, v in ratios.items() if " bw " in k}
    console.print(f"aim (frame rate >= {AIM}x the UDP stream's): "
                  f"{'met' if aim['met'] else 'not met'} -- "
                  + ", ".join(f"{k} {v:.2f}x" for k, v in bw.items()))


def lat_table(console, res: dict) -> None:
    from rich.table import Table

    med, ratios, n = res["median"], res["ratios"], len(res["rounds"])
    t = Table(title=f"latency (whole round trips), medians of {n} round(s)")
    for col in ("test", "#bytes", "#iterations", "t_min [usec]", "t_typical (p50) [usec]",
                "t_99 [usec]", "p50 / UDP", "p99 / UDP"):
        t.add_column(col, justify="left" if col == "test" else "right")
    u = med["udp ping-pong"]
    t.add_row("UDP ping-pong", f"{u['bytes']}", f"{u['iterations']:,.0f}", f"{u['t_min']:.1f}",
              f"{u['t_p50']:.1f}", f"{u['t_p99']:.1f}", "1.00", "1.00")
    for op in ("write", "read"):
        s, r = med[f"{op} lat"], ratios[f"{op} lat"]
        t.add_row(f"RDMA {op.upper()}", f"{s['bytes']}", f"{s['iterations']:,.0f}",
                  f"{s['t_min']:.1f}", f"{s['t_p50']:.1f}", f"{s['t_p99']:.1f}",
                  f"{r['p50']:.2f}", f"{r['p99']:.2f}")
    console.print(t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=1.0, help="per test and round")
    ap.add_argument("--size", type=int, default=65536, help="bytes per RDMA message (bw)")
    ap.add_argument("--mtus", default="1024,4096", help="path MTUs (bw)")
    ap.add_argument("--depth", type=int, default=8, help="messages outstanding (bw)")
    ap.add_argument("--lat-size", type=int, default=64, help="bytes per message (lat)")
    ap.add_argument("--parts", default="bw,lat", type=lambda s: set(s.split(",")),
                    help="which parts to run: bw, lat")
    ap.add_argument("--profile", action="store_true",
                    help="py-spy both nodes during one more WRITE and READ bw run")
    ap.add_argument("--timeout", type=float, default=300, help="the whole run's limit [s]")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--node", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.node:
        return node_main(a)

    res = run(a)
    if a.json:
        print(json.dumps(res, indent=1))
    else:
        report(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
