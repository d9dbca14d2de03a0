# SPDX-License-Identifier: GPL-2.0-or-later
"""FCoE / FC layers, the fast FCoE parser/builder and the FC reference capture."""

from __future__ import annotations

import inspect
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.fields import ByteField
from scapy.layers.inet import IP
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether
from scapy.packet import NoPayload, Packet, Padding, Raw
from scapy.utils import wrpcap

import ftsslab.layers
from ftsslab.fast import fc as fast
from ftsslab.layers import fc
from ftsslab.layers.fc import FC, FCOE_ETHERTYPE, FCoE, fc_crc, verify_fc_crc
from ftsslab.reference import family_packets, write_family

REF = family_packets("fc")
BOUND_TYPES = {fval["type"] for fval, _cls in FC.payload_guess if "type" in fval}
ETHER_HDR = bytes.fromhex("0efc000a0b0c0efc00010203") + struct.pack("!H", FCOE_ETHERTYPE)
DOT1Q_HDR = ETHER_HDR[:12] + bytes.fromhex("8100") + struct.pack("!HH", 1002, FCOE_ETHERTYPE)
QINQ_HDR = ETHER_HDR[:12] + struct.pack("!HHHHH", 0x88A8, 0x2007, 0x8100, 0x63EA, FCOE_ETHERTYPE)
HEADERS = {"untagged": ETHER_HDR, "802.1Q": DOT1Q_HDR, "QinQ": QINQ_HDR}
FC_FIELDS = [f.name for f in FC.fields_desc]
FCOE_FIELDS = [f.name for f in FCoE.fields_desc]

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u24 = st.integers(0, 0xFFFFFF)
fc_values = st.fixed_dictionaries(
    {
        "r_ctl": u8,
        "d_id": u24,
        "cs_ctl": u8,
        "s_id": u24,
        "type": u8.filter(lambda t: t not in BOUND_TYPES),  # keep the payload Raw
        "f_ctl": u24,
        "seq_id": u8,
        "df_ctl": u8,
        "seq_cnt": u16,
        "ox_id": u16,
        "rx_id": u16,
        "parameter": st.integers(0, 0xFFFFFFFF),
    }
)
fcoe_values = st.fixed_dictionaries(
    {
        "version": st.integers(0, 15),
        "reserved": st.integers(0, (1 << 100) - 1),
        "sof": u8,
        "eof": u8,
        "trailer_reserved": u24,
    }
)
payloads = st.binary(max_size=64)
macs = st.binary(min_size=6, max_size=6).map(lambda b: b.hex(":"))
# none, one or two VLAN tags of any kind, priority and DEI, as Scapy stacks them
tags = st.lists(st.builds(lambda cls, vlan, prio, dei: cls(vlan=vlan, prio=prio, id=dei),
                          st.sampled_from([Dot1Q, Dot1AD]), st.integers(0, 0xFFF),
                          st.integers(0, 7), st.integers(0, 1)), max_size=2)


def _tagged(ether: Packet, stack: list[Packet]) -> Packet:
    for tag in stack:
        ether = ether / tag.copy()
    return ether


def _fields(layer: Packet, names: list[str]) -> dict:
    return {n: layer.getfieldval(n) for n in names}


def _scapy_view(pkt: Packet) -> dict:
    """What parse_fcoe_frame must return for a Scapy FCoE frame, tagged or not."""
    view = {"dst": pkt[Ether].dst, "src": pkt[Ether].src, "ether_type": pkt[Ether].type}
    tag = pkt[FCoE].underlayer
    view["vlan"] = tag.vlan if isinstance(tag, Dot1Q | Dot1AD) else None
    view |= _fields(pkt[FCoE], FCOE_FIELDS) | _fields(pkt[FC], FC_FIELDS)
    view["crc_ok"] = verify_fc_crc(pkt)
    return view


def _assert_fast_equals_scapy(frame: bytes, pkt: Packet) -> None:
    got = fast.parse_fcoe_frame(frame)
    assert got is not None
    payload = got.pop("payload")
    assert got == _scapy_view(pkt)
    tags, layer = 0, pkt[Ether].payload
    while isinstance(layer, Dot1Q | Dot1AD):
        tags, layer = tags + 4, layer.payload
    assert bytes(payload) == frame[14 + tags + 14 + 24 : -8]
    if isinstance(pkt[FC].payload, Raw):
        assert bytes(payload) == pkt[FC].load


