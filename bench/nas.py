# SPDX-License-Identifier: GPL-2.0-or-later
"""Benchmark of seed 002's NAS cluster on veth (issue 10): handoff hold window, throughput
through the VIP, connections per second through the switch's placement.

    python bench/nas.py [--handoffs 1000] [--rounds 5] [--conns 200]
                        [--parts handoff,throughput,cps] [--xap udp|tcp-option]
                        [--tch segments|messages [--predictive]] [--json]   (root)

One lab (``bench/nas-bench.yaml``: client c1, switch s1 owning the VIP, devices d1/d2, a
host h3 on the switch's bridge, and a plain veth pair h1 -- h2), up once, brought down also
on an error or Ctrl-C; in it, in order:

1. **handoff**: one unmodified kernel TCP connection from c1 (a Python ``http.client``
   keep-alive loop of GET /mid.bin, 4 MiB, read as fast as it can, SHA-256 of every
   response, reconnecting forbidden) is handed d1 -> d2 -> d1 ... ``--handoffs`` times
   through the devices' control sockets, each after the previous one's ``handoff-end``.
   The *hold window* runs from the first device's ``freeze`` event (logged once the flow
   is held, checkpointed and closed) to the first frame the second device sends to the
   client (the window probe of leaving repair mode), from an AF_PACKET capture in c1's
   namespace: kernel receive timestamps (SO_TIMESTAMPNS, CLOCK_REALTIME, mapped onto the
   events' CLOCK_MONOTONIC just before each handoff), the devices told apart by source
   MAC. Also: to the second device's first data frame; freeze -> morph from the events
   alone, split into its TCH/XAP phases; the client-visible gap (the first device's last
   frame to the second device's first); the devices' own handoff-start -> handoff-end;
   the outcomes; RST frames either way; TCP counter deltas of c1 (and of the devices);
   the responses' digests against the volume file.
2. **throughput**: curl in c1 downloads /big.bin (128 MiB) from the VIP (switch bridge +
   nftables entry, d1's device process) vs curl in h1 from a server in h2 over the plain
   veth pair, as the lab makes host links (checksum offload off: what c1's link has too;
   the device links keep offload, see ``KindSpec.keeps_offload``) and, the *kernel* arm,
   with offload and TSO on at both ends as the kernel makes a veth pair. That server
   mirrors the device's I/O: Python, non-blocking socket with
   SO_SNDBUF 256 KiB, the same file read in 256 KiB ``pread`` chunks and ``send`` from user
   space, waiting in ``select`` when the socket is full. A third arm runs that server in h3,
   a host on the switch's bridge: VIP/bridge is the device process and its nftables entry,
   bridge/plain the switch hop. Median of interleaved rounds (after one warm-up round).
3. **cps**: sequential short connections from c1 (bind a fixed source port, GET
   /small.bin with ``Connection: close``, read to EOF) to the VIP. *placed*: every SYN
   meets no entry, is dropped by the ingress chain, placed on d1 by the switch's control
   process (nftables rule added, SYN re-sent). *pre-made*: the same client, ports, device
   and switch data path, but each port's entry is put into the kernel table beforehand
   and the control process restarted so it knows them (a SYN then only counts as "seen
   with entry"). The difference is exactly the placement on the SYN's path; everything
   else a connection costs (the device's accept/HTTP/close, the entries' expiry 2 s
   after the close) is in both, and each arm starts on an empty table and sees only the
   entries it makes. A plain host would swap the device process for another server and
   measure that instead. Median of interleaved rounds (after one warm-up round).

Goals of the issue: hold p50 < 5 ms, 0 RST, 0 client retransmits; throughput >= 0.8x.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import select
import socket
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ftsslab.lab.model import ForwardingEntry  # noqa: E402
from ftsslab.lab.scenario import load_scenario  # noqa: E402
from ftsslab.lab.veth import names  # noqa: E402
from ftsslab.lab.veth.backend import VethBackend  # noqa: E402
from ftsslab.lab.veth.control import control_request  # noqa: E402
from ftsslab.lab.veth.netns import call_in_netns, set_checksum_offload  # noqa: E402
from ftsslab.lab.veth.switchd import CHAIN, TABLE, Nft, entry_rule, validate_entry  # noqa: E402
from ftsslab.nas.bpf import attach, tcp_filter  # noqa: E402
from ftsslab.nas.cluster import TCH_EMBODIMENTS, XAP_CARRIERS  # noqa: E402

SCENARIO = Path(__file__).resolve().parent / "nas-bench.yaml"
VIP, CLIENT_IP, PLAIN_IP, BRIDGED_IP = "10.0.0.100", "10.0.0.1", "10.9.0.2", "10.0.0.50"
MACS = {"d1": "02:00:00:00:0d:01", "d2": "02:00:00:00:0d:02"}
D1_PORT = "p2"  # s1's port toward d1
SO_TIMESTAMPNS, SO_RCVBUFFORCE = 35, 33
SOL_PACKET, PACKET_STATISTICS, ETH_P_ALL = 263, 6, 3
RST = 0x04
CPS_PORTS = 10000  # the cps clients' source ports start here (below the ephemeral range)

KEEPALIVE = r"""
import hashlib, http.client, json, os, sys, time
out, path, stop = sys.argv[1:4]
conn = http.client.HTTPConnection(sys.argv[4], 80, timeout=30)
conn.auto_open = 0  # never reconnect behind our back: one connection or an error
conn.connect()
port = conn.sock.getsockname()[1]
with open(out + ".tmp", "w") as f:
    f.write(str(port))
