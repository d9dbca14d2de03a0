"""RoCEv2 extension headers, RKeyAdvert, SEND payload registry, ICRC, fast parser/builders."""

from __future__ import annotations

import subprocess
from zlib import crc32

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.contrib.roce import AETH, BTH
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether
from scapy.packet import Packet, Raw
from scapy.utils import PcapNgWriter

import ftsslab.layers
from ftsslab.fast import roce as fast
from ftsslab.layers.roce import (
    DETH,
    HEADER_CHAINS,
    RDETH,
    RETH,
    AtomicAckETH,
    AtomicETH,
    ImmDt,
    RKeyAdvert,
    SanMad,
    SendPayload,
    ack_aeth,
    aeth_syndrome,
    icrc,
    nak_aeth,
    register_send_payload,
    rnr_nak_aeth,
    roce_answers,
    verify_icrc,
)
from ftsslab.reference.roce import packets as reference_packets

EXT = (RDETH, DETH, RETH, AtomicETH, AtomicAckETH, ImmDt, RKeyAdvert)
RD_ACK = fast.op("RD", "ACKNOWLEDGE")
ADDR = {"eth_dst": "02:00:00:00:00:02", "eth_src": "02:00:00:00:00:01",
        "ip_src": "198.51.100.1", "ip_dst": "198.51.100.2", "sport": 50000}
REFERENCE = reference_packets()


def _bits(f) -> int:
    return getattr(f, "size", 0) or f.sz * 8


def fields(cls: type[Packet]) -> st.SearchStrategy[dict]:
    """Random values for every field of ``cls`` (RKeyAdvert keeps magic/version)."""
    fixed = {"magic", "version"} if cls is RKeyAdvert else set()
    return st.fixed_dictionaries({
        f.name: st.integers(0, (1 << _bits(f)) - 1) for f in cls.fields_desc
        if f.name not in fixed
    })


def carrier(opcode: int, v6: bool = False, sport: int = 50000) -> Packet:
    ip = IPv6(src="2001:db8::1", dst="2001:db8::2") if v6 else IP(src="198.51.100.1",
                                                                    dst="198.51.100.2")
    return (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / ip
            / UDP(sport=sport, dport=4791, chksum=0) / BTH(opcode=opcode, dqpn=0x17, psn=0x42))


@st.composite
def roce_frames(draw) -> Packet:
    """A frame with any opcode's full header chain, random header values and payload."""
    opcode = draw(st.sampled_from(sorted(HEADER_CHAINS)))
    pkt = carrier(opcode, v6=draw(st.booleans()))
    for cls in HEADER_CHAINS[opcode]:
        if cls is SendPayload:
            if draw(st.booleans()):
                pkt = pkt / RKeyAdvert(**draw(fields(RKeyAdvert)))
            break
        pkt = pkt / cls(**draw(fields(cls)))
    return pkt / Raw(draw(st.binary(min_size=1, max_size=40)))


@pytest.fixture
def iba():
    """RD ACKNOWLEDGE read per IBA (BTH/RDETH/AETH), as the fast parser reads it (the same
    for every example of a hypothesis test, so its function scope is no concern)."""
    ftsslab.layers.strict()
    yield
    ftsslab.layers.strict(False)


def scapy_matches_fast(pkt: Packet, parsed: dict) -> None:
    """Every layer the fast parser returns equals the dissected Scapy layer."""
    classes = {c.__name__: c for c in (Ether, IP, IPv6, UDP, BTH, AETH, *EXT, SanMad)}
    for name, values in parsed.items():
        if name in ("payload", "icrc_ok"):
            continue
        layer = pkt[classes[name]]
        assert {k: layer.getfieldval(k) for k in values} == values, name
    names = {layer.__name__ for layer in pkt.layers()} - {"Raw", "Padding", "Dot1Q", "Dot1AD"}
    assert names == set(parsed) - {"payload", "icrc_ok"}
    assert parsed["payload"] == (pkt[Raw].load if Raw in pkt else b"")