# --- build / dissect round trips ---


@given(fcoe_values, fc_values, payloads, macs, macs)
def test_ether_fcoe_fc_round_trip(fcoe_v, fc_v, payload, dst, src):
    pkt = Ether(dst=dst, src=src) / FCoE(**fcoe_v) / FC(**fc_v) / Raw(payload)
    raw = bytes(pkt)
    assert len(raw) == 14 + 14 + 24 + len(payload) + 4 + 4
    got = Ether(raw)
    assert _fields(got[FCoE], FCOE_FIELDS) == _fields(pkt[FCoE], FCOE_FIELDS)
    assert {k: v for k, v in _fields(got[FC], FC_FIELDS).items() if k != "crc"} == fc_v
    assert got[FC].payload.__class__ is (Raw if payload else NoPayload)
    assert bytes(got[FC].payload) == payload  # exactly the bytes between header and CRC
    assert bytes(got) == raw


@given(fc_values, payloads, st.integers(0, 0xFFFFFFFF))
def test_fc_alone_round_trip_keeps_given_crc(fc_v, payload, crc):
    raw = bytes(FC(crc=crc, **fc_v) / Raw(payload))
    assert raw[-4:] == struct.pack("<I", crc)
    got = FC(raw)
    assert got.crc == crc
    assert bytes(got.payload) == payload
    assert bytes(got) == raw
    assert verify_fc_crc(got) == (crc == zlib.crc32(raw[:-4]))


@given(fcoe_values, payloads)
def test_fcoe_alone_round_trip(fcoe_v, payload):
    raw = bytes(FCoE(**fcoe_v) / FC() / Raw(payload))
    got = FCoE(raw)
    assert _fields(got, FCOE_FIELDS) == fcoe_v
    assert got[FC].ox_id == 0 and bytes(got[FC].payload) == payload
    assert bytes(got) == raw


def test_fc_address_field_accepts_and_shows_dotted_form():
    pkt = FC(d_id="01.02.03", s_id=0x0A0B0C)
    assert pkt.d_id == 0x010203
    assert "d_id      = 01.02.03" in pkt.show(dump=True)
    assert FC(bytes(pkt)).s_id == 0x0A0B0C


def test_dot1q_tagged_fcoe_dissects_and_the_fast_parser_reports_the_vlan():
    frame = Ether() / Dot1Q(vlan=1002, prio=3) / FCoE() / FC(ox_id=0x4242) / Raw(b"tagged")
    got = Ether(bytes(frame))
    assert got[Dot1Q].type == FCOE_ETHERTYPE
    assert got[FC].ox_id == 0x4242 and got[FC].load == b"tagged"
    fast_view = fast.parse_fcoe_frame(bytes(frame))
    assert (fast_view["vlan"], fast_view["ether_type"]) == (1002, 0x8100)
    assert fast_view["ox_id"] == 0x4242 and fast_view["crc_ok"]
    _assert_fast_equals_scapy(bytes(frame), got)


def test_qinq_fcoe_reports_the_inner_vlan():
    frame = bytes(Ether() / Dot1AD(vlan=7) / Dot1Q(vlan=1002) / FCoE() / FC() / Raw(b"qinq"))
    got = fast.parse_fcoe_frame(frame)
    assert (got["vlan"], got["ether_type"], bytes(got["payload"])) == (1002, 0x88A8, b"qinq")
    _assert_fast_equals_scapy(frame, Ether(frame))


def test_tags_before_something_else_or_too_little_are_not_fcoe():
    assert fast.parse_fcoe_frame(bytes(Ether() / Dot1Q(vlan=1002) / IP() / Raw(bytes(60)))) is None
    short = bytes(Ether() / Dot1Q() / Dot1Q() / FCoE() / FC())[:64]  # untagged, it would fit
    pkt = Ether(short)
    assert not (FC in pkt and "crc" in pkt[FC].fields)
    assert fast.parse_fcoe_frame(short) is None


# --- lengths, CRC, trailers ---