os.rename(out + ".tmp", out + ".port")
digests, n, total, err, t0 = {}, 0, 0, None, time.monotonic()
try:
    while not os.path.exists(stop):
        conn.request("GET", path)
        r = conn.getresponse()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}")
        h = hashlib.sha256()
        while b := r.read(65536):
            h.update(b)
            total += len(b)
        d = h.hexdigest()
        digests[d] = digests.get(d, 0) + 1
        n += 1
        if conn.sock is None or conn.sock.getsockname()[1] != port:
            raise RuntimeError("the connection changed")
except Exception as exc:
    err = repr(exc)
with open(out + ".tmp", "w") as f:
    json.dump({"port": port, "responses": n, "bytes": total, "digests": digests,
               "error": err, "seconds": time.monotonic() - t0}, f)
os.rename(out + ".tmp", out)
"""

CPS = r"""
import json, os, socket, sys, time
ip, vip, port0, count, path, go, out = sys.argv[1:8]
port0, count = int(port0), int(count)
req = f"GET {path} HTTP/1.1\r\nHost: {vip}\r\nConnection: close\r\n\r\n".encode()
lat, errors = [], []
while not os.path.exists(go):
    time.sleep(0.001)
t0 = time.monotonic()
for p in range(port0, port0 + count):
    t = time.monotonic()
    try:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.settimeout(10)
            s.bind((ip, p))
            s.connect((vip, 80))
            s.sendall(req)
            got = b""
            while b := s.recv(65536):
                got += b
        if not got.startswith(b"HTTP/1.1 200"):
            errors.append(f"{p}: {got[:40]!r}")
    except OSError as exc:
        errors.append(f"{p}: {exc}")
    lat.append(time.monotonic() - t)
t1 = time.monotonic()
with open(out + ".tmp", "w") as f:
    json.dump({"start": t0, "end": t1, "lat": lat, "errors": errors}, f)
os.rename(out + ".tmp", out)
"""

PLAIN_SERVER = r"""
import os, select, socket, sys
ip, path, ready = sys.argv[1:4]
CHUNK = 256 * 1024
size = os.path.getsize(path)
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((ip, 80))
ls.listen(16)
open(ready, "w").close()
while True:
    c, _ = ls.accept()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 * 1024)
    req = b""
    while b"\r\n\r\n" not in req and (b := c.recv(65536)):
        req += b
    c.setblocking(False)
    out = f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n".encode()
    offset = 0
    while True:
        while out:
            try:
                n = c.send(out)
            except BlockingIOError:
                select.select([], [c], [])
                continue
            out = out[n:]
        if offset >= size:
            break
        fd = os.open(path, os.O_RDONLY)
        out = os.pread(fd, CHUNK, offset)
        os.close(fd)
        offset += len(out)
    c.close()
