"""tshark with ftsslab's ftss.lua against the Scapy FTSS layers (layers/ftss.py).

Wireshark dissects Ether/FCoE/FC natively; ftss.lua claims the FC payload of TYPE 0xE0
(registered on "fc.ftype" 0, checking fc.type itself) and hands a PKT's inner frame to
Wireshark's "eth_withoutfcs".
"""

import struct

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from ftsslab.fast import ftss as fast
from ftsslab.layers import ftss as L
from ftsslab.layers.ftss import (
    FTSS,
    FTSSAck,
    FTSSDelete,
    FTSSFileName,
    FTSSFileRequest,
    FTSSFileResponse,
    FTSSHello,
    FTSSList,
    FTSSPacket,
    FTSSRead,
    FTSSStatus,
    FTSSWrite,
)
from ftsslab.wireshark import lua_scripts
from tests.layers.test_ftss import messages
from tests.wireshark.oracle import (
    SEVERITY_WARN,
    TSHARK,
    assert_agrees,
    cleanliness,
    reference,
    run_tshark,
    write_pcap,
)

pytestmark = pytest.mark.tshark

ABBREV = {
    FTSS: "ftss",
    FTSSPacket: "ftss.pkt",
    FTSSAck: "ftss.ack",
    FTSSHello: "ftss.hello",
    FTSSStatus: "ftss.status",
    FTSSWrite: "ftss.write",
    FTSSRead: "ftss.read",
    FTSSList: "ftss.list",
    FTSSDelete: "ftss.delete",
    FTSSFileResponse: "ftss.response",
    FTSSFileName: "ftss.fname",
}
# Classes of layers/ftss.py Wireshark dissects natively: none (FC, FCoE live in layers/fc.py).
NATIVE: dict[type[Packet], str] = {}
# Classes that never appear on the wire, so there is nothing to dissect.
ABSTRACT = {
    FTSSFileRequest: "base class of WRITE/READ/LIST/DELETE: no fields, not bound to FTSS",
}
SKIP = {
    "FTSSHello.macs": "a list of MAC strings; compared element-wise by assert_ftss_agrees",
    "FTSSStatus.macs": "a list of MAC strings; compared element-wise by assert_ftss_agrees",
    "FTSSFileResponse.names": "a packet list; its FTSSFileName entries are compared as layers",
}

DST, SRC = "0e:fc:00:01:00:00", "0e:fc:00:01:01:00"
ERROR = 0x800000


def framed(message: bytes, ox_id: int = 0x1234) -> bytes:
    """An FTSS message (any bytes) as the payload of an Ether/FCoE/FC frame of TYPE 0xE0."""
    return fast.build_ftss_frame(DST, SRC, message, d_id=0x010000, s_id=0x010100, ox_id=ox_id)


def assert_ftss_agrees(tmp_path, packets, pcap=None):
    frames = assert_agrees(tmp_path, packets, ABBREV, SKIP, pcap=pcap)
    for i, (pkt, frame) in enumerate(zip(packets, frames, strict=True), start=1):
        for cls in (FTSSHello, FTSSStatus):
            want = [m.lower() for layer in _layers_of(pkt, cls) for m in layer.macs]
            got = [s.show.lower() for s in frame.fields.get(f"{ABBREV[cls]}.macs", [])]
            assert got == want, f"frame {i}: {cls.__name__}.macs {want} != tshark {got}"
    return frames


def _layers_of(pkt, cls):
    layer = pkt
    while layer:
        if type(layer) is cls:
            yield layer
        layer = layer.payload


def _public_classes() -> set[type[Packet]]:
    return {
        obj for obj in vars(L).values()
        if isinstance(obj, type) and issubclass(obj, Packet) and obj.__module__ == L.__name__
        and not obj.__name__.startswith("_")
    }  # fmt: skip


def test_every_ftss_class_has_a_dissector():
    assert _public_classes() - set(NATIVE) - set(ABSTRACT) == set(ABBREV)
    for cls in ABSTRACT:  # really abstract: nothing to show, nothing dissects to it
        assert not cls.fields_desc
        assert cls not in {upper for _, upper in FTSS.payload_guess}
    for name in SKIP:
        cls_name, fld = name.split(".")
        assert any(c.__name__ == cls_name and fld in [f.name for f in c.fields_desc]
                   for c in ABBREV)  # fmt: skip


