"""The sim's modelled TCP (``tcp.Tcb``), its frames and the ``fetch`` client: sans-IO, so
two TCBs run back to back on a virtual clock here."""

from __future__ import annotations

import hashlib
import heapq
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftsslab.lab import frames
from ftsslab.lab.fetch import HttpFetch, Target, parse_urls
from ftsslab.lab.tcp import (
    ACK,
    FIN,
    RST,
    SYN,
    TRANSITIONS,
    Tcb,
    TcpError,
    TcpEvent,
    TcpSegment,
    TcpState,
    decode,
)

A, B = ("10.0.0.1", 40000), ("10.0.0.100", 80)


class Net:
    """A client and a server TCB joined by a wire that may drop or duplicate segments:
    ``fate(n)`` gives the number of copies of the n-th segment (0 drops it)."""

    def __init__(self, fate=lambda n: 1, delay: float = 0.001) -> None:
        self.fate, self.delay, self.now = fate, delay, 0.0
        self.flight: list = []
        self.order = itertools.count()
        self.sent = 0
        self.client, segs = Tcb.connect(A, B, 1000, 0.0)
        self.server: Tcb | None = None
        self.put(segs)

    def put(self, segs) -> None:
        for seg in segs:
            copies = self.fate(self.sent)
            self.sent += 1
            for _ in range(copies):
                heapq.heappush(self.flight, (self.now + self.delay, next(self.order), seg))

    def run(self, until: float = 60.0, each=None) -> None:
        while True:
            tcbs = [t for t in (self.client, self.server) if t is not None]
            due = [t.next_deadline() for t in tcbs if t.next_deadline() is not None]
            if self.flight:
                due.append(self.flight[0][0])
            if not due or min(due) > until:
                return
            self.now = max(self.now, min(due))
            if self.flight and self.flight[0][0] <= self.now:
                seg = heapq.heappop(self.flight)[2]
                seg = decode(seg.encode())  # through the wire format every time
                if (seg.dst, seg.dport) == B:
                    if self.server is None:
                        if seg.flags & (SYN | ACK) != SYN:
                            continue
                        self.server, out = Tcb.accept(seg, 5000, self.now)
                    else:
                        out = self.server.on_segment(seg, self.now)
                else:
                    out = self.client.on_segment(seg, self.now)
            else:
                out = [s for t in tcbs for s in t.on_timer(self.now)]
            self.put(out)
            if each is not None:
                self.put(each(self))


def test_handshake_data_and_close_from_both_ends():
    net = Net()
    net.run()
    assert net.client.state is net.server.state is TcpState.ESTABLISHED
    n, segs = net.server.write(b"x" * 100_000, net.now)
    assert n == net.server.sndbuf  # a bounded send buffer: the rest waits for room
    net.put(segs)
    net.run()
    got = net.client.read()
    assert len(got) == n and net.server.unacked == 0
    net.put(net.client.close(net.now))
    net.run(until=net.now + 0.01)
    assert net.server.peer_fin and net.server.state is TcpState.CLOSE_WAIT
    net.put(net.server.close(net.now))
    net.run()
    assert net.server.state is TcpState.CLOSED and net.client.state is TcpState.CLOSED
    assert [e for _, _, e in net.client.history][-2:] == [TcpEvent.PEER_FIN,
                                                         TcpEvent.TIME_WAIT_DONE]


def test_simultaneous_close():
    net = Net()
    net.run()
    net.put(net.client.close(net.now) + net.server.close(net.now))
    net.run()
    assert TcpState.CLOSING in [new for _, new, _ in net.client.history]
    assert net.client.state is net.server.state is TcpState.CLOSED


def test_reset_closes_the_peer():
    net = Net()
    net.run()
    net.put(net.server.abort())
    net.run()
    assert net.client.state is TcpState.CLOSED and net.client.reset


def test_a_silent_peer_is_given_up_with_a_reset():
    net = Net(fate=lambda n: 1 if n < 3 else 0)
    net.run()
    net.server.write(b"data", net.now)
    net.run()
    assert net.server.state is TcpState.CLOSED and net.server.reset
    assert net.server.history[-1][2] is TcpEvent.GIVE_UP


