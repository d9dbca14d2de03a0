"""ftsslab's TCP core (``tcp.Tcb``), its frames and the ``fetch`` client: sans-IO, so two
TCBs run back to back on a virtual clock here (against the kernel: ``test_tcp_kernel.py``)."""

from __future__ import annotations

import hashlib
import heapq
import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftsslab.lab import frames
from ftsslab.lab.fetch import HttpFetch, Target, parse_urls
from ftsslab.lab.tcp import (
    ACK,
    FIN,
    MSS,
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
    for parse in (decode, lambda d: decode(d, True), frames.parse_arp, frames.parse_udp,
                  frames.ip_header, frames.ip_payload):
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


# ---- the full core: options, RFC 9293 rules, loss and reordering --------------------------

OPTS = {"options": True}


class Wire:
    """A client and a server TCB on a virtual clock, joined by a wire that loses,
    duplicates and delays (so reorders) segments -- each through the wire format -- and
    two applications: each writes its ``chunks``, then closes (None: neither), and reads
    ``read`` bytes at a time (None: everything) whenever something happened."""

    def __init__(self, rng=None, loss=0.0, dup=0.0, jitter=0.0, client_kw=OPTS,
                 server_kw=OPTS, chunks=(None, None), read=(None, None), drop=None) -> None:
        self.rng, self.loss, self.dup, self.jitter = rng, loss, dup, jitter
        self.drop = drop or (lambda n, seg: False)
        self.now, self.flight, self.order, self.sent = 0.0, [], itertools.count(), []
        self.server_kw, self.read = server_kw, read
        self.left = [None if c is None else list(c) for c in chunks]
        self.closed = [c is None for c in chunks]
        self.got = [bytearray(), bytearray()]
        self.client, segs = Tcb.connect(A, B, 0xFFFF_F000, 0.0, **client_kw)  # wraps soon
        self.server: Tcb | None = None
        self.put(segs)

    def tcbs(self):
        return [t for t in (self.client, self.server) if t is not None]

    def put(self, segs) -> None:
        for seg in segs:
            n = len(self.sent)
            self.sent.append(seg)
            if self.drop(n, seg) or (self.loss and self.rng.random() < self.loss):
                continue
            for _ in range(2 if self.dup and self.rng.random() < self.dup else 1):
                late = self.rng.random() * self.jitter if self.jitter else 0.0
                heapq.heappush(self.flight, (self.now + 0.001 + late, next(self.order),
                                             seg.encode()))

    def apps(self) -> None:
        for i, tcb in enumerate(self.tcbs()):
            if tcb.state in (TcpState.ESTABLISHED, TcpState.CLOSE_WAIT):
                left = self.left[i]
                while left:  # None or []: nothing to write
                    k, segs = tcb.write(left[0], self.now)
                    self.put(segs)
                    if k < len(left[0]):
                        left[0] = left[0][k:]
                        break
                    left.pop(0)
                if not left and not self.closed[i]:
                    self.closed[i] = True
                    self.put(tcb.close(self.now))
            self.got[i] += tcb.read(self.read[i])

    def run(self, until: float = 600.0) -> None:
        while True:
            self.apps()
            due = [d for t in self.tcbs() if (d := t.next_deadline()) is not None]
            if self.flight:
                due.append(self.flight[0][0])
            if not due or min(due) > until:
                if not any(t.received for t in self.tcbs()) or self.read == (0, 0):
                    return
                self.read = (None, None)  # nothing else happens: the readers catch up
                continue
            self.now = max(self.now, min(due))
            if self.flight and self.flight[0][0] <= self.now:
                seg = decode(heapq.heappop(self.flight)[2], verify=True)
                if (seg.dst, seg.dport) == B:
                    if self.server is None:
                        if seg.flags & (SYN | ACK) == SYN:
                            self.server, out = Tcb.accept(seg, 7, self.now, **self.server_kw)
                            self.put(out)
                        continue
                    self.put(self.server.on_segment(seg, self.now))
                else:
                    self.put(self.client.on_segment(seg, self.now))
            else:
                for t in self.tcbs():
                    self.put(t.on_timer(self.now))


def linux_syn(**tcp) -> TcpSegment:
    """A SYN as Linux 6.x sends it: MSS, SACK-permitted, timestamps, NOP, window scale 7."""
    from scapy.layers.inet import IP, TCP

    opts = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (123456, 0)), ("NOP", None),
            ("WScale", 7)]
    return decode(bytes(IP(src=A[0], dst=B[0]) / TCP(
        sport=A[1], dport=B[1], seq=99, flags="S", window=64240, options=opts, **tcp)), True)