"""


# ---- the lab ------------------------------------------------------------------------------------

class Lab:
    def __init__(self, backend: VethBackend) -> None:
        self.b = backend
        self.dir = names.lab_dir(backend.lab_id)
        self._events = {}

    def ns(self, node: str) -> str:
        return self.b.namespace(node)

    def py(self, node: str, code: str, *args: str) -> None:
        self.b.exec(node, (sys.executable, "-c", code, *args), 1, background=True)

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def wait_file(self, name: str, timeout: float = 60.0) -> str:
        path, deadline = self.path(name), time.monotonic() + timeout
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: no {path} after {timeout:g}s")
            time.sleep(0.002)
        return path

    def ask(self, node: str, req: dict) -> dict:
        return control_request(self.dir, node, req)

    def events(self, node: str) -> list[dict]:
        """The events ``node`` logged since the last call (whole lines only: the process may
        be in the middle of writing one)."""
        if node not in self._events:
            self._events[node] = [open(self.path(f"{node}.events")), ""]  # noqa: SIM115
        tail = self._events[node]
        *lines, tail[1] = (tail[1] + tail[0].read()).split("\n")
        return [json.loads(line) for line in lines]

    def close(self) -> None:
        for f, _ in self._events.values():
            f.close()


def counters(ns: str) -> dict[str, int]:
    """TCP counters of namespace ``ns`` (/proc/net/snmp "Tcp", /proc/net/netstat "TcpExt")."""
    def read() -> dict[str, int]:
        out = {}
        for name in ("snmp", "netstat"):
            with open(f"/proc/thread-self/net/{name}") as f:
                lines = f.read().splitlines()
            for head, vals in zip(lines[::2], lines[1::2], strict=True):
                proto = head.split(":")[0]
                if proto in ("Tcp", "TcpExt"):
                    out |= {f"{proto}.{k}": int(v) for k, v in
                            zip(head.split()[1:], vals.split()[1:], strict=True)}
        return out
    return call_in_netns(ns, read)


def delta(before: dict, after: dict, keys: tuple[str, ...]) -> dict[str, int]:
    return {k.split(".")[1]: after.get(k, 0) - before.get(k, 0) for k in keys}


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def spread(values: list[float]) -> dict:
    return {"n": len(values), "p50": pct(values, 0.5), "p95": pct(values, 0.95),
            "max": max(values) if values else None}


# ---- capture in the client's namespace ----------------------------------------------------------

def _from_device(mac: str, port: int) -> bytes:
    """BPF: frames from ``mac`` with IPv4 src VIP, TCP 80 -> ``port`` (first 128 bytes)."""
    m = bytes.fromhex(mac.replace(":", ""))
    ins = [(0x20, 6, struct.unpack("!I", m[:4])[0]), (0x28, 10, struct.unpack("!H", m[4:])[0]),
           (0x28, 12, 0x0800), (0x30, 23, socket.IPPROTO_TCP),
           (0x20, 26, struct.unpack("!I", socket.inet_aton(VIP))[0])]
    prog = []
    for code, k, value in ins:
        prog += [(code, 0, 0, k), (0x15, 0, None, value)]
    prog += [(0xB1, 0, 0, 14), (0x48, 0, 0, 14), (0x15, 0, None, 80),
             (0x48, 0, 0, 16), (0x15, 0, None, port), (0x06, 0, 0, 128), (0x06, 0, 0, 0)]
    drop = len(prog) - 1
    return b"".join(struct.pack("HBBI", c, jt, drop - i - 1 if jf is None else jf, k)
                    for i, (c, jt, jf, k) in enumerate(prog))


def _packet_socket(code: bytes, rcvbuf: int = 64 << 20) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    attach(s, code)  # before bind: no unfiltered frame gets in
    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.bind(("eth0", ETH_P_ALL))
    s.setblocking(False)
    return s


def _stamp(sock: socket.socket) -> tuple[float, bytes] | None:
    """(kernel receive time, CLOCK_REALTIME; frame) of the next queued frame, or None."""
    try:
        data, anc, _, _ = sock.recvmsg(128, socket.CMSG_SPACE(16))
    except BlockingIOError:
        return None
    for level, kind, raw in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, nsec = struct.unpack("qq", raw[:16])
            return sec + nsec * 1e-9, data
    raise RuntimeError("a frame without its receive timestamp")


def _payload(frame: bytes) -> int:
    ihl = (frame[14] & 0xF) * 4
    return int.from_bytes(frame[16:18]) - ihl - (frame[14 + ihl + 12] >> 4) * 4


def _first_frames(sock: socket.socket, deadline: float) -> tuple:
    """The first frame queued on ``sock`` and its first one with payload (each None if it
    does not come before ``deadline``)."""
    first = data = None
    while data is None:
        got = _stamp(sock)
        if got is None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([sock], [], [], left)[0]:
                break
            continue
        first = first or got
        if _payload(got[1]) > 0:
            data = got
    return first, data


def _drops(sock: socket.socket) -> int:
    return struct.unpack("II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))[1]


def clock_offset() -> float:
    """CLOCK_REALTIME - CLOCK_MONOTONIC, from the tightest of a few paired reads."""
    best = None
    for _ in range(5):
        m1, r, m2 = time.monotonic(), time.time(), time.monotonic()
        if best is None or m2 - m1 < best[0]:
            best = (m2 - m1, r - (m1 + m2) / 2)
    return best[1]


# ---- 1. handoffs --------------------------------------------------------------------------------

# where freeze -> morph goes: (name, node role, event kind, new TCH state) of each phase's end
# the handoff's phases from the events, by XAP carrier: (name, role, event kind, new TCH state)
PHASES = {
    "udp": (("state+SET", "second", "tch", "RESTORING"), ("restore", "second", "tch", "SET_RCVD"),
            ("SET+ACK", "first", "tch", "SWITCHING"), ("XAP", "first", "xap", None),
            ("END", "second", "morph", None)),
    "tcp-option": (("state+SET", "second", "tch", "RESTORING"),
                   ("restore+claim", "second", "xap", None), ("SET", "second", "tch", "SET_RCVD"),
                   ("SET+ACK", "first", "tch", "SWITCHING"), ("END", "second", "morph", None)),
    # the second embodiment (tch: messages, Fig. 6): Open, restore + Open Response, XAP,
    # Complete + Ack, Done
    "messages": (("Open", "second", "tch", "OPEN"), ("restore", "second", "tch", "ACTIVE"),
                 ("XAP", "first", "xap", None), ("Complete+Ack", "first", "tch", "DONE"),
                 ("Done", "second", "morph", None)),
    # a predictive session's Handoff (check 16): Handoff, restore + Ack, XAP, ... Done
    "predictive": (("Handoff+restore+XAP", "first", "xap", None),
                   ("Complete+Ack", "first", "tch", "DONE"), ("Done", "second", "morph", None)),
}


def _phases(ev: list[dict], first: str, second: str, freeze: float,
            phases: tuple) -> dict[str, float]:
    out, t = {}, freeze
    for name, role, kind, state in phases:
        node = first if role == "first" else second
        end = next((e["t"] for e in ev if e["node"] == node and e["kind"] == kind
                    and (state is None or e.get("new") == state) and e["t"] >= t), None)
        if end is None:
            return out
        out[name], t = (end - t) * 1e3, end
    return out


def _handoff(lab: Lab, port: int, owner: str, to: str, phases: tuple) -> dict:
    """Hand the connection from ``owner`` to ``to``; wait for the first's ``handoff-end``."""
    c1 = lab.ns("c1")
    old, new = (call_in_netns(c1, _packet_socket, _from_device(MACS[n], port))
                for n in (owner, to))
    rec = {"from": owner, "to": to}
    try:
        off = clock_offset()
        reply = lab.ask(owner, {"op": "handoff", "to": to, "client_port": port})
        if not reply.get("ok"):
            return rec | {"outcome": f"refused: {reply.get('error')}"}
        ev, end, deadline = [], None, time.monotonic() + 10
        while end is None and time.monotonic() < deadline:
            for node in (owner, to):
                for e in lab.events(node):
                    ev.append(e)
                    if e["kind"] == "handoff-end" and node == owner:
                        end = e
            if end is None:
                time.sleep(0.0005)
        if end is None:
            return rec | {"outcome": "no handoff-end in 10 s"}
        rec |= {"outcome": end["outcome"], "reason": end["reason"], "held": end["held"],
                "device_ms": end["ms"]}
        freeze = next((e["t"] for e in ev if e["kind"] == "freeze" and e["node"] == owner), None)
        morph = next((e["t"] for e in ev if e["kind"] == "morph" and e["node"] == to), None)
        if end["outcome"] != "HANDED_OFF" or freeze is None:
            return rec
        first, data = _first_frames(new, time.monotonic() + 2.0)
        last = None
        while (got := _stamp(old)) is not None:
            last = got
        if first is not None:
            rec |= {"hold_ms": (first[0] - off - freeze) * 1e3, "first_len": _payload(first[1])}
            if last is not None:
                rec["gap_ms"] = (first[0] - last[0]) * 1e3
        if data is not None:
            rec["hold_data_ms"] = (data[0] - off - freeze) * 1e3
        if morph is not None:
            rec |= {"freeze_morph_ms": (morph - freeze) * 1e3,
                    "phases_ms": _phases(ev, owner, to, freeze, phases)}
        return rec
    finally:
        rec["capture_drops"] = _drops(old) + _drops(new)
        old.close()  # ~10 ms each (packet_release waits for an RCU grace period)
        new.close()