# ---------------------------------------------------------------- round trips
@pytest.mark.parametrize("cls", EXT, ids=lambda c: c.__name__)
@given(data=st.data())
@settings(max_examples=60, deadline=None)
def test_layer_roundtrip(cls, data):
    values = data.draw(fields(cls))
    layer = cls(**values)
    again = cls(bytes(layer))
    assert {k: again.getfieldval(k) for k in values} == values
    assert len(bytes(layer)) == sum(_bits(f) for f in cls.fields_desc) // 8


@given(pkt=roce_frames())
@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_frame_roundtrip_and_fast_equal(iba, pkt):
    raw = bytes(pkt)
    dissected = Ether(raw)
    assert bytes(dissected) == raw
    for layer in pkt.layers():
        if layer in EXT:
            built = pkt[layer]
            assert dissected[layer].fields == {
                f.name: built.getfieldval(f.name) for f in layer.fields_desc}
    parsed = fast.parse_roce(raw)
    assert parsed is not None and parsed["icrc_ok"]
    scapy_matches_fast(dissected, parsed)


@pytest.mark.parametrize("comment,pkt", REFERENCE, ids=[c for c, _ in REFERENCE])
def test_reference_fast_equal(iba, comment, pkt):
    raw = bytes(pkt)
    dissected = Ether(raw)
    parsed = fast.parse_roce(raw)
    assert parsed is not None and parsed["icrc_ok"], comment
    scapy_matches_fast(dissected, parsed)
    assert dissected.layers() == pkt.layers()


def test_rd_ack_is_read_as_scapy_reads_it_unless_strict():
    """Scapy binds AETH right after an RD ACKNOWLEDGE's BTH; the IBA reading is opt-in."""
    frame = bytes(carrier(RD_ACK) / RDETH(eecnxt=0x7E) / ack_aeth(msn=1))
    guess = list(BTH.payload_guess)
    assert ({"opcode": RD_ACK}, AETH) in guess and ({"opcode": RD_ACK}, RDETH) not in guess
    scapy = Ether(frame)
    assert [type(x) for x in scapy[BTH].iterpayloads()] == [BTH, AETH, Raw]
    assert scapy[AETH].msn == 0x7E  # the RDETH's EE context, read as Scapy reads it
    ftsslab.layers.strict()
    try:
        iba_read = Ether(frame)
        assert [type(x) for x in iba_read[BTH].iterpayloads()] == [BTH, RDETH, AETH]
        assert iba_read[AETH].msn == 1
        scapy_matches_fast(iba_read, fast.parse_roce(frame))
    finally:
        ftsslab.layers.strict(False)
    assert BTH.payload_guess == guess  # put back in place: the order stays Scapy's


def test_reference_is_complete():
    layers = {x for _, p in REFERENCE for x in p.layers()}
    assert set(EXT) | {AETH, IPv6, IP} <= layers
    names = [aeth_syndrome(p).split() for _, p in REFERENCE if AETH in p]
    syndromes = {n[1] if n[0] == "NAK" else n[0] for n in names}
    assert {"ACK", "RNR_NAK", "PSN_SEQUENCE_ERROR", "INVALID_REQUEST", "REMOTE_ACCESS_ERROR",
            "REMOTE_OPERATIONAL_ERROR", "INVALID_RD_REQUEST"} <= syndromes


# ---------------------------------------------------------------- auto-filled values
@given(pkt=roce_frames())
@settings(max_examples=100, deadline=None)
def test_lengths_and_icrc_autofill(pkt):
    raw = bytes(pkt)
    d = Ether(raw)
    ip = d[IP] if IP in d else d[IPv6]
    udp_len = len(raw) - 14 - (20 if IP in d else 40)
    assert d[UDP].len == udp_len
    assert (ip.len if IP in d else ip.plen) == udp_len + (20 if IP in d else 0)
    # Scapy's ICRC (BTH.post_build) == our pure one == an inline restatement of IBA A17
    assert d[BTH].icrc == icrc(raw)
    off = 14
    inv = bytearray(raw[off:-4])
    if IP in d:
        inv[1] = inv[8] = 0xFF
        inv[10:12] = b"\xff\xff"
        u = 20
    else:
        inv[0:4] = bytes([inv[0] | 0x0F]) + b"\xff\xff\xff"
        inv[7] = 0xFF
        u = 40
    inv[u + 6:u + 8] = b"\xff\xff"
    inv[u + 12] = 0xFF
    assert raw[-4:] == crc32(b"\xff" * 8 + bytes(inv)).to_bytes(4, "little")


