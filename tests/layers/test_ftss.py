"""FTSS layers (layers/ftss.py), fast parser/builders and reference frames."""

import struct
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import NoPayload, Padding, Raw
from scapy.utils import wrpcap

import ftsslab.layers  # noqa: F401  (register all bindings)
from ftsslab.fast import ftss as fast
from ftsslab.layers import ftss as L
from ftsslab.layers.fc import FC, FC_FCTL_EXCH_CONTEXT, FCoE, verify_fc_crc
from ftsslab.layers.ftss import (
    FTSS,
    FTSSAck,
    FTSSDelete,
    FTSSFileName,
    FTSSFileResponse,
    FTSSHello,
    FTSSList,
    FTSSPacket,
    FTSSRead,
    FTSSStatus,
    FTSSWrite,
)
from ftsslab.reference.ftss import packets

REFERENCE = packets()
DST, SRC = "02:00:00:00:00:52", "02:00:00:00:00:50"
BODIES = [FTSSPacket, FTSSAck, FTSSHello, FTSSStatus, FTSSWrite, FTSSRead, FTSSList,
          FTSSDelete, FTSSFileResponse]  # fmt: skip

u8, u16, u32, u64 = (st.integers(0, 2**n - 1) for n in (8, 16, 32, 64))
names = st.binary(max_size=40)
macs = st.binary(min_size=6, max_size=6).map(lambda b: b.hex(":"))
hflags = st.integers(0, 15)


def scapy_view(layer) -> dict:
    """The layer's dissected fields, LIST names reduced to their filenames."""
    d = {k: layer.getfieldval(k) for k in layer.fields}
    if "names" in d:
        d["names"] = [n.filename for n in d["names"]]
    return d


def assert_fast_matches(raw: bytes, fd: dict | None = None):
    """parse_ftss(raw) gives exactly the Scapy fields of FTSS(raw)."""
    pkt = FTSS(raw)
    fd = fast.parse_ftss(raw) if fd is None else fd
    assert fd is not None
    fd = dict(fd)
    fd.pop("fc", None)
    payload = fd.pop("payload", None)
    expected = scapy_view(pkt)
    body = pkt.payload
    assert type(body) in BODIES
    assert not set(expected) & set(body.fields)  # one flat namespace: no name clash
    expected.update(scapy_view(body))
    assert fd == expected
    if isinstance(body, FTSSPacket):
        inner = body.payload  # the frame, else FTSS padding or nothing
        empty = isinstance(inner, NoPayload | Padding)
        assert bytes(payload) == (b"" if empty else inner.original)
    return pkt


# ---- hypothesis: every message kind as (Scapy packet, fast-built bytes) ----


@st.composite
def inner_frames(draw):
    return bytes(
        Ether(dst=draw(macs), src=draw(macs))
        / IP(src="192.0.2.1", dst="192.0.2.2", id=draw(u16))
        / UDP(sport=draw(st.integers(49152, 65535)), dport=9)  # no dissector there
        / draw(st.binary(max_size=64))
    )


