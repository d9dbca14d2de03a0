# SPDX-License-Identifier: GPL-2.0-or-later
"""tshark + ftsslab/wireshark/lua/i2o.lua against the Scapy layers of layers/i2o.py.

Every I2O layer class has a Lua prefix; every field of every dissected layer must show in
tshark with the same value (reference capture and hypothesis-generated frames, the
Connection Manager's private frames among them, over both carriers, UDP 49122 and RoCE
SEND), and broken frames raise the expected expert items.
"""

from __future__ import annotations

import inspect
import os
import shutil
import struct
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.contrib.roce import BTH
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from ftsslab.fast import i2o as fast
from ftsslab.layers import i2o as layers
from ftsslab.layers.i2o import (
    I2O_FUNCTIONS,
    I2O_REPLY_STATUS,
    I2O_UDP_PORT,
    I2OCMIOP,
    I2OBlockCacheFlush,
    I2OBlockRead,
    I2OBlockReply,
    I2OBlockWrite,
    I2OCMAdvertise,
    I2OCMConnect,
    I2OCMConnectReply,
    I2OCMDevice,
    I2OCMDisconnect,
    I2OCMDisconnectReply,
    I2OCMHello,
    I2OMessage,
    I2OPrivate,
    I2OReply,
    I2OSGEAttributes,
    I2OSGERemote,
    I2OSGESimple,
    I2OSGESimple64,
)
from ftsslab.wireshark import LUA_DIR
from tests.layers.test_i2o import ANY_FRAME
from tests.layers.test_i2o_cm import CM_FRAMES

from .oracle import (
    SEVERITY_WARN,
    TSHARK,
    assert_agrees,
    cleanliness,
    lua_stderr,
    reference,
    run_tshark,
    write_pcap,
)

pytestmark = pytest.mark.tshark

ABBREV: dict[type[Packet], str] = {
    I2OMessage: "i2o",
    I2OReply: "i2o.reply",
    I2OBlockReply: "i2o.bsa_reply",
    I2OBlockRead: "i2o.read",
    I2OBlockWrite: "i2o.write",
    I2OBlockCacheFlush: "i2o.flush",
    I2OSGESimple: "i2o.sge",
    I2OSGESimple64: "i2o.sge64",
    I2OSGEAttributes: "i2o.sge_attr",
    I2OSGERemote: "i2o.sge_remote",
    I2OPrivate: "i2o.private",
    I2OCMHello: "i2o.cm_hello",
    I2OCMAdvertise: "i2o.cm_advertise",
    I2OCMIOP: "i2o.cm_iop",
    I2OCMDevice: "i2o.cm_device",
    I2OCMConnect: "i2o.cm_connect",
    I2OCMConnectReply: "i2o.cm_connect_reply",
    I2OCMDisconnect: "i2o.cm_disconnect",
    I2OCMDisconnectReply: "i2o.cm_disconnect_reply",
}
# Classes of layers/i2o.py that Wireshark dissects natively: none (tshark 4.0 has no I2O).
NATIVE: set[type[Packet]] = set()
# "Layer.field" -> why it is not compared. A list of layers is compared element by element
# (the SGL is never empty); the CM's lists may be, and an empty list looks like a value.
SKIP: dict[str, str] = {
    "I2OCMAdvertise.iops": "its I2OCMIOP elements are compared as layers",
    "I2OCMIOP.devices": "its I2OCMDevice elements are compared as layers",
}

SEVERITY_ERROR = 0x800000
SEVERITY_NOTE = 0x400000
ROCEV2_PORT = 4791


def _udp(msg: bytes | Packet) -> Packet:
    return Ether() / IP(src="10.0.1.1", dst="10.0.1.2") / UDP(sport=I2O_UDP_PORT,
                                                               dport=I2O_UDP_PORT) / msg


def _roce(msg: bytes | Packet) -> Packet:
    # not QP0/QP1: Wireshark reads a SEND to those as a MAD, never offering it to heuristics
    return (Ether() / IP(src="10.0.1.1", dst="10.0.1.2")
            / UDP(sport=0xC000, dport=ROCEV2_PORT) / BTH(opcode=4, dqpn=0x222) / msg)


