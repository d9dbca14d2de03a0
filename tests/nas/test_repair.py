# SPDX-License-Identifier: GPL-2.0-or-later
"""ftsslab.nas.repair: a live kernel TCP connection moves to another socket, then to another
namespace behind a NAS switch, and the unmodified client notices nothing.

The root tests run the handoff as the lab will (hold the flow, checkpoint, close silently,
restore, flip the switch, leave repair, release) and check what the client saw: every byte
(SHA-256), no RST, no retransmission. ``python -m tests.nas.test_repair device ...`` is the
device process of the cross-namespace test (it runs inside a device's namespace).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import random
import select
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftsslab.lab.veth import names, netns
from ftsslab.nas import repair
from ftsslab.nas.repair import RepairError, TcpCheckpoint, TcpWindow

ROOT = Path(__file__).resolve().parents[2]
MIB = 1 << 20
BOUND = 20.0  # seconds any one wait may take on a loaded 2-core box
RETRANS = ("TcpRetransSegs", "TcpExtTCPLostRetransmit")
RESETS = ("TcpOutRsts", "TcpEstabResets")
TIMINGS: dict[str, list[float]] = {"checkpoint_ms": [], "restore_ms": [], "hold_window_ms": []}

# ---- pack / unpack -------------------------------------------------------------------------

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
ipv4 = st.ip_addresses(v=4).map(str)


@st.composite
def checkpoints(draw) -> TcpCheckpoint:
    send_queue = draw(st.binary(max_size=300))
    snd_nxt = draw(u32)
    return TcpCheckpoint(
        local_ip=draw(ipv4), local_port=draw(u16), remote_ip=draw(ipv4), remote_port=draw(u16),
        snd_nxt=snd_nxt, snd_una=(snd_nxt - len(send_queue)) & 0xFFFFFFFF, rcv_nxt=draw(u32),
        send_queue=send_queue, recv_queue=draw(st.binary(max_size=300)), mss=draw(u16),
        snd_wscale=draw(st.integers(0, 14)), rcv_wscale=draw(st.integers(0, 14)),
        sack_ok=draw(st.booleans()), ts_ok=draw(st.booleans()), timestamp=draw(u32),
        window=TcpWindow(*(draw(u32) for _ in range(5))),
        unsent=draw(st.integers(0, len(send_queue))))


@given(checkpoints())
def test_pack_round_trip(cp):
    data = cp.pack()
    assert data[0] == TcpCheckpoint.VERSION
    assert len(data) == 62 + len(cp.send_queue) + len(cp.recv_queue)
    assert TcpCheckpoint.unpack(data) == cp
    assert TcpCheckpoint.unpack(bytearray(data)) == cp


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_unpack_never_raises_on_arbitrary_bytes(data):
    cp = TcpCheckpoint.unpack(data)
    assert cp is None or cp.pack() == data  # whatever it accepts is canonical


@settings(max_examples=300)
@given(checkpoints(), st.data())
def test_unpack_never_raises_on_damaged_checkpoints(cp, data):
    raw = bytearray(cp.pack())
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    for damaged in (bytes(raw), bytes(raw[:cut]), bytes(raw) + b"\0"):
        got = TcpCheckpoint.unpack(damaged)
        assert got is None or got.pack() == damaged


@given(checkpoints())
def test_unpack_rejects_other_versions_and_lengths(cp):
    data = cp.pack()
    assert TcpCheckpoint.unpack(bytes([2]) + data[1:]) is None
    assert TcpCheckpoint.unpack(data + b"x") is None
    assert TcpCheckpoint.unpack(data[:-1]) is None
    assert TcpCheckpoint.unpack("not bytes") is None


def test_inconsistent_checkpoints_are_refused():
    cp = TcpCheckpoint("10.9.0.100", 80, "10.9.0.1", 40000, 1000, 990, 5, b"x" * 10, b"", 1460,
                       7, 7, True, True, 123, TcpWindow(5, 65535, 65535, 65535, 5), unsent=4)
    for bad in ({"snd_una": 991}, {"snd_wscale": 15}, {"local_ip": "::1"},
                {"remote_port": 65536}, {"unsent": 11}, {"timestamp": -1}):
        with pytest.raises(ValueError):
            TcpCheckpoint(**{**vars(cp), **bad})


def test_repair_error_names_the_step():
    err = RepairError("TCP_QUEUE_SEQ(send)", 1)
    assert isinstance(err, OSError) and err.errno == 1 and err.step == "TCP_QUEUE_SEQ(send)"
    assert str(err) == "[Errno 1] TCP_QUEUE_SEQ(send): Operation not permitted"


# ---- helpers for the root tests ------------------------------------------------------------

def counters() -> dict[str, int]:
    """``nstat``'s view of the calling thread's namespace (/proc/net is per process)."""
    found = {}
    for name in ("snmp", "netstat"):
        lines = Path(f"/proc/thread-self/net/{name}").read_text().splitlines()
        for head, values in zip(lines[::2], lines[1::2], strict=True):
            proto = head.split(":")[0]
            for key, value in zip(head.split()[1:], values.split()[1:], strict=True):
                found[proto + key] = int(value)
    return found


def delta(before: dict[str, int], after: dict[str, int], keys) -> dict[str, int]:
    return {k: after[k] - before[k] for k in keys}


def nft(script: str) -> None:
    """One nft transaction in the calling thread's namespace (forked children inherit it)."""
    netns.run(["nft", "-f", "-"], input=script, timeout=BOUND)