@st.composite
def messages(draw):
    hf = draw(hflags)
    kind = draw(st.sampled_from(["pkt", "ack", "hello", "status", "write", "read", "list",
                                 "delete", "response"]))  # fmt: skip
    if kind == "pkt":
        msg_id, node, pf, ret, inner = (draw(u64), draw(u32), draw(u16), draw(u16),
                                        draw(inner_frames()))  # fmt: skip
        pkt = FTSS(flags=hf) / FTSSPacket(msg_id=msg_id, src_node=node, pkt_flags=pf,
                                          retention=ret) / Ether(inner)  # fmt: skip
        raw = fast.build_pkt(msg_id, node, inner, pkt_flags=pf, retention=ret, flags=hf)
    elif kind == "ack":
        msg_id, node, status, reason = draw(u64), draw(u32), draw(u8), draw(u8)
        more = draw(st.integers(0, fast.MAX_ACK_MORE))
        pkt = FTSS(flags=hf) / FTSSAck(msg_id=msg_id, node_id=node, status=status,
                                       reason=reason, more=more)  # fmt: skip
        raw = fast.build_ack(msg_id, node, status, reason, more=more, flags=hf)
    elif kind in ("hello", "status"):
        cls, build = {"hello": (FTSSHello, fast.build_hello),
                      "status": (FTSSStatus, fast.build_status)}[kind]  # fmt: skip
        kw = dict(state=draw(u8), port=draw(u8), hold_time=draw(u16))
        node, seq, ml = draw(u32), draw(u16), draw(st.lists(macs, max_size=6))
        pkt = FTSS(flags=hf) / cls(node_id=node, seq=seq, macs=ml, **kw)
        raw = build(node, seq, ml, flags=hf, **kw)
    elif kind == "write":
        req, name, data, off, wf = draw(u32), draw(names), draw(st.binary(max_size=80)), \
            draw(u64), draw(u16)  # fmt: skip
        pkt = FTSS(flags=hf) / FTSSWrite(req_id=req, filename=name, data=data, offset=off,
                                         wflags=wf)  # fmt: skip
        raw = fast.build_write(req, name, data, offset=off, wflags=wf, flags=hf)
    elif kind == "read":
        req, name, off, cnt = draw(u32), draw(names), draw(u64), draw(u32)
        pkt = FTSS(flags=hf) / FTSSRead(req_id=req, filename=name, offset=off, count=cnt)
        raw = fast.build_read(req, name, offset=off, count=cnt, flags=hf)
    elif kind in ("list", "delete"):
        cls, build = {"list": (FTSSList, fast.build_list),
                      "delete": (FTSSDelete, fast.build_delete)}[kind]  # fmt: skip
        req, name = draw(u32), draw(names)
        pkt = FTSS(flags=hf) / cls(req_id=req, filename=name)
        raw = build(req, name, flags=hf)
    else:
        req, status = draw(u32), draw(u8)
        op = draw(st.sampled_from(sorted(L.FTSS_OPCODES)))
        if op == L.FTSS_OP_LIST:
            nl = draw(st.lists(names, max_size=5))
            body = FTSSFileResponse(req_id=req, status=status, op=op,
                                    names=[FTSSFileName(filename=n) for n in nl])  # fmt: skip
            raw = fast.build_response(req, op, status=status, names=nl, flags=hf)
        else:
            data = draw(st.binary(max_size=80))
            body = FTSSFileResponse(req_id=req, status=status, op=op, data=data)
            raw = fast.build_response(req, op, status=status, data=data, flags=hf)
        pkt = FTSS(flags=hf) / body
    return pkt, raw


@settings(max_examples=300, deadline=None)
@given(messages())
def test_build_dissect_fast_roundtrip(msg):
    pkt, raw = msg
    built = bytes(pkt)
    assert built == raw  # fast builder == Scapy build
    again = assert_fast_matches(built)  # fast parser == Scapy dissection
    # every field given to the constructor comes back from the wire
    for layer_in, layer_out in ((pkt, again), (pkt.payload, again.payload)):
        for k, v in layer_in.fields.items():
            if k not in layer_out.fields:  # inactive ConditionalField (names or data)
                assert not v
            elif k == "names":
                assert [n.filename for n in layer_out.names] == [n.filename for n in v]
            else:
                assert layer_out.getfieldval(k) == v
    assert bytes(again) == built
    # auto-filled length and padding
    assert again.length == 4 + len(bytes(pkt.payload))
    assert len(built) % 4 == 0 and len(built) - again.length in range(4)
    assert built[again.length :] == b"\x00" * (len(built) - again.length)