def test_abbrev_covers_every_i2o_layer():
    public = {cls for name, cls in inspect.getmembers(layers, inspect.isclass)
              if issubclass(cls, Packet) and cls.__module__ == layers.__name__
              and not name.startswith("_")}
    assert public - NATIVE == set(ABBREV)


def test_reference_capture_agrees_and_is_clean(tmp_path):
    path, packets = reference("i2o")
    assert all(I2OMessage in p for p in packets)
    frames = assert_agrees(tmp_path, packets, ABBREV, SKIP, pcap=path)
    assert all("i2o" in f.protos for f in frames)
    remote = [f for f in frames if "i2o.sge_remote.rkey" in f.fields]
    assert remote and all(int(f.first("i2o.sge_remote.rkey"), 0) == 0x0A11CE01 for f in remote)


def test_reference_info_column_is_the_scapy_summary():
    path, packets = reference("i2o")
    res = subprocess.run([TSHARK, "-r", str(path), "-X", f"lua_script:{LUA_DIR / 'i2o.lua'}",
                          "-T", "fields", "-e", "_ws.col.Info"],
                         capture_output=True, text=True, timeout=120, check=True)
    infos = res.stdout.splitlines()
    assert len(infos) == len(packets)
    for info, pkt in zip(infos, packets, strict=True):
        assert info.startswith(pkt[I2OMessage].mysummary()), (info, pkt.summary())
        body = pkt[I2OMessage].payload
        while body and type(body) in ABBREV:
            if type(body) is not I2OReply:  # the reply's own summary names the status
                assert body.mysummary() in info, (info, body.mysummary())
            body = body.payload


CARRIED = st.tuples(st.one_of(ANY_FRAME, CM_FRAMES), st.sampled_from([_udp, _roce])).map(
    lambda fc: Ether(bytes(fc[1](fc[0]))))