def wait_for(cond: Callable[[], bool], what: str, bound: float = BOUND) -> None:
    deadline = time.monotonic() + bound
    while not cond():
        assert time.monotonic() < deadline, f"timed out after {bound:g}s waiting for {what}"
        time.sleep(0.002)


@contextlib.contextmanager
def namespaces(*nodes: str) -> Iterator[dict[str, str]]:
    """Fresh namespaces named like a lab's; they and every process in them go at the end."""
    lab = names.new_lab_id()
    made = {node: names.ns_name(lab, node) for node in nodes}
    try:
        for ns in made.values():
            netns.run(["ip", "netns", "add", ns])
            netns.call_in_netns(ns, netns.disable_ipv6)
            netns.run(["ip", "-n", ns, "link", "set", "lo", "up"])
        yield made
    finally:
        inodes = {i for ns in made.values() if (i := netns.netns_inode(ns)) is not None}
        for pid in netns.pids_in_netns(inodes):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        for ns in made.values():
            netns.run(["ip", "netns", "del", ns], check=False)


def hold_script(match: str) -> str:
    """An nft table that drops ``match`` before the socket layer sees it."""
    return ("table inet hold {\n chain input {\n  type filter hook input priority -300\n"
            f"  {match} drop\n }}\n}}\n")


class Hold:
    """Freeze one flow toward the socket being moved: an nft input drop in the calling
    thread's namespace (a device drops the flow in its own namespace the same way)."""

    def __init__(self, sport: int, dport: int) -> None:
        nft(hold_script(f"tcp sport {sport} tcp dport {dport}"))

    def release(self) -> None:
        nft("delete table inet hold")


def move(sock: socket.socket, hold: Hold) -> tuple[socket.socket, TcpCheckpoint]:
    """The handoff inside one namespace, in the lab's order: checkpoint, silent close,
    restore from the packed bytes, release the hold (where the lab flips the switch), leave
    repair. Released after leave_repair, the hold would drop the peer's answer to the
    window probe, and the new socket would sit out an RTO."""
    t0 = time.perf_counter()
    cp = repair.checkpoint(sock)
    t1 = time.perf_counter()
    repair.close_silently(sock)
    restored = TcpCheckpoint.unpack(cp.pack())
    assert restored == cp
    t2 = time.perf_counter()
    new = repair.restore(restored)
    t3 = time.perf_counter()
    hold.release()
    repair.leave_repair(new)
    TIMINGS["checkpoint_ms"].append((t1 - t0) * 1e3)
    TIMINGS["restore_ms"].append((t3 - t2) * 1e3)
    return new, cp


