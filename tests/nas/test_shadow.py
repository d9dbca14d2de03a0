"""The switch's shadows and a replica's take-over from one (D2.14 (b), check 24), sans-IO."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from ftsslab.lab.tcp import ACK, PSH, SYN, TcpSegment
from ftsslab.lab.tcp import decode as decode_tcp
from ftsslab.nas import http, shadow
from ftsslab.nas.volume import MemoryCatalog

C, VIP = "10.0.0.1", "10.0.0.100"
CISN, DISN = 1000, 0xFFFFFF00  # the device's ISN wraps
REQUEST = b"GET /big.bin HTTP/1.1\r\nHost: nas\r\n\r\n"


def table_with(*data: bytes, ts: bool = True) -> shadow.ShadowTable:
    t = shadow.ShadowTable()
    t.on_client(TcpSegment(C, VIP, 40000, 80, CISN, 0, SYN, 64240, mss=1460, wscale=7,
                           sack_perm=True, ts=(5, 0) if ts else None))
    t.on_device(TcpSegment(VIP, C, 80, 40000, DISN, CISN + 1, SYN | ACK, 65160, mss=1460,
                           wscale=2, ts=(9, 5) if ts else None))
    at = CISN + 1
    for d in data:
        t.on_client(TcpSegment(C, VIP, 40000, 80, at, DISN + 1, ACK | PSH, 502, d))
        at += len(d)
    return t


def test_a_shadow_keeps_the_handshake_and_the_requests_and_packs_both_ways():
    sh = table_with(REQUEST[:10], REQUEST[10:]).flows[(C, 40000)]
    assert sh.usable and bytes(sh.data) == REQUEST
    assert (sh.client_mss, sh.client_ws, sh.device_ws, sh.device_isn) == (1460, 7, 2, DISN)
    back = shadow.Shadow.unpack(sh.pack())
    assert back == sh and shadow.is_shadow(sh.pack())


@given(st.permutations(range(6)), st.lists(st.integers(0, 5), max_size=4))
def test_reordered_and_resent_segments_are_placed_once(order, again):
    parts = [REQUEST[i * 7:(i + 1) * 7] for i in range(6)]
    parts[-1] = REQUEST[35:]
    t = table_with()
    sh = t.flows[(C, 40000)]
    starts = [CISN + 1 + REQUEST.index(p) if i < 5 else CISN + 36 for i, p in enumerate(parts)]
    for i in [*order, *again]:
        t.on_client(TcpSegment(C, VIP, 40000, 80, starts[i], DISN + 1, ACK, 502, parts[i]))
    assert bytes(sh.data) == REQUEST and sh.usable


def test_a_shadow_without_the_synack_or_with_an_upload_is_not_usable():
    t = shadow.ShadowTable()
    t.on_client(TcpSegment(C, VIP, 40000, 80, CISN, 0, SYN))
    assert not t.flows[(C, 40000)].usable  # no SYN/ACK seen
    big = table_with(b"PUT /x HTTP/1.1\r\nContent-Length: 5000\r\n\r\n", b"x" * 2000)
    assert big.flows[(C, 40000)].overflow and not big.flows[(C, 40000)].usable


@given(st.binary(max_size=200))
def test_unpack_never_raises(data):
    shadow.Shadow.unpack(data)
    shadow.Shadow.unpack(shadow.MAGIC + data)


def test_the_probe_is_acknowledged_data_and_the_answer_gives_the_checkpoint():
    sh = table_with(REQUEST).flows[(C, 40000)]
    p = decode_tcp(shadow.probe(sh).encode())
    assert (p.src, p.dst, p.seq, len(p.payload)) == (VIP, C, DISN, 1)  # long acknowledged
    sent = 5_000_000
    reply = TcpSegment(C, VIP, 40000, 80, sh.client_next, (DISN + 1 + sent) % (1 << 32), ACK,
                       1000, ts=(777, 123456))
    assert shadow.answer(sh, reply) and shadow.sent_before(sh, reply) == sent
    cp = shadow.checkpoint(sh, reply)
    assert (cp.snd_nxt, cp.snd_una, cp.rcv_nxt) == (reply.ack, reply.ack, sh.client_next)
    assert (cp.snd_wscale, cp.rcv_wscale, cp.mss, cp.ts_ok) == (7, 2, 1460, True)
    assert cp.window.snd_wnd == 1000 << 7 and cp.timestamp == 123456 + shadow.TS_LEAD
    # the client sent more than the switch saw: its requests cannot be replayed
    assert shadow.checkpoint(sh, reply._replace(seq=sh.client_next + 5)) is None
    # not an answer: data, another flow, a SYN, or an ack of nothing the device sent
    for bad in (reply._replace(payload=b"x"), reply._replace(sport=40001),
                reply._replace(flags=ACK | SYN), reply._replace(ack=DISN - 5)):
        assert not shadow.answer(sh, bad)


def test_without_timestamps_or_scaling_the_checkpoint_has_none():
    sh = table_with(REQUEST, ts=False).flows[(C, 40000)]
    sh.client_ws = None
    reply = TcpSegment(C, VIP, 40000, 80, sh.client_next, DISN + 1, ACK, 1000)
    cp = shadow.checkpoint(sh, reply)
    assert (cp.ts_ok, cp.snd_wscale, cp.rcv_wscale, cp.timestamp) == (False, 0, 0, 0)


def _stream(actions: list, core: http.HttpServer, files: MemoryCatalog) -> bytes:
    """Carry out a core's actions as a device does, to the end: the bytes written."""
    out, pending = bytearray(), list(actions)
    while pending:
        a = pending.pop(0)
        if isinstance(a, http.SendBytes):
            out += a.data
        elif isinstance(a, http.SendFile):
            out += files.read(a.path, a.offset, a.length)
            pending = core.sent(a.length, 0.0) + pending
    return bytes(out)


@given(st.integers(0, 3 * 1024 * 1024 + 600), st.booleans())
def test_replay_goes_on_exactly_where_the_client_is(skip, two):
    """The replica's answer from ``skip`` on is the dead device's from ``skip`` on (a second
    pipelined request too), whatever the cut: in the headers, a chunk, between answers."""
    files = MemoryCatalog({"/big.bin": bytes(range(256)) * 6144, "/s": b"small"})
    data = REQUEST + (b"GET /s HTTP/1.1\r\nHost: nas\r\n\r\n" if two else b"")
    whole_core = http.HttpServer(files)
    whole = _stream(whole_core.receive(data, 0.0), whole_core, files)
    skip = min(skip, len(whole))
    core = http.HttpServer(files)
    rest = _stream(shadow.replay(core, data, skip, 0.0), core, files)
    assert hashlib.sha256(rest).digest() == hashlib.sha256(whole[skip:]).digest()