@settings(max_examples=5, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(packets=st.lists(CARRIED, min_size=50, max_size=50))
def test_generated_frames_agree(tmp_path_factory, packets):
    assert all(I2OMessage in p for p in packets)
    assert_agrees(tmp_path_factory.mktemp("i2o"), packets, ABBREV, SKIP)


# ---------------------------------------------------------------- broken frames
def _hdr(function=0x00, flags=0, size=4, version=1, sgl_offset=0, body=b"") -> bytes:
    word1 = function << 24 | 1 << 12 | 8
    return struct.pack("<BBHIII", sgl_offset << 4 | version, flags, size, word1,
                       0x52540001, 0x300) + body


_RW = struct.pack("<HBBIQ", 0, 1, 0, 4096, 0x10000)


def _CM_HEAD(xfunction: int) -> bytes:  # noqa: N802  (reads like the constant it builds)
    return struct.pack("<HH", xfunction, fast.FTSSLAB_ORGANIZATION_ID)
_GOOD_READ = fast.build_block_rw(0x30, [fast.sge_simple(4096, 0x3E000000)], 0x10000)

BROKEN = [
    ("shorter than the header", _hdr()[:10], SEVERITY_ERROR,
     "shorter than the 16-byte header"),
    ("MessageSize beyond the datagram", _hdr(size=8), SEVERITY_ERROR,
     "MessageSize 8 words (32 bytes) exceeds the 16 bytes available"),
    ("MessageSize below the header", _hdr(size=2), SEVERITY_ERROR,
     "smaller than the 4-word header"),
    ("unknown function", _hdr(function=0x60), SEVERITY_WARN, "Unknown function code 0x60"),
    ("bad version", _hdr(version=2), SEVERITY_WARN, "Unsupported I2O version 2"),
    ("reserved MsgFlags", _hdr(flags=0x04), SEVERITY_WARN, "Reserved MsgFlags bits set (0x04)"),
    ("fail flag on a request", _hdr(flags=0x20), SEVERITY_WARN, "Fail flag (0x20) on a request"),
    ("SGL offset outside", _hdr(sgl_offset=15), SEVERITY_WARN,
     "SGL offset 15 words is outside the frame"),
    ("SGL offset into the header", _hdr(function=0x06, size=5, sgl_offset=2, body=bytes(4)),
     SEVERITY_WARN, "SGL offset 2 words is outside the frame"),
    ("BSA SGL offset not 8", b"\x91" + _GOOD_READ[1:],
     SEVERITY_WARN, "does not point at the BSA SGL"),
    ("SGL without LAST", fast.build_block_rw(0x30, [fast.sge_simple(4096, 1, flags=0x50)], 0),
     SEVERITY_WARN, "SGL without a LAST element"),
    ("empty SGL", _hdr(function=0x30, size=8, sgl_offset=8, body=_RW), SEVERITY_WARN,
     "SGL without a LAST element (0 elements"),
    ("64-bit element cut short",
     _hdr(function=0x30, size=12, sgl_offset=8,
          body=_RW + fast.sge_attributes() + fast.sge_simple(1, 2)), SEVERITY_WARN,
     "element 1 needs 12 bytes, 8 left"),
    ("reply flag on a request body", bytes([_GOOD_READ[0], 0x80]) + _GOOD_READ[2:],
     SEVERITY_WARN, "Reply flag on a request body"),
    ("BSA read body too short", _hdr(function=0x30, size=5, sgl_offset=0, body=bytes(4)),
     SEVERITY_ERROR, "I2O BSA Block Read body needs 16 bytes before the SGL, 4 present"),
    ("cache flush body missing", _hdr(function=0x37), SEVERITY_ERROR,
     "I2O BSA Cache Flush body needs 4 bytes, 0 present"),
    ("reply without status", _hdr(function=0xA0, flags=0xC0), SEVERITY_ERROR,
     "reply without its 4-byte status word"),
    ("private frame without word 4", _hdr(function=0xFF, size=4), SEVERITY_ERROR,
     "Private frame without its XFunctionCode/OrganizationID word"),
    ("CM body too short", _hdr(function=0xFF, flags=0xC0, size=6, body=_CM_HEAD(3) + bytes(4)),
     SEVERITY_ERROR, "CM_CONNECT reply body needs 16 bytes, 4 present"),
    ("no such CM message", _hdr(function=0xFF, size=5, body=_CM_HEAD(9)), SEVERITY_WARN,
     "No CM request with XFunctionCode 0x0009"),
    ("reply to a CM_HELLO", _hdr(function=0xFF, flags=0x80, size=5, body=_CM_HEAD(1)),
     SEVERITY_WARN, "No CM reply with XFunctionCode 0x0001"),
    ("IOP count beyond the IOPs",
     _hdr(function=0xFF, size=15, body=_CM_HEAD(2) + bytes(32) + struct.pack("<HH", 2, 0)
          + struct.pack("<HH", 7, 0)),
     SEVERITY_WARN, "IOP count 2, but the frame holds 1 IOPs"),
    ("device count beyond the devices",
     _hdr(function=0xFF, size=19, body=_CM_HEAD(2) + bytes(32) + struct.pack("<HH", 1, 0)
          + struct.pack("<HH", 7, 3) + struct.pack("<HHIQ", 8, 0, 512, 4096)),
     SEVERITY_WARN, "Device count 3, but the frame holds 1 devices"),
    ("BSA error reply without address",
     _hdr(function=0x30, flags=0xC0, size=6, body=struct.pack("<HBBI", 1, 0, 0x04, 512)),
     SEVERITY_ERROR, "BSA error reply needs 12 bytes"),
]


# Expert items of group Malformed also add Wireshark's hidden "_ws.malformed" item, so a
# broken frame legitimately shows it; what must never show is a Lua error.
def _by_message(frame, text):
    return [sev for sev, msg in frame.experts if text in msg]


def test_broken_frames_raise_their_expert_items(tmp_path):
    pcap = write_pcap(tmp_path / "broken.pcapng", [_udp(raw) for _, raw, _, _ in BROKEN])
    frames, stderr = run_tshark(pcap)
    assert stderr == ""
    assert len(frames) == len(BROKEN)
    for (what, _, severity, text), frame in zip(BROKEN, frames, strict=True):
        assert "i2o" in frame.protos, what
        assert "_ws.lua.error" not in frame.fields, (what, frame.first("_ws.lua.error"))
        assert severity in _by_message(frame, text), (what, frame.experts)


def test_unparsed_sgl_element_is_a_note_not_a_warning(tmp_path):
    chain = fast.sge_simple(64, 0x1000, flags=0xB0)  # chain pointer + LAST: not dissected
    raw = fast.build_block_rw(0x30, [chain], 0, byte_count=64)
    frames, stderr = run_tshark(write_pcap(tmp_path / "chain.pcapng", [_udp(raw)]))
    assert stderr == ""
    (frame,) = frames
    assert cleanliness(frame) == []
    assert SEVERITY_NOTE in _by_message(frame, "address mode 0x30 not dissected")
    assert frame.first("i2o.payload") is not None  # the element stays undissected, as in Scapy


def test_roce_heuristic_mirrors_looks_like_i2o(tmp_path):
    good = bytes(I2OMessage(function=0x30) / I2OBlockRead(sgl=[I2OSGESimple(count=512)]))
    bad = [b"\x02" + good[1:],  # version 2
           good[:7] + b"\x60" + good[8:],  # unknown function
           good[:2] + b"\x03\x00" + good[4:],  # MessageSize below the header
           good[:1] + b"\x04" + good[2:],  # reserved MsgFlags bit
           b"\xF1" + good[1:],  # SGL offset past the frame
           good[:-4]]  # MessageSize beyond the payload
    assert layers.looks_like_i2o(good) and not any(layers.looks_like_i2o(b) for b in bad)
    pcap = write_pcap(tmp_path / "heur.pcapng", [_roce(good)] + [_roce(b) for b in bad])
    frames, stderr = run_tshark(pcap)
    assert stderr == ""
    assert "i2o" in frames[0].protos and cleanliness(frames[0]) == []
    for frame in frames[1:]:
        assert "i2o" not in frame.protos
        assert "_ws.lua.error" not in frame.fields


@settings(max_examples=2, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(blobs=st.lists(st.tuples(st.sampled_from([0x30, 0x31, 0x37, 0xA0, 0x60, 0xFF]),
                                st.sampled_from([0x00, 0x80, 0xA0, 0x0C]),
                                st.integers(0, 16), st.integers(0, 15),
                                st.sampled_from([b""] + [_CM_HEAD(x) for x in range(5)]),
                                st.binary(max_size=72)),
                      min_size=60, max_size=60))
def test_fuzzed_frames_never_raise_a_lua_error(tmp_path_factory, blobs):
    raws = [_hdr(function=fn, flags=fl, size=size, sgl_offset=off, body=head + body)
            for fn, fl, size, off, head, body in blobs]
    raws += [r[:n] for r, n in zip(raws[:20], range(0, 20), strict=True)]
    pcap = write_pcap(tmp_path_factory.mktemp("fuzz") / "fuzz.pcapng",
                      [_udp(r) for r in raws] + [_roce(r) for r in raws[:40]])
    frames, stderr = run_tshark(pcap)
    assert stderr == ""
    for frame in frames:
        assert "_ws.lua.error" not in frame.fields, frame.first("_ws.lua.error")
        assert "_ws.lua" not in frame.protos


def test_value_tables_match_scapy(tmp_path):
    plugins = tmp_path / ".local" / "lib" / "wireshark" / "plugins"
    plugins.mkdir(parents=True)
    shutil.copyfile(LUA_DIR / "i2o.lua", plugins / "i2o.lua")
    res = subprocess.run([TSHARK, "-G", "values"], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, HOME=str(tmp_path)))
    assert lua_stderr(res.stderr) == ""
    tables: dict[str, dict[int, str]] = {}
    for row in res.stdout.splitlines():
        parts = row.split("\t")
        if len(parts) == 4 and parts[0] == "V" and parts[1].startswith("i2o."):
            tables.setdefault(parts[1], {})[int(parts[2], 0)] = parts[3]
    assert tables["i2o.function"] == I2O_FUNCTIONS
    assert tables["i2o.reply.req_status"] == I2O_REPLY_STATUS
    assert tables["i2o.cm_connect_reply.status"] == fast.CM_STATUS_NAMES
    assert tables["i2o.cm_disconnect_reply.status"] == fast.CM_STATUS_NAMES


# ---------------------------------------------------------------- the Connection Manager
_ADVERT = {"host": "host-a", "iops": [
    {"iop_id": 1, "devices": [{"tid": 8, "block_size": 512, "capacity": 1 << 33},
                              {"tid": 9, "block_size": 4096, "capacity": 2**64 - 1}]},
    {"iop_id": 2, "devices": []}]}
_HDR = {"initiator_context": 0x52540001, "transaction_context": 0x500, "target_tid": 0,
        "initiator_tid": 1}
CM_CRAFTED = [
    fast.build_cm(fast.CM_HELLO, {"name": "remote-b"}, **_HDR),
    fast.build_cm(fast.CM_ADVERTISE, _ADVERT, **_HDR),
    fast.build_cm(fast.CM_CONNECT, {"iop_id": 1}, **_HDR),
    fast.build_cm(fast.CM_CONNECT, {"status": fast.CM_OK, "conn_id": 7, "message_qpn": 0x222,
                                    "data_qpn": 0x223}, reply=True, **_HDR),
    fast.build_cm(fast.CM_DISCONNECT, {"conn_id": 7}, **_HDR),
    fast.build_cm(fast.CM_DISCONNECT, {"status": fast.CM_UNKNOWN_CONNECTION}, reply=True,
                  **_HDR),
]
# parse_cm key -> the tshark field it must equal (lists: one occurrence per element)
CM_TSHARK = {"name": "i2o.cm_hello.remote", "host": "i2o.cm_advertise.host",
             "iop_id": "i2o.cm_connect.iop_id", "status": "status", "conn_id": "conn_id",
             "message_qpn": "i2o.cm_connect_reply.message_qpn",
             "data_qpn": "i2o.cm_connect_reply.data_qpn"}


def _shown(frame, name: str) -> list[str]:
    if "." not in name:  # the reply's or the request's field of that name
        name = next(k for k in frame.fields if k.startswith("i2o.cm_") and k.endswith(name))
    return [s.show for s in frame.fields[name]]


def test_crafted_cm_frames_agree_with_scapy_and_parse_cm(tmp_path):
    packets = [Ether(bytes(carrier(raw))) for raw in CM_CRAFTED for carrier in (_udp, _roce)]
    assert all(I2OPrivate in p and Raw not in p for p in packets)
    frames = assert_agrees(tmp_path, packets, ABBREV, SKIP)
    for pkt, frame in zip(packets, frames, strict=True):
        cm = fast.parse_cm(bytes(pkt[I2OMessage]))
        assert cm is not None and "i2o" in frame.protos
        assert int(frame.first("i2o.private.xfunction"), 0) == cm["xfunction"]
        for key, name in CM_TSHARK.items():
            if key in cm:
                got = _shown(frame, name)[0]
                assert (got if isinstance(cm[key], str) else int(got, 0)) == cm[key], key
        if "iops" in cm:
            assert [int(v) for v in _shown(frame, "i2o.cm_iop.iop_id")] == [
                i["iop_id"] for i in cm["iops"]]
            assert [int(v) for v in _shown(frame, "i2o.cm_device.capacity")] == [
                d["capacity"] for i in cm["iops"] for d in i["devices"]]


def test_roce_send_only_carries_a_block_write_and_a_cm_connect(tmp_path):
    write = fast.build_block_rw(fast.I2O_BSA_BLOCK_WRITE, [fast.sge_remote(4096, 0x7F00_0000, 7)],
                                0x8000, target_tid=8)
    connect = fast.build_cm(fast.CM_CONNECT, {"iop_id": 1}, **_HDR)
    packets = [Ether(bytes(_roce(raw))) for raw in (write, connect)]
    assert all(p[BTH].opcode == 4 for p in packets)  # RC SEND ONLY
    frames = assert_agrees(tmp_path, packets, ABBREV, SKIP)
    assert all("infiniband" in f.protos and "i2o" in f.protos for f in frames)
    assert frames[0].first("i2o.write.byte_address") is not None
    assert frames[1].first("i2o.cm_connect.iop_id") == "1"