def test_crc_check_value_and_wire_order():
    assert fc_crc(b"123456789") == 0xCBF43926  # the CRC-32 check value
    pkt = Ether() / FCoE(eof=fc.FC_EOF_N) / FC(type=0xFE) / Raw(b"abcd")
    raw = bytes(pkt)
    fc_frame = raw[28:-4]
    assert fc_frame[-4:] == struct.pack("<I", zlib.crc32(fc_frame[:-4]))  # LSB first
    assert raw[-4:] == bytes([fc.FC_EOF_N, 0, 0, 0])
    assert raw[27] == fc.FC_SOF_I3
    assert Ether(raw)[FC].crc == zlib.crc32(fc_frame[:-4])
    assert verify_fc_crc(raw[28:-4]) and verify_fc_crc(pkt)


@given(st.binary(max_size=300))
def test_crc_oracles_agree(data):
    assert fc_crc(data) == fast.fc_crc(data) == zlib.crc32(data)


def test_bad_crc_is_kept_and_detected():
    raw = bytes(Ether() / FCoE() / FC(crc=0xDEADBEEF) / Raw(b"x" * 8))
    got = Ether(raw)
    assert got[FC].crc == 0xDEADBEEF and bytes(got) == raw
    assert not verify_fc_crc(got)
    assert fast.parse_fcoe_frame(raw)["crc_ok"] is False
    flipped = bytearray(bytes(Ether() / FCoE() / FC() / Raw(b"x" * 8)))
    flipped[40] ^= 1
    assert not verify_fc_crc(Ether(bytes(flipped)))


def test_verify_fc_crc_rejects_non_fc():
    assert not verify_fc_crc(Ether() / Raw(b"x" * 40))
    assert not verify_fc_crc(b"\x00" * 27)


def test_inner_padding_is_built_before_the_crc():
    pkt = Ether() / FCoE() / FC() / Raw(b"ab") / Padding(b"\x00\x00")
    raw = bytes(pkt)
    assert raw[52:56] == b"ab\x00\x00" and len(raw) == 52 + 4 + 8
    assert verify_fc_crc(raw[28:-4])


def test_truncated_input_stays_raw():
    assert FC(b"\x01").payload.load == b"\x01"
    assert FCoE(b"abc").payload.load == b"abc"
    got = Ether(ETHER_HDR + bytes(14) + b"\x00" * 10 + bytes(4))  # FCoE ok, FC too short
    assert got[FCoE].eof == 0 and FC in got and got[FC].crc is None
    assert got[FC].load == b"\x00" * 10


# --- summaries, answers, hashret ---


def test_mysummary():
    pkt = FC(s_id="01.02.03", d_id="0a.0b.0c", type=0xE0, ox_id=0x1234)
    assert pkt.mysummary() == "FC 01.02.03 > 0a.0b.0c type=0xe0 ox_id=0x1234 dd_unsol_data"
    assert FCoE(sof=fc.FC_SOF_N2, eof=fc.FC_EOF_A).mysummary() == "FCoE SOFn2/EOFa"


def _ref(prefix: str) -> Packet:
    (pkt,) = [p for c, p in REF if c.startswith(prefix)]
    return Ether(bytes(pkt))


PAIRS = [
    ("ELS LS_ACC", "ELS ECHO"),
    ("BLS BA_ACC", "BLS ABTS"),
    ("FCP_RSP", "FCP_CMND INQUIRY, class 3"),
    ("ACK_1", "vendor TYPE"),
]


@pytest.mark.parametrize(("reply", "req"), PAIRS)
def test_answers_pairs(reply, req):
    rep, req = _ref(reply), _ref(req)
    assert rep.answers(req) and rep[FC].answers(req[FC])
    assert not req.answers(rep)
    assert rep.hashret() == req.hashret()


def test_answers_rejects_other_exchange_and_wrong_roles():
    rep, req = _ref("ELS LS_ACC")[FC], _ref("ELS ECHO")[FC]
    assert rep.answers(req)
    other = req.copy()
    other.ox_id ^= 1
    assert not rep.answers(other)
    stranger = req.copy()
    stranger.s_id = 0x999999
    assert not rep.answers(stranger)
    originator_reply = rep.copy()
    originator_reply.f_ctl = int(rep.f_ctl) & ~fc.FC_FCTL_EXCH_CONTEXT
    assert not originator_reply.answers(req)
    assert not rep.answers(Raw(b"x"))
    assert _ref("ELS LS_ACC").hashret() != _ref("BLS BA_RJT").hashret()