def outq(sock: socket.socket, req: int = repair.SIOCOUTQ) -> int:
    """SIOCOUTQ (or another int ioctl) of ``sock``."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), req, bytes(4)))[0]


# ---- same namespace, over loopback ---------------------------------------------------------

def _pair() -> tuple[socket.socket, socket.socket, int]:
    """(client, server, server port) over loopback. The client's small receive buffer keeps
    the server's send queue from draining into it, so a checkpoint always finds bytes.

    The calling thread and the threads it starts keep to one CPU: loopback delivers through
    the sending CPU's backlog, so a sender that migrates reorders its own segments, and
    the receiver's SACKs make the peer retransmit, handoff or not.
    """
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    ls = socket.create_server(("127.0.0.1", 0))
    port = ls.getsockname()[1]
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
    client.settimeout(BOUND)
    client.connect(("127.0.0.1", port))
    server, _ = ls.accept()
    ls.close()
    return client, server, port


def _download(n: int) -> dict:
    data = random.randbytes(n)
    client, server, port = _pair()
    sha, errors = hashlib.sha256(), []

    def read() -> None:
        try:
            while chunk := client.recv(MIB):
                sha.update(chunk)
        except OSError as exc:
            errors.append(exc)

    before = counters()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    server.sendall(data[:n // 4])
    hold = Hold(client.getsockname()[1], port)
    server.setblocking(False)
    off = n // 4
    with contextlib.suppress(BlockingIOError):  # no ACKs now: the send queue fills up
        while off < n:
            off += server.send(data[off:off + 65536])
    server, cp = move(server, hold)
    server.setblocking(True)
    server.sendall(data[off:])
    server.close()
    reader.join(BOUND)
    return {"cp": cp, "ok": sha.digest() == hashlib.sha256(data).digest(), "errors": errors,
            "alive": reader.is_alive(), "before": before, "after": counters()}


def _upload(n: int) -> dict:
    data = random.randbytes(n)
    client, server, port = _pair()
    errors = []

    def write() -> None:
        try:
            client.sendall(data)
            client.shutdown(socket.SHUT_WR)
            assert client.recv(1) == b""  # the server's FIN, no RST
        except (OSError, AssertionError) as exc:
            errors.append(exc)

    before = counters()
    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    got = bytearray()
    while len(got) < n // 4:
        got += server.recv(MIB)
    # Stop reading until the window is closed: the receive queue is full (it must travel)
    # and the client holds its data back, so the hold drops no data (a device would buffer
    # and relay what it drops; dropped data would come back as a client retransmission).
    zero = counters()["TcpExtTCPToZeroWindowAdv"]
    wait_for(lambda: counters()["TcpExtTCPToZeroWindowAdv"] > zero, "a zero window")
    hold = Hold(client.getsockname()[1], port)
    server, cp = move(server, hold)
    window = peek_window(server)
    server.settimeout(BOUND)
    while chunk := server.recv(MIB):
        got += chunk
    server.close()
    writer.join(BOUND)
    return {"cp": cp, "ok": bytes(got) == data, "errors": errors, "alive": writer.is_alive(),
            "before": before, "after": counters(), "window": window}


def peek_window(sock: socket.socket) -> TcpWindow:
    """The socket's TCP_REPAIR_WINDOW, read in repair mode and left without a probe."""
    sock.setsockopt(socket.SOL_TCP, repair.TCP_REPAIR, repair.TCP_REPAIR_ON)
    raw = sock.getsockopt(socket.SOL_TCP, repair.TCP_REPAIR_WINDOW, 20)
    sock.setsockopt(socket.SOL_TCP, repair.TCP_REPAIR, repair.TCP_REPAIR_OFF_NO_WP)
    return TcpWindow(*struct.unpack("=5I", raw))


