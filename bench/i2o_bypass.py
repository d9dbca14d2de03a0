"""Seed 001 check 14: a remote's 4 KiB block requests through the I2O direct-call path against
a user-level server over TCP doing file syscalls, in one run: latency, requests/s, server CPU.

    python bench/i2o_bypass.py [--ops 5000] [--rounds 3] [--warmup 300] [--capacity-mib 64]
                               [--dir D] [--trace] [--quick] [--json]

The seed claims its I2O IOP access module gives remote servers access to a host's storage by a
*direct call* path (SAN receive -> Remote Transport ``receive_handler`` -> Local Transport
``send_handler`` -> IOP, Fig. 5) "bypassing the layers of OS protocol stacks". Every path below
serves the same requests on its own backing file of the same size (a real sparse file, created
as ``FileBlockDevice`` creates one): 4 KiB BlockWrites at random 4 KiB-aligned offsets, then
4 KiB BlockReads of offsets written in the same round, one request outstanding at a time.
Every read is checked against the bytes last written there (each block is unique: its round,
sequence number and offset head it), every reply's status, contexts and TransferCount too, and
at the end a sample of blocks is read straight from each backing file. A mismatch fails the run
(exit 1); (a) being slower does not (exit 0, and the report says so).

- **(a) direct call over UDP**: a host process (this file, ``--serve i2o-udp``) holds a
  ``HostDriverModule`` with one IOP, whose DDM owns a ``FileBlockDevice``; the client process
  (this one) sends each I2O BSA frame (``fast.build_block_rw``, one simple SGL element naming a
  4 KiB staging buffer in the host's ``HostMemory``) in a datagram on a connected UDP socket
  pair on loopback: the "SAN NIC". A BlockWrite's data follows the frame in the same datagram;
  the host's receive loop takes the datagram with ``recvmsg_into`` into [frame buffer, staging
  buffer] -- the NIC placing the payload in host memory, where the IOP's DMA finds it -- and
  hands the frame to ``rt.receive_handler`` (the direct call to LT -> IOP inbound FIFO), then
  ``bus.service()`` (the IOP: DDM -> ``pread``/``pwrite``) and ``lt.poll()`` (the LT's
  interrupt: Fig. 6 back through ``RT.send_handler``), and sends the reply frame the RT
  produces; a BlockRead's reply carries the staging buffer after the frame. The lab's real SAN
  is the user-space RoCE of ``ftsslab/san`` (measured by ``bench/san_veth.py``); the UDP socket
  stands in for the NIC to isolate the host-side path on the same footing as the baseline.
- **(b) TCP server + file syscalls** (the baseline): a user-level server process
  (``--serve file-tcp``) ``recv``s a 16-byte header (+ the data, ``MSG_WAITALL``) on a TCP
  loopback connection (``TCP_NODELAY``), ``os.pread``/``os.pwrite``s its backing file, and
  sends an 8-byte reply header (+ the data). No I2O.
- **(b') UDP server + file syscalls**: the same server on the same kind of connected UDP pair
  as (a), so (a)/(b') separates the I2O path's cost from TCP's.
- **direct call in-process**: (a)'s host-side work without a socket -- staging buffer filled,
  frame into ``rt.receive_handler``, ``bus.service()``, ``lt.poll()``, reply frame (and data)
  out -- timed per request, and split into RT receive / IOP emulation / LT poll.
- **file syscalls in-process**: ``os.pwrite``/``os.pread`` alone: the floor under everything.

Columns: p50 and p99 latency (client-side, request sent -> reply in hand, µs), requests/s
(requests / the phase's wall time), and server CPU per request: user + system time of the
server process (``resource.getrusage`` in the server, read through the connection before and
after each phase); for the in-process rows, this process's CPU time. The run trace (one event
per seed step, the lab's instrumentation) is off in every host, as a production driver would
not record it: ``--trace`` keeps it on. The paths run after a warm-up (``--warmup`` requests
each), interleaved in ``--rounds`` rounds, the order rotated every round so noise hits each;
every figure is the median of the rounds. ``--quick``: 300 requests per phase, 3 rounds, for
the CI smoke test (tests/i2o/test_bench_bypass.py). Note: (a)'s server CPU includes the IOP
emulation (DDM, file syscalls), which on the seed's hardware runs on the IOP's own processor.
On the shared 2-core box (--ops 10000 --rounds 5) check 14 is not met: (a)/(b) p50 2.20x for
reads, 2.45x for writes, server CPU per request 2.9x / 3.5x; the direct call alone, in process,
costs 57-60 us a request against 48-52 us for (b)'s whole TCP round trip (docs/i2o.md,
"Bypass vs OS stack").
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ftsslab.fast import i2o as fast  # noqa: E402
from ftsslab.i2o.blockdev import FileBlockDevice  # noqa: E402
from ftsslab.i2o.bus import HostMemory, LocalBus  # noqa: E402
from ftsslab.i2o.ddm import Ddm  # noqa: E402
from ftsslab.i2o.frames import FIRST_DEVICE_TID, FIRST_IOP_ID  # noqa: E402
from ftsslab.i2o.host import HostDriverModule  # noqa: E402
from ftsslab.i2o.iop import Iop  # noqa: E402

BLOCK = 4096
STAGE = 0x1000  # the staging buffer in host memory the request's SGL names
CONN = 1  # the service connection
TID = FIRST_DEVICE_TID
LOOPBACK = "127.0.0.1"
FILE_HDR = struct.Struct("<BxxxIQ")  # op, length, offset
FILE_REPLY = struct.Struct("<II")  # status, length
CPU = struct.Struct("<d")
OP_READ, OP_WRITE, OP_STATS, OP_QUIT = 1, 2, 3, 4
STATS, QUIT = b"STAT", b"QUIT"  # (a)'s control datagrams: shorter than any I2O header
REPLY_LEN = fast.I2O_HEADER_LEN + 8  # header, status word, TransferCount
REPLY_TAIL = struct.Struct("<HBBI")  # detailed status, reserved, req status, TransferCount
WAIT = 30.0  # no reply for this long: the run fails (it never hangs)

PATHS = {  # key: (label, where it runs)
    "a": "(a) I2O direct call, UDP",
    "b": "(b) TCP + file syscalls",
    "b_udp": "(b') UDP + file syscalls",
    "direct": "I2O direct call, in-proc",
    "file": "file syscalls, in-proc",
}
BASELINE = "b"


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def sparse_file(path: str, capacity: int) -> int:
    """A backing file as ``FileBlockDevice`` makes one: sparse, ftruncate'd to the capacity."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if os.fstat(fd).st_size < capacity:
        os.ftruncate(fd, capacity)
    return fd