def test_length_and_padding_autofill():
    for n in range(60, 65):
        inner = bytes(Ether(dst=DST, src=SRC) / Raw(b"x" * (n - 14)))
        raw = bytes(FTSS() / FTSSPacket(msg_id=1) / Ether(inner))
        length = struct.unpack("!H", raw[2:4])[0]
        assert length == 4 + 16 + n
        assert len(raw) == length + (-length % 4)
        assert raw[length:] == b"\x00" * (-length % 4)
        assert FTSS(raw).payload.payload.original == inner
    # explicit length is kept and then no padding is added
    ack = bytes(FTSSAck(msg_id=3))
    assert bytes(FTSS(length=7) / FTSSAck(msg_id=3)) == b"\x10\x02\x00\x07" + ack


def test_body_lengths_autofill():
    w = FTSS(bytes(FTSS() / FTSSWrite(filename=b"abc", data=b"12345")))
    assert (w.name_len, w.data_len, w.length) == (3, 5, 4 + 20 + 3 + 5)
    h = FTSS(bytes(FTSS() / FTSSHello(macs=["02:00:00:00:00:01"] * 3)))
    assert (h.mac_count, h.length) == (3, 4 + 12 + 18)
    r = FTSS(bytes(FTSS() / FTSSFileResponse(op=L.FTSS_OP_LIST, names=[
        FTSSFileName(filename=b"a"), FTSSFileName(filename=b"bcd")])))  # fmt: skip
    assert r.data_len == (2 + 1) + (2 + 3)
    assert [n.name_len for n in r.names] == [1, 3]
    d = FTSS(bytes(FTSS() / FTSSFileResponse(op=L.FTSS_OP_READ, data=b"xyz")))
    assert (d.data_len, d.data) == (3, b"xyz")
    rd = FTSS(bytes(FTSS() / FTSSRead(filename=b"/f")))
    assert (rd.name_len, rd.length) == (2, 4 + 18 + 2)


def test_opcode_set_by_binding_and_inner_frame_is_ether():
    opcodes = [L.FTSS_OP_PKT, L.FTSS_OP_ACK, L.FTSS_OP_HELLO, L.FTSS_OP_STATUS,
               L.FTSS_OP_WRITE, L.FTSS_OP_READ, L.FTSS_OP_LIST, L.FTSS_OP_DELETE,
               L.FTSS_OP_RESPONSE]  # fmt: skip
    for body, opcode in zip(BODIES, opcodes, strict=True):
        p = FTSS(bytes(FTSS() / body()))
        assert p.opcode == opcode and type(p.payload) is body
    inner = Ether(dst="02:00:00:00:00:52") / IP(dst="192.0.2.82") / UDP(dport=7) / b"x"
    p = FTSS(bytes(FTSS() / FTSSPacket(msg_id=9) / inner))
    assert p.opcode == L.FTSS_OP_PKT
    assert isinstance(p[FTSSPacket].payload, Ether)
    assert p[IP].dst == "192.0.2.82" and p[UDP].dport == 7
    # the link unit's split: opcode high nibble
    file_ops = {o for o in L.FTSS_OPCODES if o & L.FTSS_OP_FILE_MASK == L.FTSS_OP_FILE_CLASS}
    assert file_ops == {L.FTSS_OP_WRITE, L.FTSS_OP_READ, L.FTSS_OP_LIST, L.FTSS_OP_DELETE,
                        L.FTSS_OP_RESPONSE}  # fmt: skip


def test_fc_binding():
    frame = Ether(bytes(REFERENCE[0][1]))
    assert frame[FC].type == L.FTSS_FC_TYPE == 0xE0
    assert FTSSPacket in frame and verify_fc_crc(frame)
    # FC of another TYPE is not FTSS
    other = Ether(
        bytes(Ether(dst=DST, src=SRC) / FCoE() / FC(type=0x05) / bytes(FTSS() / FTSSAck()))
    )
    assert FTSS not in other


# ---- answers / hashret ----


