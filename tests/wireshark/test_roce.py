"""tshark oracle for ftsslab/wireshark/lua/roce.lua (RKeyAdvert, seed 003 message 748)."""

from __future__ import annotations

import inspect
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from scapy.contrib.roce import BTH
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from ftsslab.fast import roce as fast
from ftsslab.layers import roce as layers
from ftsslab.layers.roce import (
    DETH,
    RDETH,
    RETH,
    RKEY_ADVERT_KINDS,
    AtomicAckETH,
    AtomicETH,
    ImmDt,
    RKeyAdvert,
    SanMad,
    SendPayload,
)
from tests.layers.test_roce import ADDR, carrier, fields, roce_frames
from tests.wireshark.oracle import (
    SEVERITY_WARN,
    Frame,
    cleanliness,
    compare,
    reference,
    run_tshark,
    write_pcap,
)

pytestmark = pytest.mark.tshark

ABBREV: dict[type[Packet], str] = {RKeyAdvert: "rkeyadvert"}
NOT_OURS: dict[type[Packet], str] = {
    SendPayload: "Scapy dispatch helper (picks the SEND payload class), not a wire format",
    RDETH: "Wireshark's infiniband dissector (native)",
    DETH: "Wireshark's infiniband dissector (native)",
    RETH: "Wireshark's infiniband dissector (native)",
    AtomicETH: "Wireshark's infiniband dissector (native)",
    AtomicAckETH: "Wireshark's infiniband dissector (native)",
    ImmDt: "Wireshark's infiniband dissector (native)",
    SanMad: "Wireshark's infiniband dissector (native: QP1 to QP1 is a MAD)",
}
SKIP: dict[str, str] = {}  # every RKeyAdvert field is compared
EXPERTS = ("rkeyadvert.truncated", "rkeyadvert.bad_version", "rkeyadvert.unknown_kind",
           "rkeyadvert.unbind_range")

# RoCEv2 sends a zero UDP checksum over IPv6 too (the ICRC protects the packet, IBA Annex
# A17), which tshark flags "Illegal checksum value (0)" unless told to accept it.
TSHARK_ARGS = ("-o", "udp.ignore_ipv6_zero_checksum:TRUE")
# Random payloads trip two of Wireshark 4.0's own infiniband.payload heuristics (RPC over
# RDMA, SMC-R), which then throw "Malformed Packet" on junk: not ours, so the tests of junk
# payloads switch those two off (12,000+ random frames were clean with them off).
QUIET_ARGS = (*TSHARK_ARGS, "--disable-heuristic", "rpcrdma_infiniband",
              "--disable-heuristic", "smcr_infiniband")
SEVERITY_NOTE = 0x400000
SEVERITY_ERROR = 0x800000
RD = 0x40  # BTH opcode transport bits of RD: tshark 4.0 decodes RD 8 bytes off (docs/protocols.md)


def test_every_layer_has_a_dissector():
    public = {
        cls for name, cls in inspect.getmembers(layers, inspect.isclass)
        if issubclass(cls, Packet) and cls.__module__ == layers.__name__
        and not name.startswith("_")
    }
    assert public - set(NOT_OURS) == set(ABBREV)
    assert not set(ABBREV) & set(NOT_OURS)


def _not_rd(pkt: Packet) -> bool:
    return BTH not in pkt or pkt[BTH].opcode & 0xE0 != RD


def agrees(tmp_path: Path, packets: list[Packet], pcap: Path | None = None,
           args: tuple[str, ...] = TSHARK_ARGS) -> list[Frame]:
    """``oracle.assert_agrees`` with tshark ``args``: clean dissection, every field equal."""
    if pcap is None:
        pcap = write_pcap(tmp_path / "oracle.pcapng", packets)
    frames, stderr = run_tshark(pcap, *args)
    assert stderr == "", f"tshark/Lua stderr: {stderr}"
    assert len(frames) == len(packets)
    failures = []
    for i, (pkt, frame) in enumerate(zip(packets, frames, strict=True), start=1):
        problems = cleanliness(frame) + compare(pkt, frame, ABBREV, SKIP)
        if problems:
            failures.append(f"frame {i} ({pkt.summary()}):\n    " + "\n    ".join(problems))
    assert not failures, "\n".join(failures[:20])
    return frames


def test_reference_agrees(tmp_path):
    path, packets = reference("roce")
    frames = agrees(tmp_path, packets, pcap=path)
    adverts = [f for f in frames if "rkeyadvert.magic" in f.fields]
    assert len(adverts) == sum(RKeyAdvert in p for p in packets) >= 3
    # the UNBIND frame of the reference has a null range: no note either
    assert not [e for f in adverts for e in EXPERTS if e in f.fields]


def _dissected(pkt: Packet) -> Packet:
    return Ether(bytes(pkt))


def _known_kind(pkt: Packet) -> Packet:
    """Unknown kinds raise a warning by design (tested below): keep the random ones known."""
    if RKeyAdvert in pkt:
        pkt[RKeyAdvert].kind = 1 + pkt[RKeyAdvert].kind % len(RKEY_ADVERT_KINDS)
    return pkt


def _not_management_qp(pkt: Packet) -> Packet:
    """UD from QP0/QP1 (SMI/GSI) is a MAD to Wireshark, never a SEND payload: avoid them."""
    if DETH in pkt and pkt[DETH].srcqp < 2:
        pkt[DETH].srcqp += 2
    return pkt