# ---------------------------------------------------------------- the host (a)
class I2oHost:
    """A host with one IOP whose DDM owns one FileBlockDevice, a service connection open."""

    def __init__(self, path: str, capacity: int, *, trace: bool = False) -> None:
        self.memory = HostMemory(STAGE + BLOCK)
        self.bus = LocalBus(self.memory)
        self.device = FileBlockDevice(path, capacity)
        self.bus.attach(Iop(Ddm([self.device], self.memory)))
        self.module = HostDriverModule(self.bus)
        if not trace:  # the lab's per-step instrumentation, not the seed's path
            self.module.trace.emit = lambda *args, **kwargs: None
        self.module.initialise()
        self.rt, self.lt = self.module.rt, self.module.lt
        status = self.module.cm.connect("client", FIRST_IOP_ID, CONN).status
        assert status.name == "CONNECTED", status
        self.stage = memoryview(self.memory.data)[STAGE:STAGE + BLOCK]

    def handle(self, frame: bytes) -> list[bytes]:
        """One request frame in, its reply frames out: Fig. 5, the IOP, Fig. 6."""
        actions = self.rt.receive_handler(CONN, frame)
        self.bus.service()
        actions += self.lt.poll()
        return [a.frame for a in actions]

    def handle_split(self, frame: bytes, split: list[list[int]]) -> list[bytes]:
        """``handle``, timing its three parts (ns) into ``split``."""
        t0 = time.perf_counter_ns()
        actions = self.rt.receive_handler(CONN, frame)
        t1 = time.perf_counter_ns()
        self.bus.service()
        t2 = time.perf_counter_ns()
        actions += self.lt.poll()
        t3 = time.perf_counter_ns()
        split[0].append(t1 - t0)
        split[1].append(t2 - t1)
        split[2].append(t3 - t2)
        return [a.frame for a in actions]