def test_ack_answers_pkt():
    pkt = FTSS() / FTSSPacket(msg_id=0x42) / Ether(dst=DST, src=SRC)
    ack = FTSS() / FTSSAck(msg_id=0x42, status=L.FTSS_ACK_DELIVERED)
    assert ack.answers(pkt) and ack.hashret() == pkt.hashret()
    assert not pkt.answers(ack)
    other = FTSS() / FTSSAck(msg_id=0x43)
    assert not other.answers(pkt) and other.hashret() != pkt.hashret()
    assert not ack.answers(FTSS() / FTSSHello())


def test_status_answers_hello():
    hello = FTSS() / FTSSHello(node_id=80, seq=3)
    status = FTSS() / FTSSStatus(node_id=80, seq=3, state=L.FTSS_NODE_DRAINING)
    assert status.answers(hello) and status.hashret() == hello.hashret()
    assert not hello.answers(status) and not status.answers(status)
    assert not (FTSS() / FTSSStatus(node_id=80, seq=4)).answers(hello)
    assert not (FTSS() / FTSSStatus(node_id=82, seq=3)).answers(hello)


@pytest.mark.parametrize("req", [FTSSWrite, FTSSRead, FTSSList, FTSSDelete])
def test_response_answers_request(req):
    request = FTSS() / req(req_id=7, filename=b"/x")
    resp = FTSS() / FTSSFileResponse(req_id=7, op=req.opcode)
    assert resp.answers(request) and resp.hashret() == request.hashret()
    assert not request.answers(resp)
    assert not (FTSS() / FTSSFileResponse(req_id=8, op=req.opcode)).answers(request)
    wrong_op = next(o for o in (L.FTSS_OP_WRITE, L.FTSS_OP_READ) if o != req.opcode)
    assert not (FTSS() / FTSSFileResponse(req_id=7, op=wrong_op)).answers(request)


def test_reference_pairs_answer_on_full_frames():
    frames = {c: Ether(bytes(p)) for c, p in REFERENCE}
    pairs = [
        ("FTSS PKT server 80 -> FTSS, for server 82 (block 152)",
         "FTSS ACK stored-guaranteed (block 174)"),
        ("FTSS PKT FTSS -> server 82, stored copy (block 176)",
         "FTSS ACK delivered, destination's receipt (block 178)"),
        ("FTSS HELLO server 80 up, serving 2 MACs (routing table 146)",
         "FTSS STATUS server 80 UP"),
        ("FTSS WRITE packet as a file (claim 6)", "FTSS RESPONSE WRITE OK"),
        ("FTSS LIST incoming packet directory", "FTSS RESPONSE LIST OK"),
    ]  # fmt: skip
    for req, rep in pairs:
        assert frames[rep].answers(frames[req]), (req, rep)
        assert frames[rep].hashret() == frames[req].hashret()
        assert not frames[req].answers(frames[rep])
    # an ACK does not answer a PKT of another exchange / message
    assert not frames["FTSS ACK stored-guaranteed (block 174)"].answers(
        frames["FTSS PKT server 80 -> FTSS, for an external node (block 158 EXTERNAL)"]
    )