def test_a_linux_syn_is_parsed_and_answered_with_what_both_offer():
    from scapy.layers.inet import IP, TCP

    syn = linux_syn()
    assert (syn.mss, syn.sack_perm, syn.ts, syn.wscale) == (1460, True, (123456, 0), 7)
    tcb, (synack,) = Tcb.accept(syn, 5000, 1.0, options=True, mss=1400)
    opts = dict(IP(synack.encode())[TCP].options)
    assert opts["MSS"] == 1400 and opts["WScale"] == 7 and opts["Timestamp"][1] == 123456
    assert "SAckOK" not in opts  # SACK is declined
    assert (tcb.snd_wscale, tcb.rcv_wscale, tcb.ts_ok, tcb.smss) == (7, 7, True, 1400 - 12)
    assert tcb.snd_wnd == 64240  # a SYN's window is never scaled


def test_options_are_off_unless_the_peer_offers_them():
    plain = TcpSegment(A[0], B[0], A[1], B[1], 99, 0, SYN, 5000)
    tcb, (synack,) = Tcb.accept(plain, 5000, 0.0, options=True)
    assert (synack.wscale, synack.ts, synack.mss) == (None, None, MSS)
    assert (tcb.ts_ok, tcb.snd_wscale, tcb.rcv_wscale, tcb.smss) == (False, 0, 0, 536)
    sim, (synack,) = Tcb.accept(linux_syn(), 5000, 0.0)  # the sim's default: none offered
    assert synack.options() == b"" and not sim.ts_ok and sim.smss == MSS
    wire = Wire(client_kw={}, server_kw=OPTS, chunks=((b"a" * 3000,), (b"b" * 5000,)))
    wire.run()
    assert all(s.ts is None and s.wscale is None for s in wire.sent)
    assert wire.got == [bytearray(b"b" * 5000), bytearray(b"a" * 3000)]


def test_window_scale_carries_a_window_beyond_64_kib():
    big = OPTS | {"rcvbuf": 1 << 20, "sndbuf": 1 << 20}
    data = bytes(range(256)) * 4096
    wire = Wire(client_kw=big, server_kw=big, chunks=((data,), ()))
    wire.run()
    assert wire.got[1] == data
    acks = [s for s in wire.sent if s.sport == B[1] and s.flags == ACK]
    assert max(s.window for s in acks) << 7 > 65535 and wire.client.snd_wnd > 65535
    assert all(s.ts is not None for s in wire.sent[1:])


def established(**kw):
    wire = Wire(client_kw=OPTS | kw, server_kw=OPTS | kw)
    wire.run(until=0.1)
    return wire, wire.client, wire.server


def from_client(wire, seq, flags=ACK, payload=b"", ts=None, window=1000):
    c = wire.client
    return TcpSegment(A[0], B[0], A[1], B[1], seq, c.rcv_nxt, flags, window, payload,
                      ts=ts if ts is not None else (c._ts_val(wire.now), c.ts_recent))


def test_paws_drops_an_old_duplicate_and_acknowledges():
    wire, client, server = established()
    old = from_client(wire, server.rcv_nxt, payload=b"late", ts=(server.ts_recent - 5, 0))
    (ack,) = server.on_segment(old, wire.now)
    assert ack.flags == ACK and not server.received and ack.ack == server.rcv_nxt
    fresh = from_client(wire, server.rcv_nxt, payload=b"ok", ts=(server.ts_recent + 1, 0))
    server.on_segment(fresh, wire.now)
    assert server.read() == b"ok" and server.ts_recent == fresh.ts[0]


def test_rst_only_at_rcv_nxt_and_a_challenge_ack_otherwise():
    wire, client, server = established()
    nxt = server.rcv_nxt
    assert server.on_segment(from_client(wire, nxt + 10**6, RST), wire.now) == []  # outside
    (challenge,) = server.on_segment(from_client(wire, nxt + 100, RST), wire.now)
    assert challenge.flags == ACK and challenge.ack == nxt  # RFC 5961 3.2
    (challenge,) = server.on_segment(from_client(wire, nxt, SYN), wire.now)
    assert challenge.flags == ACK and server.state is TcpState.ESTABLISHED  # RFC 5961 4.2
    assert server.on_segment(from_client(wire, nxt, RST), wire.now) == []
    assert server.state is TcpState.CLOSED and server.reset