@pytest.mark.root
@pytest.mark.parametrize("direction", ["download", "upload"])
def test_handoff_in_one_namespace(direction):
    with namespaces("r") as ns:
        # No tail loss probes: on a loaded box a reader that is not scheduled for 8 ms
        # draws a spurious one, with or without a handoff. A retransmission is then a
        # real loss (recovered by the RTO), which the handoff must not cause.
        netns.call_in_netns(ns["r"], netns.write_sysctl, "net.ipv4.tcp_early_retrans", "0")
        run = _download if direction == "download" else _upload
        res = netns.call_in_netns(ns["r"], run, 16 * MIB)
    cp = res["cp"]
    queue = cp.send_queue if direction == "download" else cp.recv_queue
    assert len(queue) > 0, "the checkpoint caught no queued bytes: the test proves nothing"
    assert not res["alive"], "the client never finished"
    assert res["errors"] == [], res["errors"]  # no ECONNRESET (or anything else)
    assert res["ok"], "the bytes differ"
    if direction == "upload":
        # The window probe's window is one the client ignored: the restored socket must not
        # believe it advertised it (else it sends no update and the client, at zero window,
        # waits for its persist timer). Its right edge is still the checkpoint's.
        w, old = res["window"], cp.window
        assert old.rcv_wnd == 0, "the client was not held at zero window"
        assert (w.rcv_wup + w.rcv_wnd, w.rcv_wnd) == (old.rcv_wup + old.rcv_wnd, 0)
    # one namespace: these count both ends, so neither side retransmitted or sent a RST;
    # the one "reset" is the silent close (ESTABLISHED -> CLOSE without a FIN)
    assert delta(res["before"], res["after"], RETRANS + RESETS) == {
        **dict.fromkeys(RETRANS, 0), "TcpOutRsts": 0, "TcpEstabResets": 1}


@pytest.mark.root
def test_errors_name_the_step():
    cp = TcpCheckpoint("10.77.0.1", 80, "127.0.0.1", 1, 1, 1, 1, b"", b"", 1460, 0, 0, False,
                       False, 1, TcpWindow(1, 1, 1, 1, 1))

    def body() -> tuple[RepairError, RepairError]:
        with pytest.raises(RepairError) as restore_err:
            repair.restore(cp)  # 10.77.0.1 is not this namespace's address
        with socket.socket() as s, pytest.raises(RepairError) as cp_err:
            repair.checkpoint(s)  # not connected
        return restore_err.value, cp_err.value
    with namespaces("r") as ns:
        restore_err, cp_err = netns.call_in_netns(ns["r"], body)
    assert restore_err.step == "bind(10.77.0.1:80)" and restore_err.errno == 99, restore_err
    assert cp_err.step == "checkpoint" and "not ESTABLISHED" in str(cp_err), cp_err


# ---- across namespaces, behind a NAS switch ------------------------------------------------

VIP, CLIENT_IP, CLIENT_PORT, PORT = "10.9.0.100", "10.9.0.1", 40123, 80
DEVICES = {"d1": ("10.9.0.11", "02:00:00:00:00:11", "p1"),
           "d2": ("10.9.0.12", "02:00:00:00:00:12", "p2")}
CLIENT_MAC, BRIDGE_MAC = "02:00:00:00:00:01", "02:00:00:00:00:fe"
SIZE, SEED, RATE = 16 * MIB, 2, 8 * MIB  # RATE: the devices' pacing, bytes/s
# The client answers out-of-window segments (the window probe) at most once per
# net.ipv4.tcp_invalid_ratelimit (0.5 s): a second handoff sooner gets no answer and waits
# for the RTO (1 s) -- so the handoffs are this far apart.
HANDOFF_GAP = 0.6
SO_MAX_PACING_RATE, SO_TIMESTAMPNS = 47, 35  # asm-generic/socket.h


def _build(ns: dict[str, str]) -> None:
    c, s = ns["c"], ns["s"]
    netns.run(["ip", "-n", c, "link", "add", "eth0", "type", "veth", "peer", "name", "p0",
               "netns", s])
    batches: dict[str, list[str]] = {
        c: [f"link set eth0 address {CLIENT_MAC} up", f"addr add {CLIENT_IP}/24 dev eth0",
            f"neigh replace {VIP} lladdr {BRIDGE_MAC} dev eth0 nud permanent"],
        s: [f"link add br0 address {BRIDGE_MAC} type bridge", "link set br0 up",
            "link set p0 master br0 up"]}
    for dev, (ip, mac, port) in DEVICES.items():
        netns.run(["ip", "-n", ns[dev], "link", "add", "eth0", "type", "veth", "peer", "name",
                   port, "netns", s])
        batches[ns[dev]] = [f"link set eth0 address {mac} up", f"addr add {ip}/24 dev eth0",
                            f"addr add {VIP}/32 dev lo"]
        batches[s].append(f"link set {port} master br0 up")
    netns.ip_batches(batches)
    for dev in DEVICES:
        netns.call_in_netns(ns[dev], _vip_sysctls)
    veths = {c: ["eth0"], s: ["p0", "p1", "p2"], ns["d1"]: ["eth0"], ns["d2"]: ["eth0"]}
    for name, ifs in veths.items():  # full checksums on every frame the switch forwards
        netns.call_in_netns(name, netns.set_checksum_offload, ifs, False)
        assert netns.call_in_netns(name, netns.wait_running, ifs, BOUND) == []
    netns.call_in_netns(s, nft, 'table netdev sw {\n chain p0 {\n  type filter hook ingress '
                        'device "p0" priority 0\n }\n}\n' + _steer("d1"))


