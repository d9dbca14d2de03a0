# SPDX-License-Identifier: GPL-2.0-or-later
"""The Connection Manager's private frames (seed 001 L198, D1.5): Scapy against the fast
codec both ways, parse_cm's refusals, request/reply pairing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from ftsslab.fast import i2o as fast
from ftsslab.layers.i2o import (
    I2O_UDP_PORT,
    I2OCMIOP,
    I2OCMAdvertise,
    I2OCMConnect,
    I2OCMConnectReply,
    I2OCMDevice,
    I2OCMDisconnect,
    I2OCMDisconnectReply,
    I2OCMHello,
    I2OMessage,
    I2OPrivate,
)
from ftsslab.reference import i2o as ref
from tests.layers.test_i2o import FUZZ, U16, U32, U64, _header, assert_fast_matches

NAMES = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=32)
STATUS = st.sampled_from(sorted(fast.CM_STATUS_NAMES))
DEVICES = st.fixed_dictionaries({"tid": st.integers(0, 0xFFF), "block_size": U32,
                                 "capacity": U64})
IOPS = st.fixed_dictionaries({"iop_id": U16, "devices": st.lists(DEVICES, max_size=4)})

# (XFunctionCode, reply) -> the build_cm fields and the Scapy body built from them
MESSAGES = {
    (fast.CM_HELLO, False): (st.fixed_dictionaries({"name": NAMES}),
                             lambda f: I2OCMHello(remote=f["name"].encode())),
    (fast.CM_ADVERTISE, False): (
        st.fixed_dictionaries({"host": NAMES, "iops": st.lists(IOPS, max_size=4)}),
        lambda f: I2OCMAdvertise(host=f["host"].encode(), iops=[
            I2OCMIOP(iop_id=i["iop_id"], devices=[I2OCMDevice(**d) for d in i["devices"]])
            for i in f["iops"]])),
    (fast.CM_CONNECT, False): (st.fixed_dictionaries({"iop_id": U16}),
                               lambda f: I2OCMConnect(**f)),
    (fast.CM_CONNECT, True): (
        st.fixed_dictionaries({"status": STATUS, "conn_id": U32, "message_qpn": U32,
                               "data_qpn": U32}),
        lambda f: I2OCMConnectReply(**f)),
    (fast.CM_DISCONNECT, False): (st.fixed_dictionaries({"conn_id": U32}),
                                  lambda f: I2OCMDisconnect(**f)),
    (fast.CM_DISCONNECT, True): (st.fixed_dictionaries({"status": STATUS}),
                                 lambda f: I2OCMDisconnectReply(**f)),
}


@st.composite
def cm_messages(draw):
    """(Scapy frame, build_cm arguments) of one random CM message."""
    xfunction, reply = draw(st.sampled_from(sorted(MESSAGES)))
    fields_st, body = MESSAGES[xfunction, reply]
    fields = draw(fields_st)
    header = draw(_header())
    pkt = (I2OMessage(function=fast.I2O_PRIVATE,
                      msg_flags=fast.CM_MSG_FLAGS_REPLY if reply else 0, **header)
           / I2OPrivate(xfunction=xfunction) / body(fields))
    return pkt, {"xfunction": xfunction, "fields": fields, "reply": reply, **header}


CM_FRAMES = cm_messages().map(lambda m: m[0])


def _build(args: dict) -> bytes:
    args = dict(args)
    return fast.build_cm(args.pop("xfunction"), args.pop("fields"), **args)


# ---------------------------------------------------------------- both codecs agree
@given(msg=cm_messages())
def test_scapy_build_equals_fast_build(msg):
    pkt, args = msg
    assert bytes(pkt) == _build(args)


@given(msg=cm_messages())
def test_fast_parse_of_scapy_build(msg):
    pkt, args = msg
    raw = bytes(pkt)
    fields = args.pop("fields")
    assert fast.parse_cm(raw) == {**fields, **args}
    assert_fast_matches(I2OMessage(raw))  # parse_i2o still reads it, field for field


@given(msg=cm_messages())
def test_scapy_dissects_fast_build(msg):
    pkt, args = msg
    back = I2OMessage(_build(args))
    assert Raw not in back and bytes(back) == bytes(pkt)
    assert back[I2OPrivate].organization_id == fast.FTSSLAB_ORGANIZATION_ID
    assert type(back[I2OPrivate].payload) is type(pkt[I2OPrivate].payload)
    assert back.mysummary().startswith("I2O Private")


def test_advertise_counts_are_filled_in():
    raw = bytes(I2OCMAdvertise(iops=[I2OCMIOP(devices=[I2OCMDevice(), I2OCMDevice()]),
                                     I2OCMIOP()]))
    assert struct.unpack_from("<H", raw, 32)[0] == 2
    assert struct.unpack_from("<HH", raw, 36) == (0, 2)
    assert struct.unpack_from("<HH", raw, 36 + 4 + 2 * 16) == (0, 0)


def test_summaries():
    connect = fast.build_cm(fast.CM_CONNECT, {"iop_id": 2})
    reply = fast.build_cm(fast.CM_CONNECT, {"status": fast.CM_OK, "conn_id": 7,
                                            "message_qpn": 0x222, "data_qpn": 0x223},
                          reply=True)
    assert I2OMessage(connect)[I2OCMConnect].mysummary() == "CM_CONNECT iop 2"
    assert I2OMessage(reply)[I2OCMConnectReply].mysummary() == "CM_CONNECT reply OK conn 7"
    assert I2OMessage(reply)[I2OPrivate].mysummary() == "CM_CONNECT"
    hello = I2OMessage(fast.build_cm(fast.CM_HELLO, {"name": "remote-1"}))
    assert hello[I2OCMHello].mysummary() == "CM_HELLO from remote-1"


def test_cm_over_udp():
    frame = Ether() / IP() / UDP(sport=I2O_UDP_PORT, dport=I2O_UDP_PORT) / Raw(
        fast.build_cm(fast.CM_DISCONNECT, {"conn_id": 9}))
    assert Ether(bytes(frame))[I2OCMDisconnect].conn_id == 9


def test_build_cm_refuses_what_it_cannot_encode():
    with pytest.raises(ValueError):
        fast.build_cm(fast.CM_HELLO, {"name": "x" * 33})
    with pytest.raises(ValueError):
        fast.build_cm(fast.CM_HELLO, {"name": "x"}, reply=True)
    with pytest.raises(UnicodeEncodeError):
        fast.build_cm(fast.CM_HELLO, {"name": "caf\u00e9"})


# ---------------------------------------------------------------- parse_cm refuses
_CONNECT = fast.build_cm(fast.CM_CONNECT, {"iop_id": 2}, initiator_context=5)
_ADVERT = fast.build_cm(fast.CM_ADVERTISE, {"host": "h", "iops": [
    {"iop_id": 1, "devices": [{"tid": 8, "block_size": 512, "capacity": 1 << 30}]}]})


def _with_size(frame: bytes, body: bytes) -> bytes:
    """``frame``'s header (MessageSize fixed up) followed by ``body``."""
    return frame[:2] + struct.pack("<H", 4 + len(body) // 4) + frame[4:16] + body


NOT_CM = [
    ("other organization", _CONNECT[:18] + b"\x1b\x00" + _CONNECT[20:]),
    ("unknown XFunctionCode", _CONNECT[:16] + b"\x09\x00" + _CONNECT[18:]),
    ("HELLO with the reply flag",
     fast.build_cm(fast.CM_HELLO, {"name": "a"})[:1] + b"\xc0"
     + fast.build_cm(fast.CM_HELLO, {"name": "a"})[2:]),
    ("failure reply", _CONNECT[:1] + b"\xa0" + _CONNECT[2:]),
    ("version 2", b"\x02" + _CONNECT[1:]),
    ("body shorter than CONNECT", _with_size(_CONNECT, _CONNECT[16:20])),
    ("no private word", _with_size(_CONNECT, b"")),
    ("bytes left after the body", _with_size(_CONNECT, _CONNECT[16:] + bytes(4))),
    ("IOP count beyond the IOPs", _ADVERT[:52] + b"\x02" + _ADVERT[53:]),
    ("device count beyond the devices", _ADVERT[:58] + b"\x02" + _ADVERT[59:]),
    ("non-ASCII host", _ADVERT[:20] + b"\xff" + _ADVERT[21:]),
    ("MessageSize beyond the bytes", _CONNECT[:-4]),
    ("not private", fast.build_i2o(fast.I2O_BSA_BLOCK_READ, _CONNECT[16:])),
]


@pytest.mark.parametrize("what,raw", NOT_CM, ids=[w for w, _ in NOT_CM])
def test_parse_cm_refuses(what, raw):
    assert fast.parse_cm(raw) is None
    assert fast.parse_cm(memoryview(raw)) is None


def test_parse_cm_refuses_every_reference_frame():
    for _, pkt in ref.packets():
        if I2OPrivate not in Ether(bytes(pkt)):
            assert fast.parse_cm(bytes(pkt[I2OMessage])) is None


def test_parse_cm_takes_a_memoryview_and_padding():
    assert fast.parse_cm(memoryview(_CONNECT + bytes(8)))["iop_id"] == 2


@FUZZ
@given(data=st.binary(max_size=120))
def test_fuzz_parse_cm_never_raises(data):
    assert fast.parse_cm(data) is None or data[3] >= 0  # any result but an exception


PRIVATE_HEADS = st.sampled_from([
    _CONNECT[:16] + struct.pack("<HH", xfn, org)
    for xfn in (*fast.CM_FUNCTIONS, 9) for org in (fast.FTSSLAB_ORGANIZATION_ID, 0x1B)])


@FUZZ
@given(head=PRIVATE_HEADS, flags=st.sampled_from([0x00, 0x80, 0xC0, 0xA0]),
       body=st.binary(max_size=100))
def test_fuzz_private_bodies_agree(head, flags, body):
    frame = _with_size(head[:1] + bytes([flags]) + head[2:], head[16:] + body)
    frame += bytes(-len(frame) % 4)
    frame = frame[:2] + struct.pack("<H", len(frame) // 4) + frame[4:]
    pkt = I2OMessage(frame)
    pkt.summary()
    assert_fast_matches(pkt)
    parsed = fast.parse_cm(frame)
    if parsed is not None:  # what it read builds a frame it reads the same (reserved: 0)
        fields = dict(parsed)
        args = {k: fields.pop(k) for k in ("xfunction", "reply", "initiator_context",
                                           "transaction_context", "target_tid",
                                           "initiator_tid")}
        assert fast.parse_cm(fast.build_cm(args.pop("xfunction"), fields, **args)) == parsed


# ---------------------------------------------------------------- answers
def _pair(xfunction, request, reply, **reply_header):
    header = {"initiator_context": 0x1111, "transaction_context": 0x2222}
    req = I2OMessage(fast.build_cm(xfunction, request, **header))
    rep = I2OMessage(fast.build_cm(xfunction, reply, reply=True, **{**header, **reply_header}))
    return req, rep


def test_reply_answers_its_request():
    for xfn, request, reply in [
            (fast.CM_CONNECT, {"iop_id": 2},
             {"status": 0, "conn_id": 7, "message_qpn": 1, "data_qpn": 2}),
            (fast.CM_DISCONNECT, {"conn_id": 7}, {"status": fast.CM_UNKNOWN_CONNECTION})]:
        req, rep = _pair(xfn, request, reply)
        assert rep.answers(req) and not req.answers(rep)
        assert rep.hashret() == req.hashret()


@pytest.mark.parametrize("change", [{"initiator_context": 1}, {"transaction_context": 1}])
def test_reply_with_other_contexts_does_not_answer(change):
    req, rep = _pair(fast.CM_CONNECT, {"iop_id": 2},
                     {"status": 0, "conn_id": 7, "message_qpn": 1, "data_qpn": 2}, **change)
    assert not rep.answers(req)


def test_reply_to_another_xfunction_does_not_answer():
    req, _ = _pair(fast.CM_CONNECT, {"iop_id": 2}, {"status": 0, "conn_id": 0,
                                                    "message_qpn": 0, "data_qpn": 0})
    _, rep = _pair(fast.CM_DISCONNECT, {"conn_id": 0}, {"status": 0})
    assert not rep.answers(req) and rep.hashret() != req.hashret()