def test_a_rst_in_time_wait_is_ignored_rfc1337():
    wire = Wire(chunks=([b"a"], [b"b"]))
    wire.run(until=0.2)
    tcb = next(t for t in wire.tcbs() if t.state is TcpState.TIME_WAIT)
    rst = TcpSegment(tcb.remote[0], tcb.local[0], tcb.remote[1], tcb.local[1], tcb.rcv_nxt, 0,
                     RST)
    assert tcb.on_segment(rst, wire.now) == [] and tcb.state is TcpState.TIME_WAIT
    wire.run()
    assert tcb.state is TcpState.CLOSED and not tcb.reset


def test_an_older_segment_does_not_move_the_window_snd_wl1_wl2():
    wire, client, server = established()
    seq = server.rcv_nxt
    server.on_segment(from_client(wire, seq, payload=b"x" * 10, window=300), wire.now)
    assert server.snd_wnd == 300 << server.snd_wscale
    server.on_segment(from_client(wire, seq - 1, window=900), wire.now)  # older: ignored
    assert server.snd_wnd == 300 << server.snd_wscale
    server.on_segment(from_client(wire, seq + 10, window=900), wire.now)
    assert server.snd_wnd == 900 << server.snd_wscale


def test_out_of_order_segments_are_reassembled_and_the_queue_is_bounded():
    wire, client, server = established(ooo_max=4)
    seq, data = server.rcv_nxt, bytes(range(200)) * 50
    parts = [(i, data[i:i + 1000]) for i in range(0, len(data), 1000)]
    dupacks = []
    for i, part in parts[1:]:  # the first is late: four wait, the rest are dropped
        dupacks += server.on_segment(from_client(wire, seq + i, payload=part), wire.now)
    assert len(server._ooo) == 4 and {a.ack for a in dupacks} == {seq}  # bounded
    server.on_segment(from_client(wire, seq, payload=parts[0][1]), wire.now)
    assert server.read() == data[:5000]  # up to the first segment the queue could not keep
    for i, part in parts[5:]:
        server.on_segment(from_client(wire, seq + i, payload=part), wire.now)
    assert server.read() == data[5000:]


def test_a_zero_window_is_probed_until_it_opens():
    small = {"rcvbuf": 4096, "max_retries": 3}
    wire = Wire(client_kw=OPTS | small, server_kw=OPTS,
                chunks=((), (b"z" * 20000,)), read=(0, 0))
    wire.run(until=60.0)  # the client reads nothing for a minute: many probes, no give-up
    assert len(wire.client.received) == 4096 and wire.server.unacked == 20000 - 4096
    assert wire.server.tries == 1 and not wire.server.reset  # answered probes are no retries
    probes = [s for s in wire.sent if s.sport == B[1] and len(s.payload) == 1]
    assert len(probes) >= 5
    wire.read = (None, None)
    wire.run()
    assert wire.got[0] == b"z" * 20000 and wire.server.state is TcpState.CLOSED


def test_rto_is_rfc6298_with_karn_and_backoff():
    wire = Wire(client_kw={"min_rto": 0.001}, server_kw={})  # no timestamps: Karn's rule
    wire.run(until=0.1)
    c = wire.client
    assert c.srtt is None and c.rto == 0.2
    wire.put(c.write(b"x" * 100, wire.now)[1])
    wire.run(until=wire.now + 0.1)
    assert c.srtt == pytest.approx(0.002) and c.rttvar == pytest.approx(0.001)
    assert c.rto == pytest.approx(0.002 + 4 * 0.001)
    wire.drop = lambda n, seg: seg.payload == b"y" * 100  # lost, and lost again once
    wire.put(c.write(b"y" * 100, wire.now)[1])
    wire.run(until=wire.now + 0.0065)
    assert c.retransmits == 1 and c.rto == pytest.approx(2 * 0.006)  # backed off
    wire.drop = lambda n, seg: False
    wire.run()
    assert c.srtt == pytest.approx(0.002)  # the retransmitted segment was not timed


def test_three_duplicate_acks_retransmit_before_the_timer():
    data = bytes(range(256)) * 200
    lost = []

    def drop(n, seg):
        if seg.sport == A[1] and seg.payload and not lost and \
                (seg.seq - wire.client.iss) % 2**32 > 3000:
            lost.append(seg.seq)
            return True
        return False

    wire = Wire(client_kw=OPTS | {"rto": 5.0, "min_rto": 5.0}, chunks=((data,), ()),
                drop=drop)
    wire.run()
    assert wire.got[1] == data and wire.now < 1.0  # no 5 s timeout was needed
    assert wire.client.retransmits == 1 and wire.client.ssthresh < 1 << 30
    again = [s for s in wire.sent if s.sport == A[1] and s.seq == lost[0] and s.payload]
    assert len(again) == 2