def test_known_lengths():
    pkt = carrier(0x0A) / RETH(dmalen=4) / Raw(b"abcd")
    d = Ether(bytes(pkt))
    assert (d[IP].len, d[UDP].len, d[UDP].chksum) == (20 + 8 + 12 + 16 + 4 + 4, 44, 0)


@given(pkt=roce_frames(), data=st.data())
@settings(max_examples=150, deadline=None)
def test_icrc_detects_any_flipped_bit(pkt, data):
    raw = bytearray(bytes(pkt))
    assert verify_icrc(bytes(raw)) and verify_icrc(pkt)
    # offsets from the IP header of the variant (masked) bytes; IPv6 byte 0 is half masked
    masked = {0, 1, 2, 3, 7, 46, 47, 52} if IPv6 in pkt else {1, 8, 10, 11, 26, 27, 32}
    pos = data.draw(st.sampled_from([i for i in range(14, len(raw)) if i - 14 not in masked]))
    raw[pos] ^= 1 << data.draw(st.integers(0, 7))
    assert not verify_icrc(bytes(raw))


def test_icrc_ignores_variant_fields():
    raw = bytearray(bytes(carrier(0x04) / RKeyAdvert()))
    for i in (14 + 1, 14 + 8, 14 + 10, 34 + 6, 42 + 4):  # TOS TTL IP-chksum UDP-chksum fecn
        raw[i] ^= 0x80
    assert verify_icrc(bytes(raw))
    assert not verify_icrc(b"\x00" * 80)
    with pytest.raises(ValueError):
        icrc(b"short")


# ---------------------------------------------------------------- AETH, answers
def test_aeth_syndrome_names():
    assert aeth_syndrome(ack_aeth(credits=5)) == "ACK credits=5"
    assert aeth_syndrome(rnr_nak_aeth(14)) == "RNR_NAK timer=14"
    assert nak_aeth("REMOTE_ACCESS_ERROR", msn=9).syndrome == 0x62
    assert aeth_syndrome(0x62) == "NAK REMOTE_ACCESS_ERROR"
    assert aeth_syndrome(0x64) == "NAK INVALID_RD_REQUEST"
    assert aeth_syndrome(0x65).startswith("RESERVED")
    assert aeth_syndrome(0x40).startswith("RESERVED")
    assert aeth_syndrome(0x80).startswith("RESERVED")


def _pair(req_op, resp_op, *, rpsn=0x42, resp_layers=(), req_layers=()):
    req = carrier(req_op)
    for layer in req_layers:
        req = req / layer
    resp = carrier(resp_op, sport=50001)
    resp[IP].src, resp[IP].dst = req[IP].dst, req[IP].src
    resp[BTH].psn = rpsn
    for layer in resp_layers:
        resp = resp / layer
    return Ether(bytes(req)), Ether(bytes(resp))


@pytest.mark.parametrize("req_op,resp_op,resp_layers,req_layers,rpsn,expected", [
    (0x0A, 0x11, [ack_aeth()], [RETH()], 0x42, True),  # WRITE <- ACK
    (0x0A, 0x11, [ack_aeth()], [RETH()], 0x43, False),  # other PSN
    (0x04, 0x11, [nak_aeth("REMOTE_ACCESS_ERROR")], [], 0x42, True),  # SEND <- NAK
    (0x0C, 0x11, [ack_aeth()], [RETH(dmalen=64)], 0x42, False),  # READ is not ACKed
    (0x0C, 0x11, [nak_aeth(2)], [RETH(dmalen=64)], 0x42, True),  # ... but NAKed
    (0x0C, 0x10, [ack_aeth()], [RETH(dmalen=64)], 0x42, True),  # READ <- RESPONSE ONLY
    (0x0C, 0x0F, [ack_aeth()], [RETH(dmalen=1024)], 0x45, True),  # ... LAST, 4th packet
    (0x0C, 0x0F, [ack_aeth()], [RETH(dmalen=1024)], 0x46, False),  # beyond the READ
    (0x13, 0x12, [ack_aeth(), AtomicAckETH()], [AtomicETH()], 0x42, True),
    (0x14, 0x12, [ack_aeth(), AtomicAckETH()], [AtomicETH()], 0x42, True),
    (0x13, 0x11, [ack_aeth()], [AtomicETH()], 0x42, False),  # atomic needs ATOMIC ACK
    (0x0A, 0x12, [ack_aeth(), AtomicAckETH()], [RETH()], 0x42, False),
    (0x2A, 0x11, [ack_aeth()], [RETH()], 0x42, False),  # UC is unacknowledged
    (0x11, 0x11, [ack_aeth()], [ack_aeth()], 0x42, False),  # an ACK is no request
])
def test_roce_answers(req_op, resp_op, resp_layers, req_layers, rpsn, expected):
    req, resp = _pair(req_op, resp_op, rpsn=rpsn, resp_layers=resp_layers,
                      req_layers=req_layers)
    assert roce_answers(req, resp) is expected
    assert roce_answers(resp, req) is False