def test_mysummary():
    pkt = FTSS() / FTSSPacket(msg_id=0x1F) / Ether(dst=DST, src=SRC) / (b"x" * 46)
    assert pkt[FTSSPacket].mysummary() == "FTSS PKT id=0x1f 60B"
    ack = FTSSAck(msg_id=5, status=L.FTSS_ACK_STORED_GUARANTEED)
    assert ack.mysummary() == "FTSS ACK id=0x5 STORED_GUARANTEED"
    rej = FTSSAck(msg_id=5, status=L.FTSS_ACK_REJECTED, reason=L.FTSS_REASON_STORE_FULL)
    assert rej.mysummary() == "FTSS ACK id=0x5 REJECTED (STORE_FULL)"
    run = FTSSAck(msg_id=5, status=L.FTSS_ACK_DELIVERED, more=3)
    assert run.mysummary() == "FTSS ACK id=0x5 +3 DELIVERED" and run.messages() == 4
    assert [run.answers(FTSSPacket(msg_id=m)) for m in (4, 5, 8, 9)] == [False, True, True, False]
    assert FTSSHello(node_id=80, port=2, macs=["02:00:00:00:00:01"]).mysummary() == \
        "FTSS HELLO node=0x50 UP port=2 1 MACs"  # fmt: skip
    assert FTSSStatus(node_id=80, state=0).mysummary() == "FTSS STATUS node=0x50 DOWN port=0 0 MACs"
    assert FTSSWrite(req_id=1, filename=b"f", data=b"abc").mysummary() == \
        "FTSS WRITE req=0x1 b'f' 3B"  # fmt: skip
    assert FTSSDelete(req_id=2, filename=b"g").mysummary() == "FTSS DELETE req=0x2 b'g'"
    lst = FTSSFileResponse(req_id=1, op=L.FTSS_OP_LIST, names=[FTSSFileName(filename=b"a")])
    assert lst.mysummary() == "FTSS RESPONSE req=0x1 LIST OK 1 names"
    assert FTSS(opcode=L.FTSS_OP_ACK, length=20).mysummary() == "FTSS v1 ACK len=20"


def test_enumerations_named():
    assert L.FTSS_ACK_STATUS == {1: "STORED_GUARANTEED", 2: "STORED_BEST_EFFORT",
                                 3: "UNDELIVERABLE", 4: "DELIVERED", 5: "REJECTED"}  # fmt: skip
    assert {"MALFORMED", "UNKNOWN_OPCODE", "OVERSIZE", "STORE_FULL", "BAD_LENGTH"} <= set(
        L.FTSS_ACK_REASONS.values()
    )
    assert set(L.FTSS_NODE_STATES.values()) == {"DOWN", "UP", "DRAINING", "MAINTENANCE"}


def test_class_names_unique_and_readable():
    names_ = [c().name for c in (FTSS, *BODIES, FTSSFileName)]
    assert len(set(names_)) == len(names_) and all(n.startswith("FTSS") for n in names_)


# ---- fast module ----


def test_fast_rejects_malformed():
    good = fast.build_ack(1, 2)
    assert fast.parse_ftss(good) is not None
    assert fast.parse_ftss(good[:3]) is None  # short header
    assert fast.parse_ftss(good[:10]) is None  # truncated below length
    assert fast.parse_ftss(b"\x10\x02\x00\x03" + good[4:]) is None  # length < header
    assert fast.parse_ftss(b"\x10\x02\x00\x10" + good[4:]) is None  # body too short for ACK
    w = bytearray(fast.build_write(1, b"abc", b"de"))
    w[19] = 9  # name_len beyond the message
    assert fast.parse_ftss(bytes(w)) is None
    unknown = fast.parse_ftss(b"\x10\x7f\x00\x06ab\x00\x00")
    assert unknown["opcode"] == 0x7F and bytes(unknown["payload"]) == b"ab"


@pytest.mark.parametrize("comment,frame", REFERENCE, ids=[c for c, _ in REFERENCE])
def test_reference_fast_equals_scapy(comment, frame):
    raw = bytes(frame)
    d = fast.parse_ftss_frame(raw)
    assert d is not None and d["fc"]["crc_ok"] and d["fc"]["type"] == L.FTSS_FC_TYPE
    assert_fast_matches(bytes(Ether(raw)[FTSS]), d)
    # rebuild the whole frame with the fast builders: same bytes as Scapy
    fcd = d["fc"]
    msg = _fast_rebuild(d)
    again = fast.build_ftss_frame(
        fcd["dst"], fcd["src"], msg, d_id=fcd["d_id"], s_id=fcd["s_id"], ox_id=fcd["ox_id"],
        rx_id=fcd["rx_id"], f_ctl=fcd["f_ctl"], r_ctl=fcd["r_ctl"])  # fmt: skip
    assert again == raw