def is_read_reply(frame: bytes) -> bool:
    return frame[7] == fast.I2O_BSA_BLOCK_READ and frame[19] == 0


# ---------------------------------------------------------------- servers (subprocesses)
def udp_server() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.bind((LOOPBACK, 0))
    print(s.getsockname()[1], flush=True)
    _, client = s.recvfrom(16)
    s.connect(client)
    s.send(b"ok")
    return s


def serve_i2o_udp(path: str, capacity: int, trace: bool) -> None:
    host = I2oHost(path, capacity, trace=trace)
    s = udp_server()
    frame_buf = bytearray(64)
    frame_len = len(fast.build_block_rw(fast.I2O_BSA_BLOCK_READ, [fast.sge_simple(BLOCK, STAGE)],
                                        0))
    head, stage = memoryview(frame_buf)[:frame_len], host.stage
    while True:
        n, _, _, _ = s.recvmsg_into([head, stage])
        if n < fast.I2O_HEADER_LEN:  # control
            if bytes(head[:n]) == QUIT:
                return
            s.send(CPU.pack(cpu_seconds()))
            continue
        for reply in host.handle(bytes(head)):
            if is_read_reply(reply):
                s.sendmsg([reply, stage])
            else:
                s.send(reply)


def serve_file(path: str, capacity: int, transport: str) -> None:
    fd = sparse_file(path, capacity)
    buf = bytearray(FILE_HDR.size + BLOCK)
    view = memoryview(buf)
    if transport == "udp":
        s = udp_server()
    else:
        ls = socket.socket()
        ls.bind((LOOPBACK, 0))
        ls.listen(1)
        print(ls.getsockname()[1], flush=True)
        s, _ = ls.accept()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    tcp = transport == "tcp"
    while True:
        if tcp:
            n = s.recv_into(view, FILE_HDR.size, socket.MSG_WAITALL)
            if n < FILE_HDR.size:
                return
        else:
            n = s.recv_into(view)
        op, length, offset = FILE_HDR.unpack_from(buf)
        if op == OP_WRITE:
            data = view[FILE_HDR.size:FILE_HDR.size + length]
            if tcp:
                s.recv_into(data, length, socket.MSG_WAITALL)
            os.pwrite(fd, data, offset)
            s.send(FILE_REPLY.pack(0, length))
        elif op == OP_READ:
            data = os.pread(fd, length, offset)
            s.sendmsg([FILE_REPLY.pack(0, len(data)), data])
        elif op == OP_STATS:
            s.send(CPU.pack(cpu_seconds()))
        else:
            return


# ---------------------------------------------------------------- clients
class BadReply(Exception):
    pass


def check_reply(buf: bytes | bytearray, frame: bytes, n: int, data: int) -> None:
    """The reply answers this request (function, both contexts), SUCCESS, 4 KiB moved."""
    if (n != REPLY_LEN + data or buf[7] != frame[7] or buf[1] & fast.MSG_REPLY == 0
            or buf[8:16] != frame[8:16]):
        raise BadReply(f"not the reply to {frame.hex()}: {bytes(buf[:n]).hex()}")
    _, _, status, count = REPLY_TAIL.unpack_from(buf, fast.I2O_HEADER_LEN)
    if status != 0 or count != BLOCK:
        raise BadReply(f"status {status:#x}, TransferCount {count}")


