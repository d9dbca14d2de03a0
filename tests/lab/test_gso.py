"""The core's segments through the kernel's GSO (``veth/gso.py``): which segments may go as
one frame, and -- on a real veth -- that the kernel cuts such a frame back into exactly the
segments the TCB made, each with a right checksum."""

from __future__ import annotations

import socket
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftsslab.lab.scenario import load_scenario_text
from ftsslab.lab.tcp import ACK, FIN, PSH, SYN, TcpSegment, decode
from ftsslab.lab.veth import gso

A, B = "10.0.0.1", "10.0.0.2"


def seg(seq: int, n: int, flags: int = ACK, **kw) -> TcpSegment:
    fields = {"src": A, "dst": B, "sport": 80, "dport": 5000, "seq": seq % (1 << 32),
              "ack": 7, "flags": flags, "window": 500, "payload": bytes([seq % 251]) * n,
              "ts": (1, 2), **kw}
    return TcpSegment(**fields)


def stream(start: int, sizes: list[int], flags: list[int]) -> list[TcpSegment]:
    out, at = [], start
    for n, f in zip(sizes, flags, strict=True):
        out.append(seg(at, n, f))
        at += n
    return out


def test_a_write_goes_as_one_run_and_what_the_kernel_cannot_repeat_does_not():
    write = stream(2**32 - 3000, [1448] * 5 + [100], [ACK] * 5 + [ACK | PSH])  # wraps
    assert list(gso.runs(write)) == [write]
    assert [len(r) for r in gso.runs(write[:2] + [write[2]._replace(ts=(9, 2))])] == [2, 1]
    assert [len(r) for r in gso.runs([write[0], write[0]._replace(flags=ACK | FIN)])] == [1, 1]
    short = [seg(0, 1000), seg(1000, 1448)]  # a short segment ends a run
    assert [len(r) for r in gso.runs(short)] == [1, 1]
    other = [seg(0, 1448), seg(1448, 1448)._replace(dport=5001)]
    assert [len(r) for r in gso.runs(other)] == [1, 1]
    pure_ack = [seg(0, 1448), seg(1448, 0)]
    assert [len(r) for r in gso.runs(pure_ack)] == [1, 1]
    big = stream(0, [1448] * 60, [ACK] * 60)  # no more than one IPv4 datagram holds
    assert [len(r) for r in gso.runs(big)] == [45, 15]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 1, 536, 1448]),
                          st.sampled_from([ACK, ACK, ACK | PSH, ACK | FIN, SYN | ACK]),
                          st.booleans()), max_size=40))
def test_runs_keep_every_segment_in_order_and_each_run_is_one_cut(spec):
    segs, at = [], 0
    for n, flags, gap in spec:
        at += 1000 if gap else 0
        segs.append(seg(at, n, flags))
        at += n
    runs = list(gso.runs(segs))
    assert [s for r in runs for s in r] == segs
    for r in runs[:]:
        size = len(r[0].payload)
        for a, b in zip(r, r[1:], strict=False):
            assert a.flags == ACK and len(a.payload) == size and b.seq == a.seq + size
            assert a._replace(seq=0, payload=b"", flags=0) == b._replace(seq=0, payload=b"",
                                                                          flags=0)


@pytest.mark.root
def test_the_kernel_cuts_a_run_into_the_segments_the_tcb_made():
    from ftsslab.lab.veth.backend import VethBackend
    from ftsslab.lab.veth.netns import call_in_netns

    b = VethBackend(capture=False)
    b.up(load_scenario_text("""
name: gso
nodes: {h1: {kind: host}, h2: {kind: host}}
links:
  - endpoints: [{node: h1, interface: eth0, mac: "02:00:00:00:00:01"},
                {node: h2, interface: eth0, mac: "02:00:00:00:00:02"}]
"""))
    tx = rx = None
    try:
        tx = call_in_netns(b.namespace("h1"), gso.open_socket, "eth0")

        def listen() -> socket.socket:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
            s.bind(("eth0", 0))
            s.settimeout(10)
            return s

        rx = call_in_netns(b.namespace("h2"), listen)
        mac = bytes.fromhex("020000000002") + bytes.fromhex("020000000011") + b"\x08\x00"
        write = stream(2**32 - 3000, [1448] * 7 + [333], [ACK] * 7 + [ACK | PSH])
        syn = seg(5, 0, SYN | ACK, mss=1460, wscale=7, sack_perm=False)
        odd = seg(9, 77)  # an odd length: the checksum's padding byte
        sent = [*write, syn, odd]
        for run in gso.runs(sent):
            tx.send(gso.frame(mac, run))
        got, end = [], time.monotonic() + 30
        while len(got) < len(sent) and time.monotonic() < end:
            got.append(rx.recv(65535))
        assert len(got) == len(sent)
        for frame, want in zip(got, sent, strict=True):
            assert frame[:14] == mac
            assert decode(frame[14:], verify=True) == want  # the checksum is right
            ours = want.encode()  # the same bytes, but for the IPv4 id and its checksum
            assert frame[14:18] + frame[20:24] + frame[26:] == ours[:4] + ours[6:10] + ours[12:]
        assert [int.from_bytes(f[18:20]) for f in got[:len(write)]] == list(range(len(write)))
    finally:
        for s in (tx, rx):
            if s is not None:
                s.close()
        b.down()