def test_the_application_may_not_misuse_it():
    net = Net()
    net.run()
    net.client.drop()
    with pytest.raises(TcpError):
        net.client.drop()
    net.server.close(net.now)
    with pytest.raises(TcpError):
        net.server.snapshot()  # FIN queued: no longer a connection to move


def test_every_transition_is_in_the_one_table():
    net = Net()
    net.run()
    net.server.write(b"y" * 5000, net.now)
    net.put(net.client.close(net.now))
    net.run()
    net.put(net.server.close(net.now))
    net.run()
    for tcb in (net.client, net.server):
        assert all(TRANSITIONS[(old, ev)] is new for old, new, ev in tcb.history)


def test_snapshot_and_restore_move_a_connection():
    """TCP_REPAIR's moves: a snapshot mid-transfer, a silent drop, a restore elsewhere that
    keeps what arrives in repair mode, then the rest of the stream."""
    net = Net()
    net.run()
    data = bytes(range(256)) * 400
    n, segs = net.server.write(data, net.now)
    net.put(segs)
    net.run(until=net.now + 0.0015)  # some of it in flight, unacknowledged
    snap = net.server.snapshot()
    assert snap.send_queue == data[n - len(snap.send_queue):n]
    net.server.drop()
    moved = Tcb.restore(snap)
    assert moved.state is TcpState.REPAIR
    net.server = moved
    net.run(until=net.now + 0.01)  # acks reach the repair TCB: kept, nothing sent
    net.put(moved.leave_repair(net.now))
    rest, done = data[n:], 0
    while done < len(rest):
        k, segs = moved.write(rest[done:], net.now)
        done += k
        net.put(segs)
        net.run(until=net.now + 0.01)
    net.run()
    assert net.client.read() == data


@settings(max_examples=60, deadline=None)
@given(drops=st.sets(st.integers(0, 80), max_size=12), dups=st.sets(st.integers(0, 80),
                                                                     max_size=8),
       size=st.integers(0, 30_000))