class Frames:
    """The client's I2O BSA frames: one simple SGL element naming the host's staging buffer,
    a fresh InitiatorContext per request, the sequence number as TransactionContext."""

    def __init__(self) -> None:
        self.ictx = 0x10000

    def frame(self, function: int, offset: int, tctx: int) -> bytes:
        self.ictx = self.ictx % 0xFFFF0000 + 1
        return fast.build_block_rw(function, [fast.sge_simple(BLOCK, STAGE)], offset,
                                   target_tid=TID, initiator_context=self.ictx,
                                   transaction_context=tctx)

    def prepare_write(self, offset: int, data: bytes, seq: int):
        return self.frame(fast.I2O_BSA_BLOCK_WRITE, offset, seq), data

    def prepare_read(self, offset: int, seq: int):
        return self.frame(fast.I2O_BSA_BLOCK_READ, offset, seq)


class Remote:
    """A server subprocess and the client's end of its connection."""

    def __init__(self, kind: str, path: str, capacity: int, trace: bool) -> None:
        cmd = [sys.executable, __file__, "--serve", kind, "--path", path,
               "--capacity", str(capacity)] + (["--trace"] if trace else [])
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        port = int(self.proc.stdout.readline())
        if kind == "file-tcp":
            self.sock = socket.create_connection((LOOPBACK, port))
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self.sock.bind((LOOPBACK, 0))
            self.sock.connect((LOOPBACK, port))
            self.sock.send(b"hi")
            self.sock.settimeout(WAIT)
            assert self.sock.recv(16) == b"ok"
        self.sock.settimeout(WAIT)
        self.buf = bytearray(64 + BLOCK)
        self.view = memoryview(self.buf)

    def close(self) -> None:
        try:
            self.quit()
        except OSError:
            pass
        self.sock.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class I2oUdpClient(Frames, Remote):
    def __init__(self, path: str, capacity: int, trace: bool) -> None:
        Frames.__init__(self)
        Remote.__init__(self, "i2o-udp", path, capacity, trace)

    def write(self, prepared) -> None:
        frame, data = prepared
        self.sock.sendmsg([frame, data])
        n = self.sock.recv_into(self.buf)
        check_reply(self.buf, frame, n, 0)

    def read(self, frame) -> bytes:
        self.sock.send(frame)
        n = self.sock.recv_into(self.buf)
        check_reply(self.buf, frame, n, BLOCK)
        return self.buf[REPLY_LEN:REPLY_LEN + BLOCK]

    def cpu(self) -> float:
        self.sock.send(STATS)
        return CPU.unpack(self.sock.recv(64))[0]

    def quit(self) -> None:
        self.sock.send(QUIT)


class FileClient(Remote):
    def __init__(self, transport: str, path: str, capacity: int, trace: bool) -> None:
        super().__init__(f"file-{transport}", path, capacity, trace)
        self.tcp = transport == "tcp"

    def prepare_write(self, offset: int, data: bytes, seq: int):
        return FILE_HDR.pack(OP_WRITE, BLOCK, offset), data

    def prepare_read(self, offset: int, seq: int):
        return FILE_HDR.pack(OP_READ, BLOCK, offset)

    def _recv(self, length: int) -> int:
        if self.tcp:
            return self.sock.recv_into(self.view, length, socket.MSG_WAITALL)
        return self.sock.recv_into(self.buf)

    def write(self, prepared) -> None:
        hdr, data = prepared
        self.sock.sendmsg([hdr, data])
        n = self._recv(FILE_REPLY.size)
        if n != FILE_REPLY.size or FILE_REPLY.unpack_from(self.buf) != (0, BLOCK):
            raise BadReply(bytes(self.buf[:n]).hex())

    def read(self, hdr) -> bytes:
        self.sock.send(hdr)
        n = self._recv(FILE_REPLY.size + BLOCK)
        if n != FILE_REPLY.size + BLOCK or FILE_REPLY.unpack_from(self.buf) != (0, BLOCK):
            raise BadReply(bytes(self.buf[:FILE_REPLY.size]).hex())
        return self.buf[FILE_REPLY.size:FILE_REPLY.size + BLOCK]

    def cpu(self) -> float:
        self.sock.send(FILE_HDR.pack(OP_STATS, 0, 0))
        n = self._recv(CPU.size)
        return CPU.unpack_from(self.buf[:n])[0]

    def quit(self) -> None:
        self.sock.send(FILE_HDR.pack(OP_QUIT, 0, 0))