@st.composite
def advert_frames(draw) -> Packet:
    """An RKeyAdvert SEND (any non-RD SEND opcode that starts a message), maybe with data after."""
    opcode = draw(st.sampled_from(sorted(
        code for code, chain in layers.HEADER_CHAINS.items()
        if chain and chain[-1] is SendPayload and code & 0xE0 != RD)))
    pkt = carrier(opcode, v6=draw(st.booleans()))
    for cls in layers.HEADER_CHAINS[opcode][:-1]:
        pkt = pkt / cls(**draw(fields(cls)))
    pkt = pkt / RKeyAdvert(**draw(fields(RKeyAdvert)))
    tail = draw(st.binary(max_size=24))
    return pkt / Raw(tail) if tail else pkt


# RD frames are left out: tshark 4.0 reads the RD opcodes' headers 8 bytes off
# (docs/protocols.md, "Known limits") and throws on short ones; that is not our layer.
# 6 examples x 50 frames: 300 non-RD frames compared field by field.
@given(packets=st.lists(st.one_of(roce_frames(), advert_frames())
                        .map(_known_kind).map(_not_management_qp).filter(_not_rd),
                        min_size=50, max_size=50))
@settings(max_examples=6, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.filter_too_much])
def test_random_frames_agree(tmp_path_factory, packets):
    # No shrinking: each step would run tshark again; the failure message names the frame.
    agrees(tmp_path_factory.mktemp("roce"), [_dissected(p) for p in packets], args=QUIET_ARGS)


def _send(payload: bytes) -> bytes:
    return fast.build_send(payload=payload, dqpn=0x17, psn=0x42, **ADDR)


def _advert(**kw) -> bytes:
    values = {"va": 0x1000, "rkey": 0xC0DE, "length": 0x2000, "access": 0x6, "qpn": 7}
    values.update(kw)
    return fast.build_rkey_advert(**values)


GOOD = _advert()
BROKEN = {
    # name: (SEND payload, expected expert severity, message start)
    "truncated": (GOOD[:20], SEVERITY_ERROR, "RKeyAdvert truncated: 20 bytes, need 32"),
    "magic_only": (GOOD[:4], SEVERITY_ERROR, "RKeyAdvert truncated: 4 bytes, need 32"),
    "bad_version": (GOOD[:4] + b"\x07" + GOOD[5:], SEVERITY_WARN,
                    "RKeyAdvert unsupported version 7 (expected 1)"),
    "unknown_kind": (_advert(kind=9), SEVERITY_WARN, "RKeyAdvert unknown kind 9"),
    "unbind_range": (_advert(kind=2), SEVERITY_NOTE,
                     "RKeyAdvert UNBIND with non-zero address or length"),
}


def test_broken_frames_raise_expert(tmp_path):
    names = list(BROKEN)
    raws = [_send(BROKEN[n][0]) for n in names]
    # plus: bad magic and a too-short payload are not claimed at all
    raws += [_send(b"RKEZ" + GOOD[4:]), _send(b"RKE"), _send(GOOD)]
    frames, stderr = run_tshark(write_pcap(tmp_path / "broken.pcapng", raws), *QUIET_ARGS)
    assert stderr == ""
    assert len(frames) == len(raws)
    for name, frame in zip(names, frames, strict=False):
        _, severity, message = BROKEN[name]
        assert "_ws.lua.error" not in frame.fields, name
        assert "_ws.lua" not in frame.protos, name
        assert "rkeyadvert.magic" in frame.fields, name
        got = [(sev, msg) for sev, msg in frame.experts if message in msg]
        assert got and got[0][0] == severity, (name, frame.experts)
    for name, frame in zip(names, frames, strict=False):  # fields still agree where Scapy has them
        pkt = Ether(_send(BROKEN[name][0]))
        if RKeyAdvert in pkt:
            assert compare(pkt, frame, ABBREV, SKIP) == [], name
    bad_magic, too_short, good = frames[len(names):]
    for frame in (bad_magic, too_short):
        assert "rkeyadvert" not in frame.protos
        assert cleanliness(frame) == []
    assert cleanliness(good) == [] and good.first("rkeyadvert.kind") == "1"


def test_fuzzed_payloads_never_lua_error(tmp_path):
    """Any bytes after the magic, any length: never a Lua error, never malformed."""
    raws = []
    for n in range(4, 48):
        blob = bytes((i * 37 + n) & 0xFF for i in range(n))
        raws.append(_send(b"RKEY" + blob[4:]))
    frames, stderr = run_tshark(write_pcap(tmp_path / "fuzz.pcapng", raws), *QUIET_ARGS)
    assert stderr == ""
    for n, frame in zip(range(4, 48), frames, strict=True):
        assert "rkeyadvert.magic" in frame.fields
        assert "_ws.lua.error" not in frame.fields and "_ws.lua" not in frame.protos
        truncated = [m for _, m in frame.experts if "RKeyAdvert truncated" in m]
        # a MALFORMED-group expert marks the frame _ws.malformed: only truncation may do that
        assert bool(truncated) == (n < 32) == ("_ws.malformed" in frame.protos), n


def test_icrc_is_not_in_the_payload(tmp_path):
    """The heuristic's tvb ends before the ICRC: 32 bytes + trailing data, no 4 extra bytes."""
    tail = b"\x01\x02\x03\x04\x05\x06\x07\x08"
    raw = _send(GOOD + tail)
    frames, _ = run_tshark(write_pcap(tmp_path / "icrc.pcapng", [raw]), *TSHARK_ARGS)
    (frame,) = frames
    assert frame.fields["data.data"][0].value == tail.hex()
    assert frame.first("infiniband.invariant.crc") is not None
    assert struct.unpack("!I", raw[-4:])[0] == Ether(raw)[BTH].icrc
