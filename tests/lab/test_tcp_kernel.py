"""ftsslab's TCP core against the kernel's: a real Linux socket in one namespace, the core
(``rawtcp.RawTcp`` over AF_PACKET) in the other, on a veth link that loses, reorders,
duplicates and corrupts frames (the lab's impairment shim).

Hypothesis picks the writes of both applications; each side writes on one thread and reads
to EOF on another, so the two byte streams run at once. What each side read must be what
the other wrote, and no RST may cross the link -- counted by the core's packet socket and
in the shim's capture, which also sees whatever the core's namespace's own kernel sends.
One lab serves every example (a lab takes a second or two to build on a loaded box); the
kernel's side gets ``rto_min 20ms`` and ``quickack`` on its route, so a lost segment costs
it what it costs the core (``min_rto`` 50 ms here), not Linux's 200 ms.

The kernel always sends the first FIN. A passive closer that has closed (LAST-ACK, then
CLOSED) answers a late copy of the peer's last segments -- which this link duplicates and
reorders -- with a RST, as RFC 9293 says and Linux does; the active closer's TIME-WAIT
absorbs them. The core's driver lingers after CLOSED instead, so the kernel is made the
active closer: any RST left is a real disagreement. (FIN in both orders: ``test_tcp.py``.)
"""

from __future__ import annotations

import random
import socket
import subprocess
import threading
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftsslab.lab.scenario import load_scenario_text
from tests import support

pytestmark = pytest.mark.root

CORE_IP, CORE_MAC = "10.0.0.1", "02:00:00:00:00:11"  # not h1's address nor its MAC
SMALL_IP, SMALL_MAC = "10.0.0.5", "02:00:00:00:00:15"  # a second core: a 4 KiB window
KERNEL_IP, CORE_PORT, KERNEL_PORT = "10.0.0.2", 8080, 9090
IMPAIR = "{loss: 2%, delay: 1ms, reorder: 10%, duplicate: 1%, corrupt: 0.5%}"
SCENARIO = f"""
name: tcp-kernel
seed: 7
nodes: {{h1: {{kind: host}}, h2: {{kind: host}}}}
links:
  - endpoints: [{{node: h1, interface: eth0, mac: "02:00:00:00:00:01"}},
                {{node: h2, interface: eth0, mac: "02:00:00:00:00:02", ipv4: {KERNEL_IP}/24}}]
    impair: {IMPAIR}
"""
WAIT = 60.0  # generous: a loaded 2-core box, 2% loss


@dataclass
class Lab:
    backend: object
    stack: object
    small: object  # a core whose receive buffer is 4 KiB: its window shuts and reopens
    listener: socket.socket  # the kernel's, in h2

    def kernel_socket(self) -> socket.socket:
        from ftsslab.lab.veth.netns import call_in_netns

        return call_in_netns(self.backend.namespace("h2"), socket.socket)


@pytest.fixture(scope="module")
def lab():
    from ftsslab.lab.veth.backend import VethBackend
    from ftsslab.lab.veth.netns import call_in_netns
    from ftsslab.lab.veth.rawtcp import RawTcp

    before = support.lab_resources()
    b = VethBackend()
    try:
        b.up(load_scenario_text(SCENARIO))
        subprocess.run(["ip", "-n", b.namespace("h2"), "route", "replace", "10.0.0.0/24",
                        "dev", "eth0", "src", KERNEL_IP, "rto_min", "20ms", "quickack", "1"],
                       check=True, timeout=10)

        def listen() -> socket.socket:
            s = socket.socket()
            s.bind((KERNEL_IP, KERNEL_PORT))
            s.listen(4)
            return s

        listener = call_in_netns(b.namespace("h2"), listen)
        stack = RawTcp("eth0", CORE_IP, CORE_MAC, netns=b.namespace("h1"), rto=0.2,
                       min_rto=0.05)
        small = RawTcp("eth0", SMALL_IP, SMALL_MAC, netns=b.namespace("h1"), rto=0.2,
                       min_rto=0.05, rcvbuf=4096)
        stack.listen(CORE_PORT)
        small.listen(CORE_PORT)
        try:
            yield Lab(b, stack, small, listener)
        finally:
            small.close()
            stack.close()
            listener.close()
    finally:
        b.down()
    left = support.leaked(before)
    assert not left, "leaked:\n" + "\n".join(map(str, left))


def converse(send, shutdown, recv, chunks: list[bytes], fin_second: bool = False) -> bytes:
    """One application: ``chunks`` written on a thread of their own, then a FIN (once the
    peer's came, if ``fin_second``), while this thread reads to EOF; what it read."""
    errors: list[BaseException] = []
    eof = threading.Event()

    def writer() -> None:
        try:
            for c in chunks:
                send(c)
            if fin_second:
                eof.wait(WAIT)
            shutdown()
        except BaseException as exc:  # reported by the reader
            errors.append(exc)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    got = bytearray()
    while data := recv():
        got += data
    eof.set()
    t.join(WAIT)
    if errors:
        raise errors[0]
    assert not t.is_alive(), "the writer did not finish"
    return bytes(got)