class DirectInProcess(Frames):
    """(a)'s host-side work in this process: no socket, no second process."""

    def __init__(self, path: str, capacity: int, trace: bool) -> None:
        super().__init__()
        self.host = I2oHost(path, capacity, trace=trace)
        self.split: list[list[int]] = [[], [], []]

    def write(self, prepared) -> None:
        frame, data = prepared
        self.host.stage[:] = data  # the NIC's placement in host memory
        self._reply(frame, self.host.handle_split(frame, self.split), 0)

    def read(self, frame) -> bytes:
        self._reply(frame, self.host.handle_split(frame, self.split), BLOCK)
        return bytes(self.host.stage)

    def _reply(self, frame: bytes, replies: list[bytes], data: int) -> None:
        if len(replies) != 1:
            raise BadReply(f"{len(replies)} replies")
        check_reply(replies[0], frame, len(replies[0]) + data, data)

    def cpu(self) -> float:
        return time.process_time()

    def close(self) -> None:
        self.host.device.close()


class FileInProcess:
    def __init__(self, path: str, capacity: int, trace: bool) -> None:
        self.fd = sparse_file(path, capacity)

    def prepare_write(self, offset: int, data: bytes, seq: int):
        return offset, data

    def prepare_read(self, offset: int, seq: int):
        return offset

    def write(self, prepared) -> None:
        offset, data = prepared
        if os.pwrite(self.fd, data, offset) != BLOCK:
            raise BadReply("short pwrite")

    def read(self, offset) -> bytes:
        return os.pread(self.fd, BLOCK, offset)

    def cpu(self) -> float:
        return time.process_time()

    def close(self) -> None:
        os.close(self.fd)


def open_path(key: str, path: str, capacity: int, trace: bool):
    if key == "a":
        return I2oUdpClient(path, capacity, trace)
    if key == "b":
        return FileClient("tcp", path, capacity, trace)
    if key == "b_udp":
        return FileClient("udp", path, capacity, trace)
    if key == "direct":
        return DirectInProcess(path, capacity, trace)
    return FileInProcess(path, capacity, trace)


# ---------------------------------------------------------------- the workload
def block(base: bytes, rnd: int, seq: int, offset: int) -> bytes:
    """A unique 4 KiB block: its round, sequence number and offset, then random bytes."""
    return struct.pack("<iIQ", rnd, seq, offset) + base[16:]


def workload(rnd: int, ops: int, blocks: int, base: bytes) -> tuple[list, list, dict]:
    """The round's writes (offset, data), reads (offsets written) and the expected contents."""
    rng = random.Random(rnd)
    writes = []
    expected: dict[int, bytes] = {}
    for seq in range(ops):
        offset = rng.randrange(blocks) * BLOCK
        data = block(base, rnd, seq, offset)
        writes.append((offset, data))
        expected[offset] = data
    written = sorted(expected)
    reads = [rng.choice(written) for _ in range(ops)]
    return writes, reads, expected


def _pct(ns: list[int], q: float) -> float:
    ordered = sorted(ns)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e3


def phase(path, op: str, items: list, expected: dict) -> dict:
    """One request outstanding at a time; ns per request, wall time, the server's CPU."""
    lat: list[int] = []
    mismatches = 0
    cpu0 = path.cpu()
    t0 = time.perf_counter()
    if op == "write":
        for seq, (offset, data) in enumerate(items):
            prepared = path.prepare_write(offset, data, seq)
            t = time.perf_counter_ns()
            path.write(prepared)
            lat.append(time.perf_counter_ns() - t)
    else:
        for seq, offset in enumerate(items):
            prepared = path.prepare_read(offset, seq)
            t = time.perf_counter_ns()
            data = path.read(prepared)
            lat.append(time.perf_counter_ns() - t)
            mismatches += data != expected[offset]
    wall = time.perf_counter() - t0
    cpu = path.cpu() - cpu0
    return {"p50_us": _pct(lat, 0.5), "p99_us": _pct(lat, 0.99), "ops_per_s": len(lat) / wall,
            "server_cpu_us_per_op": cpu / len(lat) * 1e6, "requests": len(lat),
            "mismatches": mismatches}