def _fast_rebuild(d: dict) -> bytes:
    op, f = d["opcode"], d["flags"]
    if op == L.FTSS_OP_PKT:
        return fast.build_pkt(d["msg_id"], d["src_node"], d["payload"], pkt_flags=d["pkt_flags"],
                              retention=d["retention"], flags=f)  # fmt: skip
    if op == L.FTSS_OP_ACK:
        return fast.build_ack(d["msg_id"], d["node_id"], d["status"], d["reason"],
                              more=d["more"], flags=f)
    if op in (L.FTSS_OP_HELLO, L.FTSS_OP_STATUS):
        build = fast.build_hello if op == L.FTSS_OP_HELLO else fast.build_status
        return build(d["node_id"], d["seq"], d["macs"], state=d["state"], port=d["port"],
                     hold_time=d["hold_time"], flags=f)  # fmt: skip
    if op == L.FTSS_OP_WRITE:
        return fast.build_write(d["req_id"], d["filename"], d["data"], offset=d["offset"],
                                wflags=d["wflags"], flags=f)  # fmt: skip
    if op == L.FTSS_OP_READ:
        return fast.build_read(d["req_id"], d["filename"], offset=d["offset"],
                               count=d["count"], flags=f)  # fmt: skip
    if op == L.FTSS_OP_LIST:
        return fast.build_list(d["req_id"], d["filename"], flags=f)
    if op == L.FTSS_OP_DELETE:
        return fast.build_delete(d["req_id"], d["filename"], flags=f)
    return fast.build_response(d["req_id"], d["op"], status=d["status"],
                               data=d.get("data", b""), names=d.get("names"), flags=f)  # fmt: skip


def test_reference_covers_every_kind():
    frames = [Ether(bytes(p)) for _, p in REFERENCE]
    assert {f[FTSS].opcode for f in frames} == set(L.FTSS_OPCODES)
    acks = [f[FTSSAck] for f in frames if FTSSAck in f]
    assert {a.status for a in acks} == set(L.FTSS_ACK_STATUS)
    assert {a.reason for a in acks} == set(L.FTSS_ACK_REASONS)
    assert {f[FTSSStatus].state for f in frames if FTSSStatus in f} == set(L.FTSS_NODE_STATES)
    resp = [f[FTSSFileResponse] for f in frames if FTSSFileResponse in f]
    assert {r.status for r in resp} == set(L.FTSS_FILE_STATUS)
    pkt_flags = 0
    for f in frames:
        if FTSSPacket in f:
            pkt_flags |= int(f[FTSSPacket].pkt_flags)
    assert pkt_flags == (1 << len(L.FTSS_PKT_FLAGS)) - 1


# ---- fuzz: dissection and fast parsing never raise ----

HEADERS = st.builds(lambda op, ln: struct.pack("!BBH", 0x10, op, ln),
                    st.sampled_from(sorted(L.FTSS_OPCODES)), st.integers(0, 120))  # fmt: skip
CARRIER = bytes(REFERENCE[0][1])[: 14 + 14 + 24]  # Ether + FCoE + FC (TYPE 0xE0) headers


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=96))
def test_fuzz_ftss_alone(data):
    p = FTSS(data)
    p.summary()
    assert fast.parse_ftss(data) is None or isinstance(fast.parse_ftss(data), dict)


@settings(max_examples=2000, deadline=None)
@given(HEADERS, st.binary(max_size=96))
def test_fuzz_ftss_bodies(hdr, data):
    p = FTSS(hdr + data)
    p.summary()
    fd = fast.parse_ftss(hdr + data)
    if fd is not None and fd["opcode"] in L.FTSS_OPCODES:
        assert_fast_matches(hdr + data, fd)  # whatever fast accepts, Scapy reads alike


@settings(max_examples=2000, deadline=None)
@given(HEADERS, st.binary(max_size=96))
def test_fuzz_under_carrier(hdr, data):
    frame = CARRIER + hdr + data
    p = Ether(frame)
    p.summary()
    fast.parse_ftss_frame(frame)
    fast.parse_ftss_frame(data)