def test_answers_needs_swapped_addresses():
    req, resp = _pair(0x0A, 0x11, resp_layers=[ack_aeth()], req_layers=[RETH()])
    assert roce_answers(req, resp)
    assert not roce_answers(req, req)
    assert not roce_answers(Raw(b"x"), resp)


def test_reference_pairs_answer():
    by = dict(REFERENCE)
    assert roce_answers(by["RC RDMA READ REQUEST, 3 packets of response"],
                        by["RC RDMA READ RESPONSE LAST (AETH)"])
    assert roce_answers(by["RC RDMA READ REQUEST with a wrong RKey"],
                        by[next(c for c in by if "remote access error" in c)])
    assert not roce_answers(by["RC RDMA READ REQUEST (RETH)"],
                            by["RC RDMA READ RESPONSE LAST (AETH)"])


# ---------------------------------------------------------------- SEND payload registry
class _Probe(Packet):
    name = "ftsslab test SEND probe"
    fields_desc = []


def test_send_payload_registry():
    def broken(_payload: bytes) -> bool:
        raise RuntimeError

    register_send_payload(_Probe, broken)  # raising matcher = no match
    advert = carrier(0x04) / RKeyAdvert(rkey=7)
    assert Ether(bytes(advert))[RKeyAdvert].rkey == 7
    assert Raw in Ether(bytes(carrier(0x04) / Raw(b"PROBE...")))
    register_send_payload(_Probe, lambda p: p.startswith(b"PROBE"))  # replaces, keeps order
    assert _Probe in Ether(bytes(carrier(0x04) / Raw(b"PROBE...")))
    assert _Probe in Ether(bytes(carrier(0x45) / RDETH() / DETH() / ImmDt() / Raw(b"PROBE")))
    assert _Probe not in Ether(bytes(carrier(0x01) / Raw(b"PROBE...")))  # SEND MIDDLE
    assert RKeyAdvert in Ether(bytes(advert))  # registered first, wins
    assert (BTH() / _Probe()).opcode == 0x04
    register_send_payload(_Probe, lambda p: False)


# ---------------------------------------------------------------- fuzz
@given(cls=st.sampled_from((*EXT, SendPayload)), blob=st.binary(min_size=1, max_size=48))
@settings(max_examples=2000, deadline=None)
def test_fuzz_layer_alone(cls, blob):
    """Every layer alone: any bytes dissect (short ones as Raw) and rebuild to themselves."""
    assert bytes(cls(blob)) == blob  # b"" would mean "build defaults", hence min_size=1


@given(opcode=st.sampled_from(sorted(HEADER_CHAINS)), blob=st.binary(max_size=64),
       cut=st.integers(42, 80))  # inside BTH and after: truncated or bad lengths