def check_files(files: dict[str, str], expected: dict, sample: int) -> int:
    """Blocks read straight from each backing file, against what was written: mismatches."""
    bad = 0
    offsets = random.Random(0).sample(sorted(expected), min(sample, len(expected)))
    for path in files.values():
        fd = os.open(path, os.O_RDONLY)
        try:
            bad += sum(os.pread(fd, BLOCK, o) != expected[o] for o in offsets)
        finally:
            os.close(fd)
    return bad


METRICS = ("p50_us", "p99_us", "ops_per_s", "server_cpu_us_per_op")


def bench(ops: int, rounds: int, warmup: int, capacity: int, root: str, trace: bool,
          keys: tuple[str, ...] = tuple(PATHS)) -> dict:
    files = {k: os.path.join(root, f"{k}.img") for k in keys}
    paths = {}
    try:
        for k in keys:
            paths[k] = open_path(k, files[k], capacity, trace)
        base = os.urandom(BLOCK)
        blocks = capacity // BLOCK
        writes, reads, expected = workload(-1, warmup, blocks, base)
        for p in paths.values():  # warm-up: the servers' code paths and the page cache
            phase(p, "write", writes, expected)
            phase(p, "read", reads, expected)
        per: dict[tuple[str, str], list[dict]] = {(k, op): [] for k in keys
                                                  for op in ("read", "write")}
        order = list(keys)
        for rnd in range(rounds):
            writes, reads, expected = workload(rnd, ops, blocks, base)
            for k in order[rnd % len(order):] + order[:rnd % len(order)]:
                per[k, "write"].append(phase(paths[k], "write", writes, expected))
                per[k, "read"].append(phase(paths[k], "read", reads, expected))
        split = None
        if "direct" in paths:
            s = paths["direct"].split
            split = {name: statistics.median(ns) / 1e3
                     for name, ns in zip(("rt_receive_handler", "iop_bus_service", "lt_poll"),
                                         s, strict=True)}
    finally:
        for p in paths.values():
            p.close()
    rows = []
    for (k, op), runs in per.items():
        rows.append({"path": k, "label": PATHS[k], "op": op,
                     **{m: statistics.median(r[m] for r in runs) for m in METRICS},
                     "requests": sum(r["requests"] for r in runs),
                     "mismatches": sum(r["mismatches"] for r in runs),
                     "rounds": runs})
    rows.sort(key=lambda r: (r["op"] != "read", list(PATHS).index(r["path"])))
    by = {(r["path"], r["op"]): r for r in rows}
    ratios = {}
    for other in ("b", "b_udp"):
        if "a" in keys and other in keys:
            for op in ("read", "write"):
                a, b = by["a", op], by[other, op]
                ratios[f"a/{other} {op}"] = {m: a[m] / b[m] for m in METRICS}
    claim = {op: {"a_p50_lower": by["a", op]["p50_us"] < by[BASELINE, op]["p50_us"],
                  "a_cpu_lower": (by["a", op]["server_cpu_us_per_op"]
                                  < by[BASELINE, op]["server_cpu_us_per_op"])}
             for op in ("read", "write") if "a" in keys and BASELINE in keys}
    verified = {"reads_checked": sum(r["requests"] for r in rows if r["op"] == "read"),
                "read_mismatches": sum(r["mismatches"] for r in rows),
                "file_blocks_checked": min(256, len(expected)) * len(files),
                "file_mismatches": check_files(files, expected, 256)}
    return {"config": {"ops_per_phase": ops, "rounds": rounds, "warmup": warmup,
                       "block": BLOCK, "capacity": capacity, "trace": trace,
                       "cpus": os.cpu_count(), "loadavg": os.getloadavg()},
            "rows": rows, "ratios": ratios, "claim": claim, "direct_split_us": split,
            "verified": verified}