def handoffs(lab: Lab, count: int, phases: str) -> dict:
    stop, out = lab.path("ka.stop"), lab.path("ka.json")
    rst = call_in_netns(lab.ns("c1"), _packet_socket, tcp_filter(port=80, any_flags=RST),
                        1 << 20)
    lab.py("c1", KEEPALIVE, out, "/mid.bin", stop, VIP)
    port = int(Path(lab.wait_file("ka.json.port")).read_text())
    for node in ("d1", "d2"):
        lab.events(node)
    time.sleep(0.3)  # the download under way
    before = {n: counters(lab.ns(n)) for n in ("c1", "d1", "d2")}
    owner, recs, t0 = "d1", [], time.monotonic()
    for i in range(count):
        rec = {"i": i} | _handoff(lab, port, owner, "d2" if owner == "d1" else "d1",
                                  PHASES[phases])
        recs.append(rec)
        if rec["outcome"] == "HANDED_OFF":
            owner = rec["to"]
        elif "reason" not in rec:  # refused, or no end: the connection's state is unknown
            break
    elapsed = time.monotonic() - t0
    Path(stop).touch()
    got = json.loads(Path(lab.wait_file("ka.json")).read_text())
    after = {n: counters(lab.ns(n)) for n in ("c1", "d1", "d2")}
    rsts = {"to_client": 0, "from_client": 0}
    while (f := _stamp(rst)) is not None:
        rsts["from_client" if f[1][26:30] == socket.inet_aton(CLIENT_IP) else "to_client"] += 1
    rst.close()
    want = {n: hashlib.sha256(Path(lab.path(f"{n}/volume/mid.bin")).read_bytes()).hexdigest()
            for n in ("d1", "d2")}
    outcomes: dict[str, int] = {}
    for r in recs:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    keys = ("Tcp.RetransSegs", "TcpExt.TCPLostRetransmit", "TcpExt.TCPTimeouts",
            "Tcp.EstabResets", "Tcp.OutRsts")
    return {
        "requested": count, "seconds": round(elapsed, 2), "outcomes": outcomes,
        "hold_ms": spread([r["hold_ms"] for r in recs if "hold_ms" in r]),
        "hold_data_ms": spread([r["hold_data_ms"] for r in recs if "hold_data_ms" in r]),
        "hold_data_ms_held": spread([r["hold_data_ms"] for r in recs
                                     if "hold_data_ms" in r and r["held"]]),
        "first_frame_empty": sum(1 for r in recs if r.get("first_len") == 0),
        "freeze_morph_ms": spread([r["freeze_morph_ms"] for r in recs if "freeze_morph_ms" in r]),
        "phases_ms": {name: spread([r["phases_ms"][name] for r in recs
                                    if name in r.get("phases_ms", {})])
                      for name, *_ in PHASES[phases]},
        "gap_ms": spread([r["gap_ms"] for r in recs if "gap_ms" in r]),
        "device_ms": spread([r["device_ms"] for r in recs if "device_ms" in r]),
        "held_frames": sum(r.get("held", 0) for r in recs),
        "no_capture": sum(1 for r in recs if r["outcome"] == "HANDED_OFF" and "hold_ms" not in r),
        "capture_drops": sum(r.get("capture_drops", 0) for r in recs), "rst_frames": rsts,
        "client": delta(before["c1"], after["c1"], keys),
        "devices": {n: delta(before[n], after[n], keys[:3]) for n in ("d1", "d2")},
        "responses": got["responses"], "bytes": got["bytes"], "client_error": got["error"],
        "same_bytes": sum(v for d, v in got["digests"].items() if d == want["d1"]),
        "volume_sha256": want["d1"], "replicas_equal": want["d1"] == want["d2"],
        "slowest": sorted((r for r in recs if "hold_ms" in r), key=lambda r: -r["hold_ms"])[:5],
    }