def kernel_converse(sock: socket.socket, chunks: list[bytes], box: dict) -> None:
    try:
        sock.settimeout(WAIT)
        box["got"] = converse(sock.sendall, lambda: sock.shutdown(socket.SHUT_WR),
                              lambda: sock.recv(1 << 16), chunks)
    except BaseException as exc:
        box["error"] = exc
    finally:
        sock.close()


def core_converse(conn, chunks: list[bytes], read: int = 1 << 16) -> bytes:
    got = converse(lambda c: conn.send(c, WAIT), conn.shutdown,
                   lambda: conn.recv(read, WAIT), chunks, fin_second=True)
    conn.wait_closed(WAIT)
    return got


def run_both(lab: Lab, core_is_server: bool, core_chunks, kernel_chunks,
             small: bool = False) -> None:
    """One example; ``small``: the 4 KiB core as server, read 1000 bytes at a time."""
    box: dict = {}
    stack = lab.small if small else lab.stack
    if core_is_server:
        sock = lab.kernel_socket()

        def kernel() -> None:
            try:
                sock.settimeout(WAIT)
                sock.connect((SMALL_IP if small else CORE_IP, CORE_PORT))
            except BaseException as exc:
                box["error"] = exc
                sock.close()
                return
            kernel_converse(sock, kernel_chunks, box)
    else:
        def kernel() -> None:
            lab.listener.settimeout(WAIT)
            try:
                sock, _ = lab.listener.accept()
            except BaseException as exc:
                box["error"] = exc
                return
            kernel_converse(sock, kernel_chunks, box)

    t = threading.Thread(target=kernel, daemon=True)
    t.start()
    try:
        conn = (stack.accept(CORE_PORT, WAIT) if core_is_server
                else stack.connect((KERNEL_IP, KERNEL_PORT), WAIT))
        core_got = core_converse(conn, core_chunks, 1000 if small else 1 << 16)
    finally:
        t.join(WAIT)
    assert not t.is_alive(), "the kernel's side did not finish"
    if "error" in box:
        raise box["error"]
    assert core_got == b"".join(kernel_chunks)
    assert box["got"] == b"".join(core_chunks)
    assert (stack.rst_in, stack.rst_out) == (0, 0)


def on_the_wire(lab: Lab) -> dict[str, int]:
    """TCP frames in the link's capture, RSTs among them, and what the link did to them. A
    frame the link corrupted is no one's RST (the flipped bit may be that one)."""
    seen = dict.fromkeys(("tcp", "rst", "lost", "duplicate", "corrupt"), 0)
    for f in lab.backend.frames():
        d = f.data
        if len(d) < 34 or d[12:14] != b"\x08\x00" or d[23] != 6:
            continue
        seen["tcp"] += 1
        for what in ("lost", "duplicate", "corrupt"):
            seen[what] += what in f.impair
        at = 14 + (d[14] & 0xF) * 4 + 13
        seen["rst"] += "corrupt" not in f.impair and len(d) > at and bool(d[at] & 0x04)
    return seen


writes = st.lists(st.integers(1, 100_000), max_size=6)


def _check(lab: Lab, core_is_server: bool, small: bool = False, examples: int = 40) -> None:
    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(seed=st.integers(0, 2**32), core=writes, kernel=writes)
    def example(seed, core, kernel):
        rng = random.Random(seed)
        run_both(lab, core_is_server, [rng.randbytes(n) for n in core],
                 [rng.randbytes(n) for n in kernel], small)

    example()
    seen = on_the_wire(lab)
    assert seen["rst"] == 0, seen
    assert all(seen[k] for k in ("tcp", "lost", "duplicate", "corrupt")), seen  # impaired


def test_the_core_as_server_against_a_kernel_client(lab):
    _check(lab, core_is_server=True)


def test_the_core_as_client_against_a_kernel_server(lab):
    _check(lab, core_is_server=False)
    assert lab.stack.bad_checksum > 0  # the corrupted frames were refused, not taken


def test_a_4_kib_core_window_shuts_and_reopens_under_a_kernel_sender(lab):
    """The kernel sends into a window that a slow reader keeps closing: its zero-window
    probes, the core's window updates (and their losses) -- the same bytes, no RST."""
    _check(lab, core_is_server=True, small=True, examples=15)
    shut = 0
    for f in lab.backend.frames():
        d = f.data
        if len(d) >= 54 and d[12:14] == b"\x08\x00" and d[26:30] == socket.inet_aton(SMALL_IP):
            at = 14 + (d[14] & 0xF) * 4
            shut += d[at + 14:at + 16] == b"\0\0" and not d[at + 13] & 0x02
    assert shut > 0  # the window did shut