def test_every_scapy_field_is_a_registered_protofield():
    """Also the fields no capture here exercises: one ProtoField per Scapy field."""
    import subprocess

    cmd = [TSHARK, "-G", "fields"]
    for script in lua_scripts():
        cmd += ["-X", f"lua_script:{script}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    registered = {line.split("\t")[2] for line in out.splitlines() if line.startswith("F\t")}
    missing = [f"{prefix}.{fld.name}" for cls, prefix in ABBREV.items() for fld in cls.fields_desc
               if f"{prefix}.{fld.name}" not in registered]  # fmt: skip
    assert not missing


def test_reference_capture_agrees(tmp_path):
    path, packets = reference("ftss")
    frames = assert_ftss_agrees(tmp_path, packets, pcap=path)
    assert all("ftss" in f.protos for f in frames)
    # PKT: the inner frame is Wireshark's own Ethernet dissection
    pkt_frames = [f for p, f in zip(packets, frames, strict=True) if FTSSPacket in p]
    assert pkt_frames and all(f.protos.count("eth") == 2 for f in pkt_frames)


def _unicast_source(raw: bytes) -> bytes:
    """A PKT's inner frame with the group bit of its source MAC cleared: Wireshark's own
    Ethernet dissector warns about a group source address, and the strategy draws any MAC."""
    if raw[1] != L.FTSS_OP_PKT or len(raw) <= INNER_SRC:
        return raw
    return raw[:INNER_SRC] + bytes([raw[INNER_SRC] & 0xFE]) + raw[INNER_SRC + 1 :]


INNER_SRC = L.FTSS_HDR_LEN + 16 + 6  # header, PKT body, inner destination MAC


# No shrinking: one example is a 50-frame tshark run, and the failure lists the frames.
@settings(
    max_examples=5,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(messages(), min_size=50, max_size=50))
def test_hypothesis_messages_agree(tmp_path_factory, msgs):
    tmp_path = tmp_path_factory.mktemp("ftss")
    raws = [_unicast_source(raw) for _, raw in msgs]
    packets = [Ether(framed(raw, ox_id=i)) for i, raw in enumerate(raws)]
    for pkt, raw in zip(packets, raws, strict=True):
        assert bytes(pkt[FTSS]) == raw
    assert_ftss_agrees(tmp_path, packets)


def test_nested_ftss_frame_in_pkt(tmp_path):
    """A PKT carrying an FCoE frame with an FTSS ACK: both levels dissected."""
    inner = framed(fast.build_ack(7, 0x52, L.FTSS_ACK_DELIVERED, 0))
    outer = Ether(framed(fast.build_pkt(7, 0x50, inner, pkt_flags=L.FTSS_PKT_RETRANSMIT)))
    assert FTSSAck in outer
    frames = assert_ftss_agrees(tmp_path, [outer])
    assert frames[0].protos.count("ftss") == 2


def test_other_fc_types_left_alone():
    path, _ = reference("fc")
    frames, stderr = run_tshark(path)
    assert stderr == ""
    assert frames and not any("ftss" in f.protos for f in frames)


# ---- deliberately broken messages raise the expected expert item ----


def _hdr(opcode, length, version=1, flags=0):
    return struct.pack("!BBH", version << 4 | flags, opcode, length)


def _pad(b: bytes) -> bytes:
    return b + b"\x00" * (-len(b) % 4)


ACK_BODY = struct.pack("!QIBBH", 1, 0x50, 1, 0, 0)
BROKEN = [
    # (message bytes, severity, substring of the expert message)
    (b"\x10\x02", ERROR, "FTSS message too short: 2 bytes"),
    (_hdr(0x02, 20, version=2) + ACK_BODY, SEVERITY_WARN, "Unsupported FTSS version 2"),
    (_hdr(0x7F, 8) + b"\x00" * 4, SEVERITY_WARN, "Unknown FTSS opcode 0x7f"),
    (_hdr(0x02, 200) + ACK_BODY, ERROR, "FTSS length 200 exceeds the 20 bytes captured"),
    (_hdr(0x02, 2) + ACK_BODY, ERROR, "FTSS length 2 is less than the 4-byte header"),
    (_hdr(0x02, 12) + ACK_BODY[:8], ERROR, "Truncated ACK body: 8 bytes left, ACK needs 16"),
    (_hdr(0x01, 12) + b"\x00" * 8, ERROR, "Truncated PKT body: 8 bytes left"),
    (_pad(_hdr(0x03, 14) + b"\x00" * 10), ERROR, "Truncated HELLO body"),
    (
        _hdr(0x03, 16) + struct.pack("!IHBBHH", 0x50, 1, 1, 1, 30, 3),
        ERROR,
        "HELLO mac_count = 3 needs 18 bytes, 0 left",
    ),
    (
        _pad(_hdr(0x11, 25) + struct.pack("!IQIH", 1, 0, 0, 100) + b"abc"),
        ERROR,
        "READ name_len = 100 exceeds the 3 bytes left",
    ),
    (
        _hdr(0x10, 24) + struct.pack("!IQHHI", 1, 0, 1, 0, 9),
        ERROR,
        "WRITE data_len = 9 exceeds the 0 bytes left",
    ),
    (
        _hdr(0x14, 16) + struct.pack("!IBBH", 1, 0, 0x12, 4) + struct.pack("!H", 9) + b"ab",
        ERROR,
        "name_len = 9 exceeds the 2 bytes left",
    ),
    (
        _hdr(0x14, 16) + struct.pack("!IBBH", 1, 0, 0x11, 40) + b"\x00" * 4,
        ERROR,
        "RESPONSE data_len = 40 exceeds the 4 bytes left",
    ),
    (_hdr(0x02, 20) + ACK_BODY + b"\x00" * 8, SEVERITY_WARN, "8 bytes after the padded FTSS"),
    (
        _hdr(0x12, 11) + struct.pack("!IH", 1, 1) + b"a" + b"\x07",
        SEVERITY_WARN,
        "FTSS padding is not zero",
    ),
    (
        _hdr(0x02, 24) + ACK_BODY + b"\x00" * 4,
        SEVERITY_WARN,
        "4 unexpected bytes after the ACK body",
    ),
    (_hdr(0x01, 20) + b"\x00" * 16, SEVERITY_WARN, "FTSS PKT carries no frame"),
    (
        _pad(_hdr(0x01, 30) + b"\x00" * 16 + b"\x01" * 10),
        ERROR,
        "Malformed inner frame (10 bytes)",
    ),
]


def test_broken_messages_raise_expert_items(tmp_path):
    pcap = write_pcap(tmp_path / "broken.pcapng", [framed(m) for m, _, _ in BROKEN])
    frames, stderr = run_tshark(pcap)
    assert stderr == ""
    assert len(frames) == len(BROKEN)
    for (msg, severity, text), frame in zip(BROKEN, frames, strict=True):
        assert "ftss" in frame.protos, msg.hex()
        assert "_ws.lua.error" not in frame.fields, frame.first("_ws.lua.error")
        hits = [(sev, m) for sev, m in frame.experts if text in m]
        assert hits, f"{msg.hex()}: no expert {text!r} in {frame.experts}"
        assert hits[0][0] == severity, hits


def test_good_message_after_broken_ones_is_clean(tmp_path):
    """The control: the same builders without the defect raise nothing."""
    good = [_hdr(0x02, 20) + ACK_BODY, _pad(_hdr(0x12, 11) + struct.pack("!IH", 1, 1) + b"a")]
    pcap = write_pcap(tmp_path / "good.pcapng", [framed(m) for m in good])
    frames, stderr = run_tshark(pcap)
    assert stderr == "" and all(not cleanliness(f) for f in frames)


@settings(
    max_examples=3,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(st.tuples(st.sampled_from([*sorted(L.FTSS_OPCODES), 0x00, 0x7F]),
                          st.integers(0, 120), st.binary(max_size=96)),
                min_size=60, max_size=60))  # fmt: skip
def test_fuzz_never_lua_error(tmp_path_factory, items):
    tmp_path = tmp_path_factory.mktemp("fuzz")
    msgs = [_hdr(op, ln) + data for op, ln, data in items]
    frames, stderr = run_tshark(write_pcap(tmp_path / "fuzz.pcapng", [framed(m) for m in msgs]))
    assert stderr == ""
    for msg, frame in zip(msgs, frames, strict=True):
        assert "_ws.lua.error" not in frame.fields, (msg.hex(), frame.first("_ws.lua.error"))
        assert "ftss" in frame.protos