# ---- 2. throughput ------------------------------------------------------------------------------

def curl(lab: Lab, node: str, url: str) -> float:
    r = lab.b.exec(node, ("curl", "-sS", "-o", "/dev/null", "--max-time", "120", "-w",
                          "%{speed_download} %{size_download} %{http_code}", url), 150)
    speed, size, code = r.stdout.split()
    if r.status != 0 or code != "200" or int(size) != 128 << 20:
        raise SystemExit(f"bench: curl {url} on {node}: {r.status} {r.stdout} {r.stderr}")
    return float(speed) / 1e6


def offload(lab: Lab, nodes: tuple[str, ...], on: bool) -> None:
    """The plain pair's checksum offload (so TSO/GSO): off as the lab makes host links, on
    as the kernel makes a veth pair (the *kernel* arm)."""
    for node in nodes:
        call_in_netns(lab.ns(node), set_checksum_offload, ("eth0",), on)


def throughput(lab: Lab, rounds: int) -> dict:
    big = lab.path("d1/volume/big.bin")
    for node, ip in (("h2", PLAIN_IP), ("h3", BRIDGED_IP)):
        lab.py(node, PLAIN_SERVER, ip, big, lab.path(f"{node}.ready"))
        lab.wait_file(f"{node}.ready")
    arms = [("vip", "c1", VIP, "d1"), ("plain", "h1", PLAIN_IP, "h2"),
            ("bridge", "c1", BRIDGED_IP, "h3"), ("kernel", "h1", PLAIN_IP, "h2")]
    runs: dict[str, list[float]] = {arm[0]: [] for arm in arms}
    retrans = dict.fromkeys(runs, 0)
    for i in range(rounds + 1):  # round 0 warms the page cache and the paths, not counted
        for kind, node, ip, server in arms[::-1] if i % 2 else arms:
            before = counters(lab.ns(server))["Tcp.RetransSegs"]
            offload(lab, ("h1", "h2"), kind == "kernel")
            mbps = curl(lab, node, f"http://{ip}/big.bin")
            if i:
                runs[kind].append(mbps)
                retrans[kind] += counters(lab.ns(server))["Tcp.RetransSegs"] - before
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {"rounds": rounds, "MBps": med, "ratio": med["vip"] / med["plain"],
            "ratio_kernel": med["vip"] / med["kernel"],
            "bridge_over_plain": med["bridge"] / med["plain"],
            "vip_over_bridge": med["vip"] / med["bridge"], "server_retrans": retrans,
            "server_retrans_per_GB": {k: v / (rounds * (128 << 20) / 1e9)
                                      for k, v in retrans.items()},
            "runs": runs}