def test_a_snapshot_carries_the_negotiated_options():
    wire, client, server = established()
    wire.put(server.write(b"s" * 5000, wire.now)[1])
    wire.run(until=wire.now + 0.0015)
    snap = server.snapshot()
    assert (snap.ts_ok, snap.snd_wscale, snap.rcv_wscale) == (True, 7, 7)
    assert snap.ts_recent == server.ts_recent and snap.mss == server.mss
    server.drop()
    moved = Tcb.restore(snap, options=True)
    assert (moved.ts_ok, moved.smss, moved.snd_wscale) == (True, server.smss, 7)
    wire.server = moved
    wire.run(until=wire.now + 0.01)
    wire.put(moved.leave_repair(wire.now))
    wire.left, wire.closed = [[b"c" * 3000], [b"t" * 7000]], [False, False]
    wire.run()
    assert wire.got[0] == b"s" * 5000 + b"t" * 7000 and wire.got[1] == b"c" * 3000
    assert all(s.ts is not None for s in wire.sent if s.sport == B[1])


chunk_lists = st.lists(st.integers(0, 40_000), max_size=6)


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32), loss=st.floats(0, 0.2), dup=st.floats(0, 0.2),
       jitter=st.sampled_from([0.0, 0.0005, 0.003, 0.02]),
       sizes=st.tuples(chunk_lists, chunk_lists), options=st.booleans(),
       rcvbuf=st.sampled_from([1000, 2000, 20_000, 1 << 20]),
       read=st.sampled_from([None, 300, 700]))
def test_the_core_against_itself_keeps_both_byte_streams(seed, loss, dup, jitter, sizes,
                                                          options, rcvbuf, read):
    """Property: over a wire that loses, duplicates and reorders, whatever each side
    writes is what the other reads, in order, and both ends close without a reset."""
    rng = __import__("random").Random(seed)
    kw = {"options": options, "rcvbuf": rcvbuf, "max_retries": 12, "delack": 0.01 * options,
          "time_wait": 240.0}  # 2MSL (MSL 2 min): longer than two of the peer's 60 s backoffs
    chunks = tuple([rng.randbytes(n) for n in side] for side in sizes)
    wire = Wire(rng, loss, dup, jitter, kw, kw, chunks, (read, read))
    wire.run(until=100_000.0)  # virtual seconds: a slow reader behind 20 % loss takes long
    assert bytes(wire.got[1]) == b"".join(chunks[0])
    assert bytes(wire.got[0]) == b"".join(chunks[1])
    assert not wire.client.reset and not wire.server.reset
    assert wire.client.state is wire.server.state is TcpState.CLOSED
    assert not any(s.flags & RST for s in wire.sent)


def test_the_veth_driver_coalesces_superseded_acks_and_keeps_duplicates():
    from ftsslab.lab.veth.rawtcp import coalesce

    def ack(n, payload=b"", flags=ACK, port=B[1]):
        return TcpSegment(B[0], A[0], port, A[1], 1, n, flags, payload=payload)

    burst = [ack(10), ack(20), ack(20), ack(30, b"data"), ack(30), ack(40, port=81), ack(30),
             ack(30, flags=ACK | FIN)]
    assert coalesce(burst) == burst[3:]  # what a later, higher ACK says goes; no duplicate


def test_a_corrupted_segment_is_refused_when_verified():
    packet = bytearray(TcpSegment(A[0], B[0], A[1], B[1], 1, 2, ACK, payload=b"abc").encode())
    assert decode(bytes(packet), verify=True) is not None
    packet[-1] ^= 0x40
    assert decode(bytes(packet), verify=True) is None and decode(bytes(packet)) is not None


@settings(max_examples=300, deadline=None)
@given(options=st.binary(max_size=40), payload=st.binary(max_size=9))
def test_any_option_bytes_decode_without_raising(options, payload):
    opts = options[:len(options) // 4 * 4]
    head = struct.pack("!HHIIHHHH", 1, 2, 3, 4, ((5 + len(opts) // 4) << 12) | ACK, 9, 0, 0)
    packet = frames.ipv4(A[0], B[0], 6, head + opts + payload)
    seg = decode(packet)
    assert seg is not None and seg.payload == payload
    decode(packet, verify=True)


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