# ---------------------------------------------------------------- report
def report(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    c = res["config"]
    table = Table(title=f"4 KiB random-offset requests, one outstanding, {c['ops_per_phase']} "
                        f"per phase x {c['rounds']} rounds (medians)")
    for col in ("op", "path", "p50 µs", "p99 µs", "req/s", "CPU µs/op", "p50/(b)"):
        table.add_column(col, justify="left" if col in ("op", "path") else "right")
    by = {(r["path"], r["op"]): r for r in res["rows"]}
    for r in res["rows"]:
        base = by.get((BASELINE, r["op"]))
        table.add_row(r["op"], r["label"], f"{r['p50_us']:,.1f}", f"{r['p99_us']:,.1f}",
                      f"{r['ops_per_s']:,.0f}", f"{r['server_cpu_us_per_op']:,.1f}",
                      f"{r['p50_us'] / base['p50_us']:.2f}" if base else "")
    console = Console()
    console.print(table)
    for name, ratio in res["ratios"].items():
        console.print(f"{name}: p50 {ratio['p50_us']:.2f}x, p99 {ratio['p99_us']:.2f}x, "
                      f"req/s {ratio['ops_per_s']:.2f}x, server CPU/op "
                      f"{ratio['server_cpu_us_per_op']:.2f}x")
    if s := res["direct_split_us"]:
        console.print("direct call in-process, median µs per request: RT receive_handler "
                      f"{s['rt_receive_handler']:.1f}, IOP (bus.service: DDM + file) "
                      f"{s['iop_bus_service']:.1f}, LT poll (Fig. 6) {s['lt_poll']:.1f}")
    for op, claim in res["claim"].items():
        console.print(f"check 14, {op}s: (a) p50 is {'' if claim['a_p50_lower'] else 'NOT '}"
                      f"lower than (b)'s; (a) server CPU/op is "
                      f"{'' if claim['a_cpu_lower'] else 'NOT '}lower than (b)'s")
    v = res["verified"]
    console.print(f"verified: {v['reads_checked']} reads, {v['read_mismatches']} mismatches; "
                  f"{v['file_blocks_checked']} blocks read from the backing files, "
                  f"{v['file_mismatches']} mismatches")
    console.print("(a)'s SAN NIC is a loopback UDP socket here; the lab's SAN is the user-space "
                  "RoCE of ftsslab/san (bench/san_veth.py). This isolates the host-side path.")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=5000, help="requests per phase and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=300, help="requests per path, first")
    ap.add_argument("--capacity-mib", type=int, default=64, help="each backing file's size")
    ap.add_argument("--dir", default=None, help="where the backing files go (default: a temp dir)")
    ap.add_argument("--trace", action="store_true", help="keep the hosts' run trace on")
    ap.add_argument("--quick", action="store_true", help="300 requests per phase (CI smoke)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    ap.add_argument("--capacity", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve == "i2o-udp":
        serve_i2o_udp(a.path, a.capacity, a.trace)
        return 0
    if a.serve:
        serve_file(a.path, a.capacity, a.serve.removeprefix("file-"))
        return 0
    if a.quick:
        a.ops, a.rounds, a.warmup = 300, 3, 50
    with tempfile.TemporaryDirectory(prefix="i2o-bypass-", dir=a.dir) as root:
        res = bench(a.ops, a.rounds, a.warmup, a.capacity_mib << 20, root, a.trace)
    if a.json:
        print(json.dumps(res, indent=1))
    else:
        report(res)
    v = res["verified"]
    return 1 if v["read_mismatches"] or v["file_mismatches"] else 0


if __name__ == "__main__":
    sys.exit(main())