# ---- 3. connections per second ------------------------------------------------------------------

def _premake(ports: range, mac: str) -> None:
    nft = Nft()
    rules = [entry_rule(validate_entry({
        "vip": VIP, "out_port": D1_PORT, "client_ip": CLIENT_IP, "proto": 6, "client_port": p,
        "vport": 80, "dst_mac": mac})) for p in ports]
    for i in range(0, len(rules), 500):
        nft("\n".join(f"add rule netdev {TABLE} {CHAIN} {r}" for r in rules[i:i + 500]))


def cps_arm(lab: Lab, ports: range, tag: str) -> dict:
    go, out = lab.path(f"cps-{tag}.go"), lab.path(f"cps-{tag}.json")
    s0 = lab.ask("s1", {"op": "stats"})["stats"]
    lab.py("c1", CPS, CLIENT_IP, VIP, str(ports.start), str(len(ports)), "/small.bin", go, out)
    time.sleep(0.3)  # the interpreter started; it waits for `go`
    lab.events("s1")
    Path(go).touch()
    got = json.loads(Path(lab.wait_file(f"cps-{tag}.json", 600)).read_text())
    s1 = lab.ask("s1", {"op": "stats"})["stats"]
    live, program = 0, []  # (entries in the table, ms) of each placement
    for e in lab.events("s1"):
        if e["kind"] == "table" and e["why"] in ("placed", "closed"):
            live += 1 if e["why"] == "placed" else -1
            if e["why"] == "placed":
                program.append((live, e["ms"]))
    return {"cps": len(ports) / (got["end"] - got["start"]),
            "lat_ms": {k: v * 1e3 for k, v in spread(got["lat"]).items() if k != "n"},
            "errors": got["errors"][:3], "n_errors": len(got["errors"]),
            "placed": s1["syn_placed"] - s0["syn_placed"],
            "seen_with_entry": s1["syn_seen_with_entry"] - s0["syn_seen_with_entry"],
            "program_ms": spread([ms for _, ms in program]),
            "program_ms_by_entries": {f"{lo}-{lo + 49}": statistics.median(b) for lo in
                                      range(0, 1000, 50) if (b := [ms for n, ms in program
                                                                   if lo <= n - 1 < lo + 50])}}


def _settle(lab: Lab, quiet: float = 3.0, timeout: float = 120.0) -> set[str]:
    """Until the switch's table stops changing for ``quiet`` s (each entry goes LINGER = 2 s
    after its connection closed) or is empty; the clients of the entries still there."""
    deadline, last, since = time.monotonic() + timeout, None, time.monotonic()
    while time.monotonic() < deadline:
        now = {e["client"] for e in lab.ask("s1", {"op": "table"})["entries"]}
        if now != last:
            last, since = now, time.monotonic()
        if not now or time.monotonic() - since > quiet:
            return now
        time.sleep(0.1)
    raise SystemExit(f"bench: the switch's table still changes after {timeout:g}s")