def _vip_sysctls() -> None:
    """LVS-DR style: a device neither answers ARP for the VIP on its lo nor announces it."""
    for scope in ("all", "eth0"):
        netns.write_sysctl(f"net.ipv4.conf.{scope}.arp_ignore", "1")
        netns.write_sysctl(f"net.ipv4.conf.{scope}.arp_announce", "2")


def _steer(dev: str) -> str:
    """The switch's forwarding entry for the client's flow, pointing at ``dev``."""
    _, mac, port = DEVICES[dev]
    return (f"flush chain netdev sw p0\nadd rule netdev sw p0 ip saddr {CLIENT_IP} "
            f"ip daddr {VIP} tcp sport {CLIENT_PORT} ether daddr set {mac} fwd to \"{port}\"\n")


class Device:
    """A device process in its namespace, driven over its stdin/stdout (see ``device``)."""

    def __init__(self, ns: str) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "tests.nas.test_repair", "device"],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)

    def call(self, line: str, payload: bytes = b"") -> list[str]:
        self.proc.stdin.write(line.encode() + b"\n" + payload)
        return self.reply()

    def freeze(self) -> tuple[list[str], bytes]:
        """The device's checkpoint: its reply starts with the size of the packed bytes."""
        words = self.call("freeze")
        return words, self._read(int(words[0]))

    def _read(self, size: int | None) -> bytes:
        """``size`` bytes (None: up to a newline) from the device, within BOUND."""
        got, deadline = bytearray(), time.monotonic() + BOUND
        while (len(got) < size) if size is not None else not got.endswith(b"\n"):
            left = deadline - time.monotonic()
            assert left > 0 and select.select([self.proc.stdout], [], [], left)[0], \
                "the device process does not answer"
            chunk = self.proc.stdout.read(1 if size is None else size - len(got))
            assert chunk, f"the device process exited ({self.proc.wait()})"
            got += chunk
        return bytes(got)

    def reply(self) -> list[str]:
        words = self._read(None).decode().split()
        assert words and words[0] == "ok", f"device: {' '.join(words)}"
        return words[1:]

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Tap:
    """The client's capture: (kernel rx time, src MAC, TCP flags, payload length) per TCP
    frame on the client's link."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        self.sock.setsockopt(socket.SOL_SOCKET, repair.SO_RCVBUFFORCE, 64 * MIB)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind(("eth0", 0x0003))
        self.frames: list[tuple[float, str, int, int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            if not select.select([self.sock], [], [], 0.05)[0]:
                continue
            frame, anc, _, _ = self.sock.recvmsg(128, 64)
            if len(frame) < 54 or frame[12:14] != b"\x08\x00" or frame[23] != 6 or not anc:
                continue  # not IPv4/TCP
            ihl, tcp = (frame[14] & 0xF) * 4, 14 + (frame[14] & 0xF) * 4
            length = struct.unpack_from("!H", frame, 16)[0] - ihl - (frame[tcp + 12] >> 4) * 4
            sec, nsec = struct.unpack("qq", anc[0][2][:16])  # SCM_TIMESTAMPNS
            self.frames.append((sec + nsec / 1e9, frame[6:12].hex(":"), frame[tcp + 13], length))

    def close(self) -> int:
        """Stops capturing; returns how many frames the kernel dropped (must be 0)."""
        self.stop.set()
        self.thread.join(BOUND)
        drops = struct.unpack("II", self.sock.getsockopt(263, 6, 8))[1]  # PACKET_STATISTICS
        self.sock.close()
        return drops


def _client(ns: str) -> dict:
    """The unmodified client (kernel TCP): downloads SIZE bytes from VIP:PORT."""
    box: dict = {"errors": [], "got": 0}

    def run() -> None:
        sha = hashlib.sha256()
        try:
            with socket.socket() as s:
                s.settimeout(BOUND)
                s.bind((CLIENT_IP, CLIENT_PORT))
                s.connect((VIP, PORT))
                while box["got"] < SIZE:
                    chunk = s.recv(MIB)
                    if not chunk:
                        break
                    sha.update(chunk)
                    box["got"] += len(chunk)
        except OSError as exc:
            box["errors"].append(exc)
        box["sha"] = sha.hexdigest()

    def start() -> None:
        box["before"] = counters()
        box["tap"] = Tap()
        box["thread"] = threading.Thread(target=run, daemon=True)
        box["thread"].start()
    netns.call_in_netns(ns, start)
    return box


def _handoff(ns: dict[str, str], devs: dict[str, Device], src: str, dst: str) -> dict:
    """The safe order; returns its timestamps and what the checkpoint held."""
    flow = f"ip saddr {CLIENT_IP} tcp sport {CLIENT_PORT} tcp dport {PORT}"
    t_hold = time.time()
    netns.call_in_netns(ns[src], nft, hold_script(flow))
    t_held = time.time()
    words, blob = devs[src].freeze()
    offset, cp_ms, t_frozen = words[1], float(words[2]), float(words[3])
    cp = TcpCheckpoint.unpack(blob)
    restore_ms = float(devs[dst].call(f"restore {len(blob)} {offset}", blob)[0])
    t_restored = time.time()
    netns.call_in_netns(ns["s"], nft, _steer(dst))
    t_flipped = time.time()
    t_left = float(devs[dst].call("leave")[0])
    netns.call_in_netns(ns[src], nft, "delete table inet hold")
    TIMINGS["checkpoint_ms"].append(cp_ms)
    TIMINGS["restore_ms"].append(restore_ms)
    print(f"\n{src} -> {dst}: hold rule {1e3 * (t_held - t_hold):.1f} ms, freeze (wait for "
          f"in-flight bytes, checkpoint) {1e3 * (t_frozen - t_held):.1f}, pass it on and "
          f"restore {1e3 * (t_restored - t_frozen):.1f}, flip {1e3 * (t_flipped - t_restored):.1f}"
          f", leave {1e3 * (t_left - t_flipped):.1f}; {len(cp.send_queue)} bytes queued, "
          f"{cp.unsent} unsent")
    return {"t_hold": t_hold, "t_frozen": t_frozen, "t_left": t_left, "cp": cp}


@pytest.mark.root
def test_handoff_across_namespaces_behind_a_switch():
    expected = hashlib.sha256(random.Random(SEED).randbytes(SIZE)).hexdigest()
    with namespaces("c", "s", "d1", "d2") as ns, contextlib.ExitStack() as stack:
        _build(ns)
        devs = {dev: Device(ns[dev]) for dev in DEVICES}
        for d in devs.values():
            stack.callback(d.close)
            d.reply()  # "ok listening" on VIP:PORT
        client = _client(ns["c"])
        wait_for(lambda: client["got"] >= SIZE // 4, "a quarter of the download")
        first = _handoff(ns, devs, "d1", "d2")
        time.sleep(max(0.0, first["t_left"] + HANDOFF_GAP - time.time()))
        second = _handoff(ns, devs, "d2", "d1")
        client["thread"].join(BOUND)
        assert not client["thread"].is_alive(), f"the client got {client['got']} bytes only"
        after = netns.call_in_netns(ns["c"], counters)
        drops = netns.call_in_netns(ns["c"], client["tap"].close)
    for h in (first, second):
        cp = h["cp"]
        assert len(cp.send_queue) > cp.unsent > 0, "not both in flight and unsent bytes"
    assert client["errors"] == [], client["errors"]
    assert client["got"] == SIZE and client["sha"] == expected
    frames = client["tap"].frames
    assert drops == 0 and len(frames) > SIZE // 1500, "the capture is incomplete"
    assert [f for f in frames if f[2] & 0x04] == [], "an RST reached the client"
    assert delta(client["before"], after, RETRANS + RESETS) == dict.fromkeys(
        RETRANS + RESETS, 0)
    d1_mac, d2_mac = DEVICES["d1"][1], DEVICES["d2"][1]
    for h, old, new in ((first, d1_mac, d2_mac), (second, d2_mac, d1_mac)):
        # the old device is silent once frozen: no data, no FIN, no RST until it serves again
        until = second["t_hold"] if h is first else float("inf")
        late = [f for f in frames if f[1] == old and h["t_frozen"] + 0.05 < f[0] < until]
        assert late == [], f"{old} still sent after its checkpoint: {late[:3]}"
        data = [f[0] for f in frames if f[1] == new and f[3] > 0 and f[0] > h["t_hold"]]
        assert data, f"no data from {new} after the handoff"
        TIMINGS["hold_window_ms"].append((data[0] - h["t_hold"]) * 1e3)
    assert [f for f in frames if f[2] & 0x01 and f[1] == d2_mac] == [], "a FIN from d2"


@pytest.fixture(scope="module", autouse=True)
def timings_report():
    """With -s: the p50 of what the root tests measured."""
    yield
    if any(TIMINGS.values()):
        print("\nTCP handoff timings (ms): " + ", ".join(
            f"{k} p50 {statistics.median(v):.2f} (n={len(v)}, max {max(v):.2f})"
            for k, v in TIMINGS.items() if v))


# ---- the device process --------------------------------------------------------------------

def device() -> None:
    """Serves SIZE seeded bytes on VIP:PORT to one client, paced at RATE; hands its
    connection off and takes one over on command (lines on stdin, "ok ..." on stdout)."""
    data = random.Random(SEED).randbytes(SIZE)
    lock = threading.Lock()
    state: dict = {"sock": None, "off": 0, "pending": None}
    out = sys.stdout.buffer

    def say(*words, payload: bytes = b"") -> None:
        out.write(" ".join(map(str, ("ok", *words))).encode() + b"\n" + payload)
        out.flush()

    def serve(sock: socket.socket, off: int) -> None:
        sock.setsockopt(socket.SOL_SOCKET, SO_MAX_PACING_RATE, RATE)
        state["sock"], state["off"] = sock, off

    def write() -> None:
        while True:
            with lock:
                sock, off = state["sock"], state["off"]
                with contextlib.suppress(BlockingIOError):
                    if sock is not None and off < SIZE:
                        state["off"] += sock.send(data[off:off + 65536], socket.MSG_DONTWAIT)
                    elif sock is not None and sock.recv(1, socket.MSG_DONTWAIT) == b"":
                        sock.close()  # the client has all and closed: we close too
                        state["sock"] = None
            time.sleep(0.002)

    listener = socket.create_server((VIP, PORT), reuse_port=False)
    threading.Thread(target=lambda: serve(listener.accept()[0], 0), daemon=True).start()
    threading.Thread(target=write, daemon=True).start()
    say("listening")
    inp = sys.stdin.buffer
    while line := inp.readline().split():
        if line[0] == b"freeze":
            with lock:
                # ACKs are held now: what goes out stays unacked. Wait for some, so the
                # checkpoint has bytes in flight as well as unsent ones.
                sock = state["sock"]
                deadline = time.monotonic() + 0.2
                while (outq(sock) == outq(sock, repair.SIOCOUTQNSD)
                       and time.monotonic() < deadline):
                    time.sleep(0.0005)
                t0 = time.perf_counter()
                cp = repair.checkpoint(state["sock"])
                ms = (time.perf_counter() - t0) * 1e3
                repair.close_silently(state["sock"])
                state["sock"] = None
                blob = cp.pack()
                say(len(blob), state["off"], f"{ms:.3f}", time.time(), payload=blob)
        elif line[0] == b"restore":
            blob = inp.read(int(line[1]))
            t0 = time.perf_counter()
            sock = repair.restore(TcpCheckpoint.unpack(blob))
            state["pending"] = (sock, int(line[2]))
            say(f"{(time.perf_counter() - t0) * 1e3:.3f}")
        elif line[0] == b"leave":
            sock, off = state["pending"]
            sock.setsockopt(socket.SOL_SOCKET, SO_MAX_PACING_RATE, RATE)
            with lock:
                repair.leave_repair(sock)
                serve(sock, off)
            say(time.time())


if __name__ == "__main__" and sys.argv[1:] == ["device"]:
    device()