@settings(max_examples=2000, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
def test_fuzz_under_carrier(iba, opcode, blob, cut):
    """Any BTH payload dissects without raising, and the fast parser agrees with Scapy."""
    raw = fast.build_roce(opcode=opcode, payload=blob, dqpn=0x17, psn=0x42, **ADDR)
    pkt = Ether(raw)
    parsed = fast.parse_roce(raw)
    assert parsed is not None and parsed["icrc_ok"]
    scapy_matches_fast(pkt, parsed)
    assert bytes(Ether(raw[:cut] + blob)) == raw[:cut] + blob


_WRITE_PREFIX = fast.build_write(va=1, rkey=2, data=b"", **ADDR, dqpn=3, psn=4)[:42]


@given(blob=st.binary(max_size=160))
@settings(max_examples=2000, deadline=None)
def test_fuzz_fast_parser(blob):
    for data in (blob, _WRITE_PREFIX + blob):
        result = fast.parse_roce(data)
        assert result is None or isinstance(result["icrc_ok"], bool)
        assert fast.verify_icrc(data) in (True, False)
        assert fast.parse_bth(data) is None or len(data) >= 16
        assert fast.parse_rkey_advert(data) is None or data[:4] == b"RKEY"


# ---------------------------------------------------------------- fast builders
def _scapy(opcode, *layers, **kw):
    pkt = (Ether(src=ADDR["eth_src"], dst=ADDR["eth_dst"])
           / IP(src=ADDR["ip_src"], dst=ADDR["ip_dst"])
           / UDP(sport=ADDR["sport"], dport=4791, chksum=0)
           / BTH(opcode=opcode, dqpn=kw.get("dqpn", 9), psn=kw.get("psn", 77),
                 ackreq=kw.get("ackreq", 0)))
    for layer in layers:
        pkt = pkt / layer
    return bytes(pkt)


@given(va=st.integers(0, 2**64 - 1), rkey=st.integers(0, 2**32 - 1),
       data=st.binary(max_size=64), imm=st.none() | st.integers(0, 2**32 - 1),
       msn=st.integers(0, 2**24 - 1), psn=st.integers(0, 2**24 - 1))
@settings(max_examples=100, deadline=None)
def test_fast_builders_equal_scapy(va, rkey, data, imm, msn, psn):
    kw = {**ADDR, "dqpn": 9, "psn": psn}
    reth = RETH(va=va, rkey=rkey, dmalen=len(data))
    payload = [Raw(data)] if data else []
    write = ([reth, *payload] if imm is None else [reth, ImmDt(imm=imm), *payload])
    assert fast.build_write(va=va, rkey=rkey, data=data, imm=imm, **kw) == _scapy(
        0x0A if imm is None else 0x0B, *write, psn=psn)
    assert fast.build_read_request(va=va, rkey=rkey, dmalen=len(data), **kw) == _scapy(
        0x0C, reth, psn=psn)
    assert fast.build_read_response(syndrome=0x1F, msn=msn, data=data, **kw) == _scapy(
        0x10, AETH(syndrome=0x1F, msn=msn), *payload, psn=psn)
    send = [] if imm is None else [ImmDt(imm=imm)]
    assert fast.build_send(payload=data, imm=imm, **kw) == _scapy(
        0x04 if imm is None else 0x05, *send, *payload, psn=psn)
    assert fast.build_ack(msn=msn, **kw) == _scapy(0x11, ack_aeth(msn=msn), psn=psn)
    assert fast.build_nak(code=2, msn=msn, **kw) == _scapy(
        0x11, nak_aeth("REMOTE_ACCESS_ERROR", msn=msn), psn=psn)
    assert fast.build_atomic(va=va, rkey=rkey, swapdt=msn, cmpdt=va, **kw) == _scapy(
        0x13, AtomicETH(va=va, rkey=rkey, swapdt=msn, cmpdt=va), psn=psn)
    assert fast.build_atomic(va=va, rkey=rkey, swapdt=msn, fetch_add=True, **kw) == _scapy(
        0x14, AtomicETH(va=va, rkey=rkey, swapdt=msn), psn=psn)
    assert fast.build_atomic_ack(msn=msn, origremdt=va, **kw) == _scapy(
        0x12, ack_aeth(msn=msn), AtomicAckETH(origremdt=va), psn=psn)
    advert = fast.build_rkey_advert(va=va, rkey=rkey, length=len(data), access=0x06, qpn=msn)
    assert advert == bytes(RKeyAdvert(va=va, rkey=rkey, length=len(data),
                                      access="REMOTE_READ+REMOTE_WRITE", qpn=msn))
    assert fast.build_send(payload=advert, **kw) == _scapy(0x04, RKeyAdvert(advert), psn=psn)


def test_build_write_uc():
    frame = fast.build_write(va=1, rkey=2, data=b"x", transport="UC", **ADDR, dqpn=3, psn=4)
    assert Ether(frame)[BTH].opcode == 0x2A and verify_icrc(frame)


# ---------------------------------------------------------------- tshark
def _va_rkey(p: Packet, name: str):
    """Wireshark shows the AtomicETH address and key in the reth.va/r_key fields too."""
    layer = RETH if RETH in p else AtomicETH if AtomicETH in p else None
    return None if layer is None else p[layer].getfieldval(name)


_TSHARK_FIELDS = {
    "infiniband.bth.opcode": lambda p: p[BTH].opcode,
    "infiniband.bth.destqp": lambda p: p[BTH].dqpn,
    "infiniband.bth.psn": lambda p: p[BTH].psn,
    "infiniband.reth.va": lambda p: _va_rkey(p, "va"),
    "infiniband.reth.r_key": lambda p: _va_rkey(p, "rkey"),
    "infiniband.reth.dmalen": lambda p: p[RETH].dmalen if RETH in p else None,
    "infiniband.aeth.syndrome": lambda p: p[AETH].syndrome if AETH in p else None,
    "infiniband.aeth.msn": lambda p: p[AETH].msn if AETH in p else None,
    "infiniband.atomiceth.swapdt": lambda p: p[AtomicETH].swapdt if AtomicETH in p else None,
    "infiniband.atomiceth.cmpdt": lambda p: p[AtomicETH].cmpdt if AtomicETH in p else None,
    "infiniband.atomicacketh.origremdt":
        lambda p: p[AtomicAckETH].origremdt if AtomicAckETH in p else None,
    "infiniband.deth.q_key": lambda p: p[DETH].qkey if DETH in p else None,
    "infiniband.deth.srcqp": lambda p: p[DETH].srcqp if DETH in p else None,
    "infiniband.immdt": lambda p: f"{p[ImmDt].imm:08x}" if ImmDt in p else None,
}


@pytest.mark.tshark
def test_tshark_dissects_like_scapy(tmp_path):
    # Wireshark 4.0 decodes the RD opcode range (0x40-0x5f) of RoCE with an 8-byte
    # offset (not the IBA RDETH/DETH order), so RD frames are only checked for no errors.
    frames = [Ether(bytes(p)) for _, p in REFERENCE]
    path = tmp_path / "roce.pcapng"
    with PcapNgWriter(str(path)) as writer:
        for p in frames:
            writer.write(p)
    names = list(_TSHARK_FIELDS)
    out = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-E", "separator=|", "-E", "occurrence=f",
         "-e", "_ws.malformed", "-e", "_ws.expert.severity",
         *[a for n in names for a in ("-e", n)]],
        capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(out) == len(frames)
    for pkt, line in zip(frames, out, strict=True):
        malformed, _severity, *values = line.split("|")
        assert malformed == "", pkt.summary()
        if pkt[BTH].opcode & 0xE0 == 0x40:
            continue
        for name, shown in zip(names, values, strict=True):
            expected = _TSHARK_FIELDS[name](pkt)
            if expected is None:
                assert shown == "", (name, pkt.summary())
            elif isinstance(expected, str):
                assert shown.replace(":", "") == expected, (name, pkt.summary())
            else:
                assert int(shown, 0) == expected, (name, pkt.summary())


@given(pkt=roce_frames(), vlan=st.integers(0, 0xFFF), qinq=st.booleans())
@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_vlan_tagged_frames_fast_equal(iba, pkt, vlan, qinq):
    """Behind an 802.1Q tag (QinQ: under an 802.1ad one) the fast parser reads what Scapy
    reads; it reports no tag, and the ICRC does not cover the Ethernet header."""
    tags = Dot1AD(vlan=7) / Dot1Q(vlan=vlan) if qinq else Dot1Q(vlan=vlan)
    raw = bytes(Ether(dst=pkt.dst, src=pkt.src) / tags / pkt[Ether].payload)
    dissected = Ether(raw)
    assert dissected[Dot1Q].vlan == vlan
    parsed = fast.parse_roce(raw)
    assert parsed is not None and parsed["icrc_ok"]
    assert parsed["Ether"]["type"] == (0x88A8 if qinq else 0x8100)
    scapy_matches_fast(dissected, parsed)