class _Probe(Packet):
    """Stand-in upper layer, to see FC hand answers() to its payload."""

    name = "fc test probe"
    fields_desc = [ByteField("tag", 0)]

    def answers(self, other):
        return isinstance(other, _Probe) and other.tag == self.tag


def test_answers_defers_to_upper_layers():
    req = FC(s_id=1, d_id=2, ox_id=7) / _Probe(tag=1)
    rep = FC(s_id=2, d_id=1, ox_id=7, f_ctl=fc.FC_FCTL_EXCH_CONTEXT) / _Probe(tag=1)
    assert rep.answers(req)
    assert not (FC(s_id=2, d_id=1, ox_id=7, f_ctl=fc.FC_FCTL_EXCH_CONTEXT) / _Probe(tag=2)).answers(
        req
    )


def test_layer_names_unique():
    names = {}
    for module in ftsslab.layers.MODULES:
        for _n, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Packet) and cls.__module__ == module.__name__:
                names.setdefault(cls._name, set()).add(cls)
    for cls in (FC, FCoE):
        assert names[cls._name] == {cls}


# --- arbitrary bytes never raise ---

FUZZ = settings(max_examples=2000, deadline=None)


@FUZZ
@given(st.binary(max_size=96))
def test_fuzz_fc_alone(data):
    pkt = FC(data)
    pkt.mysummary()
    if "crc" in pkt.fields and isinstance(pkt.payload, (Raw, NoPayload)):
        assert bytes(pkt) == data


@FUZZ
@given(st.binary(max_size=96))
def test_fuzz_fcoe_alone(data):
    pkt = FCoE(data)
    pkt.mysummary()
    if FC in pkt:
        pkt[FC].mysummary()


@FUZZ
@given(st.binary(max_size=96), st.sampled_from(sorted(HEADERS)))
def test_fuzz_under_ether_and_fast_agrees(data, header):
    frame = HEADERS[header] + data
    pkt = Ether(frame)
    got = fast.parse_fcoe_frame(frame)
    full_fc = FC in pkt and "crc" in pkt[FC].fields
    assert (got is not None) == full_fc
    if full_fc:
        _assert_fast_equals_scapy(frame, pkt)


@FUZZ
@given(st.binary(max_size=96))
def test_fuzz_fast_parser_any_bytes(data):
    fast.parse_fcoe_frame(data)
    fast.parse_fcoe_frame(memoryview(data))


# --- fast path == Scapy ---


@pytest.mark.parametrize(("comment", "pkt"), REF, ids=[c for c, _ in REF])
def test_fast_parser_matches_scapy_on_reference(comment, pkt):
    frame = bytes(pkt)
    dissected = Ether(frame)
    _assert_fast_equals_scapy(frame, dissected)
    assert fast.parse_fcoe_frame(frame)["crc_ok"] is True


@given(fcoe_values, fc_values, payloads, macs, macs, tags)
def test_fast_parser_matches_scapy_generated(fcoe_v, fc_v, payload, dst, src, stack):
    ether = _tagged(Ether(dst=dst, src=src), stack)
    frame = bytes(ether / FCoE(**fcoe_v) / FC(**fc_v) / Raw(payload))
    _assert_fast_equals_scapy(frame, Ether(frame))


@given(fc_values, payloads, macs, macs, u8, u8, st.none() | st.integers(0, 0xFFF))
def test_fast_builder_matches_scapy(fc_v, payload, dst, src, sof, eof, vlan):
    built = fast.build_fcoe_frame(dst, src, payload=payload, sof=sof, eof=eof, vlan=vlan, **fc_v)
    ether = Ether(dst=dst, src=src) if vlan is None else Ether(dst=dst, src=src) / Dot1Q(vlan=vlan)
    scapy = ether / FCoE(sof=sof, eof=eof) / FC(**fc_v) / Raw(payload)
    assert built == bytes(scapy)
    assert fast.parse_fcoe_frame(built)["vlan"] == vlan