def cps(lab: Lab, rounds: int, conns: int) -> dict:
    """Each arm starts on an empty table and sees only the entries it makes itself."""
    runs: dict[str, list[dict]] = {"premade": [], "placed": []}
    port, stuck = CPS_PORTS, set()
    for i in range(rounds + 1):  # round 0: warm-up, not counted
        for kind in ("premade", "placed")[::(-1 if i % 2 else 1)]:
            ports = range(port, port + conns)
            port += conns
            if kind == "premade":
                call_in_netns(lab.ns("s1"), _premake, ports, MACS["d1"])
                lab.b.process("s1", "restart")  # it learns the pre-made entries from the kernel
            r = cps_arm(lab, ports, f"{kind}{i}")
            left = _settle(lab)
            r["stuck"] = sorted(left - stuck)  # entries of closed connections never removed
            stuck |= left
            for client in r["stuck"]:  # out of the kernel: the next arm's table is empty
                lab.b.table("s1", "remove", ForwardingEntry(
                    VIP, D1_PORT, CLIENT_IP, 6, int(client.rsplit(":", 1)[1]), 80, MACS["d1"]))
            if i:
                runs[kind].append(r)
    med = {k: statistics.median(r["cps"] for r in v) for k, v in runs.items()}
    by: dict[str, list[float]] = {}
    for r in runs["placed"]:
        for k, ms in r["program_ms_by_entries"].items():
            by.setdefault(k, []).append(ms)
    return {"rounds": rounds, "conns": conns, "cps": med, "ratio": med["placed"] / med["premade"],
            "lat_p50_ms": {k: statistics.median(r["lat_ms"]["p50"] for r in v)
                           for k, v in runs.items()},
            "program_ms": {"p50": statistics.median(r["program_ms"]["p50"]
                                                    for r in runs["placed"]),
                           "max": max(r["program_ms"]["max"] for r in runs["placed"])},
            "program_ms_by_entries": {k: statistics.median(v) for k, v in by.items()},
            "runs": runs}


# ---- main ---------------------------------------------------------------------------------------

def scenario_file(xap: str, tch: str, predictive: bool) -> str:
    """The bench lab's file with the switch's XAP carrier (D2.10), TCH embodiment and
    predictive sessions set: the node processes read the scenario from its path, so a
    variant is a file of its own."""
    if (xap, tch, predictive) == ("udp", "segments", False):
        return str(SCENARIO)
    text = Path(SCENARIO).read_text().replace(
        "    placement: first\n", f"    placement: first\n    xap: {xap}\n    tch: {tch}\n"
        f"    predictive: {str(predictive).lower()}\n")
    path = Path(tempfile.gettempdir()) / f"nas-bench-{xap}-{tch}-{predictive}.yaml"
    path.write_text(text)
    return str(path)


def run(args) -> dict:
    b = VethBackend(capture=False)
    lab = None
    try:
        b.up(load_scenario(scenario_file(args.xap, args.tch, args.predictive)))
        lab = Lab(b)
        out = {"lab": b.lab_id, "xap": args.xap, "tch": args.tch,
               "predictive": args.predictive}
        phases = ("predictive" if args.predictive else
                  "messages" if args.tch == "messages" else args.xap)
        if "handoff" in args.parts:
            out["handoff"] = handoffs(lab, args.handoffs, phases)
        if "throughput" in args.parts:
            out["throughput"] = throughput(lab, args.rounds)
        if "cps" in args.parts:
            out["cps"] = cps(lab, args.rounds, args.conns)
        out["problems"] = b.problems()
        return out
    finally:
        if lab is not None:
            lab.close()
        b.down()