@pytest.mark.tshark
def test_tshark_fc_type_crc_and_payload(tmp_path):
    frames = [p for _, p in REFERENCE]
    path = tmp_path / "ftss.pcap"
    wrpcap(str(path), frames)
    out = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-E", "separator=,", "-e", "fc.type",
         "-e", "fcoe.crc.status", "-e", "fc.fctl.exchange_responder", "-e", "data.data"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert len(out) == len(frames)
    for line, frame in zip(out, frames, strict=True):
        fc_type, crc_status, responder, data = line.split(",")
        assert fc_type == "0xe0"
        assert crc_status == "1"  # Good
        pkt = Ether(bytes(frame))
        assert (responder == "1") == bool(pkt[FC].f_ctl & FC_FCTL_EXCH_CONTEXT)
        assert bytes.fromhex(data) == bytes(pkt[FTSS])  # FC payload = the padded FTSS message


@pytest.mark.parametrize("tags", [b"\x81\x00\x03\xea", b"\x88\xa8\x00\x07\x81\x00\x03\xea"],
                         ids=["802.1Q", "QinQ"])
@pytest.mark.parametrize("comment,frame", REFERENCE, ids=[c for c, _ in REFERENCE])
def test_vlan_tagged_fast_equals_scapy(comment, frame, tags):
    """FTSS over FCoE in VLAN 1002 (under QinQ too): read through the tags, as Scapy does."""
    raw = bytes(frame)
    tagged = raw[:12] + tags + raw[12:]
    d = fast.parse_ftss_frame(tagged)
    assert d is not None and d["fc"]["crc_ok"] and d["fc"]["vlan"] == 1002
    assert_fast_matches(bytes(Ether(tagged)[FTSS]), d)


MACS = st.binary(min_size=6, max_size=6).map(lambda b: b.hex(":"))


@settings(max_examples=200)
@given(MACS, MACS, st.binary(max_size=300), st.integers(0, 2**24 - 1), st.integers(0, 2**24 - 1),
       st.integers(0, 0xFFFF), st.sampled_from([fast.FC_FCTL_SINGLE, fast.FC_FCTL_ANSWER]))
def test_frame_head_builds_what_build_ftss_frame_builds(dst, src, message, d_id, s_id, ox, f_ctl):
    """The hot path's per-link builder is the same wire format as the full builder (and so
    as Scapy: test_reference_fast_equals_scapy)."""
    head = fast.FrameHead(dst, src)
    assert head.frame(message, d_id, s_id, ox, f_ctl) == fast.build_ftss_frame(
        dst, src, message, d_id=d_id, s_id=s_id, ox_id=ox, f_ctl=f_ctl)


@pytest.mark.parametrize("comment,frame", REFERENCE, ids=[c for c, _ in REFERENCE])
def test_decoded_records_name_the_scapy_fields(comment, frame):
    """``decode``'s typed records carry Scapy's field names and values (the dict form is
    made from them)."""
    raw = bytes(frame)
    payload = bytes(Ether(raw)[FTSS])
    msg = fast.decode(payload)
    assert msg is not None
    assert_fast_matches(payload, fast.parse_ftss(payload))
    body = {k: v for k, v in msg.body._asdict().items() if v is not None}
    assert body.items() <= fast.parse_ftss(payload).items()


def test_ack_runs_merge_consecutive_msg_ids_of_one_key_up_to_what_more_can_say():
    items = [("a", m) for m in range(fast.MAX_ACK_MORE + 3)] + [("b", 70000), ("a", 70001)]
    runs = list(fast.ack_runs(items, lambda i: i[0], lambda i: i[1]))
    assert runs == [(("a", 0), fast.MAX_ACK_MORE), (("a", fast.MAX_ACK_MORE + 1), 1),
                    (("b", 70000), 0), (("a", 70001), 0)]
    assert list(fast.ack_runs([], lambda i: i, lambda i: i)) == []