def test_lost_and_duplicated_segments_never_change_the_bytes(drops, dups, size):
    net = Net(fate=lambda n: 0 if n in drops else 2 if n in dups else 1)
    data = hashlib.sha256(str(size).encode()).digest() * (size // 32 + 1)
    data = data[:size]
    left = [data]

    def feed(net):
        if net.server is None or net.server.state is not TcpState.ESTABLISHED or not left[0]:
            return []
        k, segs = net.server.write(left[0], net.now)
        left[0] = left[0][k:]
        if not left[0]:
            segs += net.server.close(net.now)
        return segs

    net.run(until=120.0, each=feed)
    assert net.client.read() == data or net.client.reset or net.server.reset


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_parsers_never_raise(data):
    for parse in (decode, frames.parse_arp, frames.parse_udp, frames.ip_header,
                  frames.ip_payload):
        parse(data)
        parse(b"\x08\x00" * 7 + data)


def test_segment_bytes_round_trip_with_valid_checksums():
    seg = TcpSegment(A[0], B[0], A[1], B[1], seq=7, ack=9, flags=ACK | FIN, payload=b"hi")
    packet = seg.encode()
    assert decode(packet) == seg
    assert frames.checksum(packet[:20]) == 0
    assert decode(packet[:30]) is None  # truncated
    rst = TcpSegment(A[0], B[0], A[1], B[1], 1, 0, RST)
    assert decode(rst.encode()).flags == RST


def test_arp_and_udp_round_trip():
    req = frames.arp_request("02:00:00:00:01:01", "10.0.0.1", "10.0.0.100")
    arp = frames.parse_arp(req)
    assert (arp.op, arp.sender_ip, arp.target_ip) == (1, "10.0.0.1", "10.0.0.100")
    reply = frames.parse_arp(frames.arp_reply(arp, "02:00:00:00:09:09"))
    assert (reply.op, reply.sender_mac) == (2, bytes.fromhex("020000000909"))
    d = frames.Datagram("10.0.0.11", "10.0.0.254", 40500, 5016, b"xap")
    assert frames.parse_udp(frames.udp_packet(d)) == d


def test_frames_equal_scapys_bytes():
    """One source of truth per wire format: the sim's fast builders make Scapy's bytes."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import ARP, Ether

    mac, other = "02:00:00:00:01:01", "02:00:00:00:09:09"
    req = frames.arp_request(mac, "10.0.0.1", "10.0.0.100")
    assert req == bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=mac) / ARP(
        op=1, hwsrc=mac, psrc="10.0.0.1", hwdst="00:00:00:00:00:00", pdst="10.0.0.100"))
    assert frames.arp_reply(frames.parse_arp(req), other) == bytes(
        Ether(dst=mac, src=other) / ARP(op=2, hwsrc=other, psrc="10.0.0.100", hwdst=mac,
                                        pdst="10.0.0.1"))
    d = frames.Datagram("10.0.0.11", "10.0.0.254", 40500, 5016, b"xap")
    assert frames.udp_packet(d) == bytes(IP(src=d.src, dst=d.dst, id=0) /
                                         UDP(sport=d.sport, dport=d.dport) / d.payload)
    seg = TcpSegment(A[0], B[0], A[1], B[1], seq=7, ack=9, flags=ACK | FIN, payload=b"hi")
    assert seg.encode() == bytes(IP(src=A[0], dst=B[0], id=0) / TCP(
        sport=A[1], dport=B[1], seq=7, ack=9, flags="FA", window=65535) / b"hi")


# ---- the fetch client ----------------------------------------------------------------------

def test_urls_share_one_server():
    t = parse_urls(("http://10.0.0.100/a.bin", "http://10.0.0.100:80/b?x=1"))
    assert t == Target("10.0.0.100", 80, ("/a.bin", "/b?x=1"))
    for bad, why in ((("https://10.0.0.1/",), "http://"), (("http://h/",), "IPv4"),
                     (("http://10.0.0.1/", "http://10.0.0.1:81/"), "one connection"),
                     ((), "no URL"), (("http://10.0.0.1:99999/",), "not a URL")):
        with pytest.raises(ValueError, match=why):
            parse_urls(bad)


@given(cuts=st.lists(st.integers(0, 400), max_size=6))
def test_responses_split_anywhere_give_the_same_lines(cuts):
    body = b"z" * 300
    wire = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n" + body
            + b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    h = HttpFetch(Target("10.0.0.100", 80, ("/a", "/b")))
    last = 0
    for cut in sorted(min(c, len(wire)) for c in cuts) + [len(wire)]:
        h.feed(wire[last:cut])
        last = cut
    assert h.done and not h.error
    assert h.lines == [f"200 {hashlib.sha256(body).hexdigest()} 300",
                       f"404 {hashlib.sha256(b'').hexdigest()} 0"]
    assert h.requests().count(b"GET /") == 2


def test_a_body_to_the_end_of_the_connection_and_a_broken_one():
    h = HttpFetch(Target("10.0.0.1", 8080, ("/",)))
    assert b"Host: 10.0.0.1:8080" in h.requests()
    h.feed(b"HTTP/1.0 200 OK\r\n\r\nabc")
    h.eof()
    assert h.done and h.lines == [f"200 {hashlib.sha256(b'abc').hexdigest()} 3"]
    bad = HttpFetch(Target("10.0.0.1", 80, ("/",)))
    bad.feed(b"SSH-2.0-x\r\n\r\n")
    assert bad.done and "not an HTTP response" in bad.error


def test_a_sim_fetch_from_a_silent_host_fails_after_its_retries():
    from ftsslab.lab.runner import Runner
    from ftsslab.lab.scenario import load_scenario_text
    from ftsslab.lab.sim import SimBackend

    text = """name: t
nodes: {h1: {kind: host}, h2: {kind: host}, s1: {kind: switch}}
links:
  - endpoints: [{node: h1, interface: eth0, ipv4: 10.0.0.1/24}, {node: s1, interface: p1}]
  - endpoints: [{node: h2, interface: eth0, ipv4: 10.0.0.2/24}, {node: s1, interface: p2}]
steps:
  - name: get
    fetch: {node: h1, url: "http://10.0.0.2/x", timeout: 60}
expect:
  - command: {step: get, status: 1}
  - received: {node: h2, match: 'TCP(flags="S")', count: 7}
"""
    result = Runner(load_scenario_text(text), SimBackend()).run()
    assert result.passed, [(o.what, o.detail) for o in result.outcomes if not o.passed]