@pytest.mark.parametrize("vlan", [-1, 0x1000])
def test_fast_builder_refuses_a_vlan_id_out_of_range(vlan):
    with pytest.raises(ValueError, match="VLAN id"):
        fast.build_fcoe_frame("0e:fc:00:0a:0b:0c", "0e:fc:00:01:02:03", r_ctl=0, d_id=0, s_id=0,
                              type=0, f_ctl=0, seq_id=0, seq_cnt=0, ox_id=0, rx_id=0,
                              parameter=0, payload=b"", vlan=vlan)


def test_fast_builder_defaults_match_scapy_defaults():
    fc_v = {k: v for k, v in _fields(FC(), FC_FIELDS).items() if k != "crc"}
    fc_v = {k: int(v) for k, v in fc_v.items()}
    built = fast.build_fcoe_frame("0e:fc:00:0a:0b:0c", "0e:fc:00:01:02:03", payload=b"", **fc_v)
    assert built == bytes(Ether(dst="0e:fc:00:0a:0b:0c", src="0e:fc:00:01:02:03") / FCoE() / FC())


# --- reference capture ---


def test_reference_covers_every_delimiter_and_kind():
    fcs = [Ether(bytes(p)) for _, p in REF]
    assert {p[FCoE].sof for p in fcs} == set(fc.FCOE_SOF)
    assert {p[FCoE].eof for p in fcs} == set(fc.FCOE_EOF)
    assert {p[FC].type for p in fcs} >= {fc.FC_TYPE_BLS, fc.FC_TYPE_ELS, fc.FC_TYPE_FCP, 0xFE}
    assert all(verify_fc_crc(p) for p in fcs)
    assert all(len(p[FC].payload) % 4 == 0 for p in fcs)  # whole FC words, no fill bytes


def test_reference_capture_is_deterministic(tmp_path):
    write_family("fc", tmp_path / "a.pcapng")
    write_family("fc", tmp_path / "b.pcapng")
    assert (tmp_path / "a.pcapng").read_bytes() == (tmp_path / "b.pcapng").read_bytes()


# --- tshark ---

TSHARK_FIELDS = ["fcoe.crc.status", "_ws.malformed", "fc.d_id", "fc.s_id", "fc.type", "fc.ox_id"]


def _tshark_rows(path: Path) -> list[list[str]]:
    cmd = ["tshark", "-r", str(path), "-T", "fields", "-E", "separator=|"]
    for f in TSHARK_FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [line.split("|") for line in out.splitlines()]


def _expected_row(pkt: Packet) -> list[str]:
    f = pkt[FC]
    return ["1", "", fc.fc_addr(f.d_id), fc.fc_addr(f.s_id), f"0x{f.type:02x}", f"0x{f.ox_id:04x}"]


@pytest.mark.tshark
def test_tshark_reference_crc_good_and_fields_match(tmp_path):
    path = tmp_path / "fc.pcapng"
    write_family("fc", path)
    rows = _tshark_rows(path)
    assert rows == [_expected_row(Ether(bytes(p))) for _, p in REF]


@pytest.mark.tshark
def test_tshark_fast_builder_crc_good_and_bad_crc_flagged(tmp_path):
    frames = [
        fast.build_fcoe_frame(
            "0e:fc:00:0a:0b:0c", "0e:fc:00:01:02:03", r_ctl=fc.FC_RCTL_DD_UNSOL_DATA,
            d_id=0x0A0B0C, s_id=0x010203 + i, type=0xFE, f_ctl=fc.FC_FCTL_SINGLE, seq_id=i,
            seq_cnt=0, ox_id=0x100 + i, rx_id=0xFFFF, parameter=0, payload=bytes(range(i * 7)),
        )
        for i in range(6)
    ]  # fmt: skip
    bad = bytearray(frames[0])
    bad[-8] ^= 0xFF  # corrupt the CRC
    path = tmp_path / "fast.pcap"
    wrpcap(str(path), [Ether(f) for f in [*frames, bytes(bad)]])
    rows = _tshark_rows(path)
    assert [r[0] for r in rows] == ["1"] * 6 + ["0"]  # 1 = good, 0 = bad
    assert rows[:6] == [_expected_row(Ether(f)) for f in frames]