def fmt(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def report(res: dict) -> None:
    if "handoff" in res:
        h = res["handoff"]
        print(f"handoff: {sum(h['outcomes'].values())} of {h['requested']} in {h['seconds']} s;"
              f" outcomes {h['outcomes']}")
        print(f"  {'ms':30s}{'p50':>9}{'p95':>9}{'max':>9}{'n':>6}")
        for key, name in (("hold_ms", "hold: freeze -> first frame"),
                          ("hold_data_ms", "freeze -> first data frame"),
                          ("hold_data_ms_held", "  the same, frames were held"),
                          ("freeze_morph_ms", "freeze -> morph (events)"),
                          ("gap_ms", "client gap: last -> first"),
                          ("device_ms", "device: start -> end")):
            s = h[key]
            print(f"  {name:30s}{fmt(s['p50']):>9}{fmt(s['p95']):>9}{fmt(s['max']):>9}"
                  f"{s['n']:>6}")
            if key == "freeze_morph_ms":
                for phase, s in h["phases_ms"].items():
                    print(f"    {phase:28s}{fmt(s['p50']):>9}{fmt(s['p95']):>9}"
                          f"{fmt(s['max']):>9}{s['n']:>6}")
        print(f"  client TCP deltas {h['client']}; RST frames {h['rst_frames']}")
        per_gb = sum(d["RetransSegs"] for d in h["devices"].values()) / (h["bytes"] / 1e9)
        print(f"  device TCP deltas {h['devices']} ({per_gb:.0f} retransmits per GB)")
        print(f"  {h['responses']} responses ({h['bytes'] / 1e6:.0f} MB) on one connection, "
              f"{h['same_bytes']} with the volume file's SHA-256; client error: "
              f"{h['client_error']}; held frames relayed {h['held_frames']}; capture drops "
              f"{h['capture_drops']}, handoffs without a captured frame {h['no_capture']}; "
              f"first frame without payload (window probe/ACK) {h['first_frame_empty']}")
        for r in h["slowest"]:
            print(f"  slow #{r['i']} {r['from']}->{r['to']}: hold {r['hold_ms']:.2f} ms, "
                  f"freeze->morph {fmt(r.get('freeze_morph_ms'))} ms ("
                  + ", ".join(f"{k} {v:.1f}" for k, v in r.get("phases_ms", {}).items())
                  + f"), device {r['device_ms']:.1f} ms, {r['held']} held")
    if "throughput" in res:
        t = res["throughput"]
        m = t["MBps"]
        print(f"throughput (curl, 128 MiB), median of {t['rounds']} interleaved rounds: "
              f"VIP {m['vip']:.1f} MB/s, plain veth {m['plain']:.1f} MB/s: ratio "
              f"{t['ratio']:.3f}")
        print(f"  the plain pair with checksum offload and TSO on (as the kernel makes it) "
              f"{m['kernel']:.1f} MB/s: VIP/kernel {t['ratio_kernel']:.3f}")
        print(f"  plain server via the switch's bridge {m['bridge']:.1f} MB/s: bridge/plain "
              f"{t['bridge_over_plain']:.3f}, VIP/bridge {t['vip_over_bridge']:.3f}")
        print("  server retransmits per GB: " + ", ".join(
            f"{k} {v:.0f}" for k, v in t["server_retrans_per_GB"].items()))
    if "cps" in res:
        c = res["cps"]
        print(f"connections/s ({c['conns']} sequential per arm), median of {c['rounds']} "
              f"interleaved rounds: placed {c['cps']['placed']:.0f}, pre-made entry "
              f"{c['cps']['premade']:.0f}, ratio {c['ratio']:.3f}; latency p50 placed "
              f"{c['lat_p50_ms']['placed']:.2f} ms, pre-made {c['lat_p50_ms']['premade']:.2f} ms")
        errs = sum(r["n_errors"] for v in c["runs"].values() for r in v)
        placed = [r["placed"] for r in c["runs"]["placed"]]
        wrong = sum(r["placed"] for r in c["runs"]["premade"])
        print(f"  the switch's nftables change per placed SYN: p50 {c['program_ms']['p50']:.2f} "
              f"ms, max {c['program_ms']['max']:.2f} ms; p50 by entries already in the table: "
              + ", ".join(f"{k}: {v:.1f}" for k, v in c["program_ms_by_entries"].items()))
        print(f"  errors {errs}; SYNs placed per placed arm {placed}; placed in pre-made arms "
              f"{wrong}")
        for kind, v in c["runs"].items():
            stuck = [x for r in v for x in r["stuck"]]
            if stuck:
                print(f"  {kind}: {len(stuck)} entries of closed connections never removed "
                      f"({', '.join(stuck[:4])}{', ...' if len(stuck) > 4 else ''})")
    print(f"problems: {res['problems'] or 'none'}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--handoffs", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5, help="throughput and cps rounds")
    ap.add_argument("--conns", type=int, default=200, help="connections per cps arm and round")
    ap.add_argument("--parts", default="handoff,throughput,cps",
                    type=lambda s: set(s.split(",")), help="which parts to run")
    ap.add_argument("--xap", choices=XAP_CARRIERS, default="udp",
                    help="how handoffs reprogram the switch (the nas-switch option xap)")
    ap.add_argument("--tch", choices=TCH_EMBODIMENTS, default="segments",
                    help="how devices hand off (the nas-switch option tch)")
    ap.add_argument("--predictive", action="store_true",
                    help="with --tch messages: predictive sessions from the connection's start")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    try:
        res = run(args)
    except KeyboardInterrupt:
        print("bench: interrupted (the lab is down)", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        report(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
