# SPDX-License-Identifier: GPL-2.0-or-later
"""I2O frames (seed 001): header bit packing, BSA bodies and SGLs (incl. the
remote-buffer element), replies and the context swap, both carriers, fast
parser/builders against Scapy, tshark."""

from __future__ import annotations

import struct
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.contrib.roce import BTH
from scapy.fields import ConditionalField, PacketListField
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Padding, Raw
from scapy.utils import PcapNgWriter

from ftsslab.fast import i2o as fast
from ftsslab.layers.i2o import (
    I2O_BSA_FUNCTIONS,
    I2O_FUNCTIONS,
    I2O_UDP_PORT,
    I2OBlockCacheFlush,
    I2OBlockRead,
    I2OBlockReply,
    I2OBlockWrite,
    I2OMessage,
    I2OReply,
    I2OSGEAttributes,
    I2OSGERemote,
    I2OSGESimple,
    I2OSGESimple64,
    looks_like_i2o,
)
from ftsslab.layers.roce import verify_icrc
from ftsslab.reference import i2o as ref

U8, U12 = st.integers(0, 0xFF), st.integers(0, 0xFFF)
U16, U24 = st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFF)
U32, U64 = st.integers(0, 0xFFFFFFFF), st.integers(0, 2**64 - 1)
FUZZ = settings(max_examples=2000, deadline=None)
FUNCTIONS = st.sampled_from(sorted(I2O_FUNCTIONS))
# Private frames (0xFF) have a body layer of their own: tests/layers/test_i2o_cm.py
PUBLIC_FUNCTIONS = st.sampled_from(sorted(set(I2O_FUNCTIONS) - {fast.I2O_PRIVATE}))
REQUEST_FLAGS = st.sampled_from([0x00, 0x01, 0x02, 0x10, 0x40, 0x41])
ERRORS = list(fast.I2O_REPLY_ERRORS)

# Flag bytes that keep an element's kind: simple may carry bc0/bc1/dir/local/eob;
# the remote element may not set "local" (0x08), which would make it 0x3C (INVALID).
SIMPLE_FLAGS = st.sets(st.sampled_from([0x01, 0x02, 0x04, 0x08, 0x40])).map(
    lambda s: fast.SGL_FLAGS_SIMPLE | sum(s))
REMOTE_FLAGS = st.sets(st.sampled_from([0x01, 0x02, 0x40])).map(
    lambda s: fast.SGL_REMOTE | sum(s))


def _header(**kw) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({
        "target_tid": U12, "initiator_tid": U12, "initiator_context": U32,
        "transaction_context": U32, **kw})


@st.composite
def sgls(draw):
    """A valid SGL: optional 64-bit attribute element, LAST set on the last one only."""
    addr64 = draw(st.booleans())
    simple = I2OSGESimple64 if addr64 else I2OSGESimple
    amax = 2**64 - 1 if addr64 else 0xFFFFFFFF
    elements = draw(st.lists(st.one_of(
        st.builds(simple, count=U24, flags=SIMPLE_FLAGS, address=st.integers(0, amax)),
        st.builds(I2OSGERemote, count=U24, flags=REMOTE_FLAGS, virtual_address=U64,
                  rkey=U32),
    ), min_size=1, max_size=5))
    elements[-1].flags = int(elements[-1].flags) | fast.SGL_FLAGS_LAST
    if addr64:
        elements.insert(0, I2OSGEAttributes(page_frame_size=draw(U32)))
    return elements


def block_requests():
    read = st.builds(lambda h, f, tm, fa, lba, sgl: I2OMessage(function=0x30, **h)
                     / I2OBlockRead(control_flags=f, time_multiplier=tm, fetch_ahead=fa,
                                    byte_address=lba, sgl=sgl),
                     _header(), U16, U8, U8, U64, sgls())
    write = st.builds(lambda h, f, tm, r, lba, sgl: I2OMessage(function=0x31, **h)
                      / I2OBlockWrite(control_flags=f, time_multiplier=tm, reserved=r,
                                      byte_address=lba, sgl=sgl),
                      _header(), U16, U8, U8, U64, sgls())
    flush = st.builds(lambda h, f, tm: I2OMessage(function=0x37, **h)
                      / I2OBlockCacheFlush(control_flags=f, time_multiplier=tm),
                      _header(), U16, U8)
    return st.one_of(read, write, flush)


@st.composite
def replies(draw):
    function = draw(PUBLIC_FUNCTIONS)
    status = draw(st.sampled_from(sorted(I2OReply().get_field("req_status").i2s)))
    pkt = (I2OMessage(function=function, msg_flags=draw(st.sampled_from([0x80, 0xC0])),
                      **draw(_header()))
           / I2OReply(detailed_status=draw(U16), reserved=draw(U8), req_status=status))
    if function in I2O_BSA_FUNCTIONS and draw(st.booleans()):
        body = I2OBlockReply(transfer_count=draw(U32))
        if status in ERRORS:
            body.error_address = draw(U64)
        pkt /= body
    return pkt


def plain_requests():
    return st.builds(lambda fn, fl, h, body: I2OMessage(function=fn, msg_flags=fl, **h)
                     / Raw(body),
                     PUBLIC_FUNCTIONS.filter(lambda f: f not in (0x30, 0x31, 0x37)), REQUEST_FLAGS,
                     _header(), st.binary(max_size=64))


ANY_FRAME = st.one_of(block_requests(), replies(), plain_requests())


# ---------------------------------------------------------------- helpers
def _fields(layer) -> dict:
    out = {}
    for f in layer.fields_desc:
        if isinstance(f, ConditionalField) and not f._evalcond(layer):
            continue
        if isinstance(f, PacketListField):  # the SGL, a CM advertisement's IOPs and devices
            out[f.name] = [{"layer": type(e).__name__, **_fields(e)}
                           for e in layer.getfieldval(f.name)]
        else:
            out[f.name] = layer.getfieldval(f.name)
    return out


def assert_fast_matches(pkt) -> None:
    """parse_i2o gives exactly what the Scapy dissection holds."""
    msg = pkt[I2OMessage]
    parsed = fast.parse_i2o(bytes(msg))
    assert parsed is not None
    expected = _fields(msg)
    names = []
    layer = msg.payload
    while layer and not isinstance(layer, (Raw, Padding)):
        names.append(type(layer).__name__)
        expected.update(_fields(layer))
        layer = layer.payload
    expected["layers"] = names
    expected["payload"] = b"" if isinstance(layer, Padding) or not layer else layer.load
    got = dict(parsed, payload=bytes(parsed["payload"]))
    assert got == expected


def _word1(frame: bytes) -> int:
    return struct.unpack_from("<I", frame, 4)[0]


# ---------------------------------------------------------------- header
@given(fn=FUNCTIONS, target=U12, initiator=U12, flags=U8, ictx=U32, tctx=U32)
def test_header_packs_like_struct_i2o_message(fn, target, initiator, flags, ictx, tctx):
    raw = bytes(I2OMessage(function=fn, target_tid=target, initiator_tid=initiator,
                           msg_flags=flags, initiator_context=ictx, transaction_context=tctx))
    # C bitfields on a little-endian u32: target_tid:12, init_tid:12, function:8
    assert raw == struct.pack("<BBHIII", 0x01, flags, 4,
                              fn << 24 | initiator << 12 | target, ictx, tctx)
    back = I2OMessage(raw)
    assert (back.function, back.target_tid, back.initiator_tid) == (fn, target, initiator)
    assert (back.initiator_context, back.transaction_context) == (ictx, tctx)


@given(body=st.binary(max_size=80))
def test_message_size_counts_words_and_pads_the_body(body):
    raw = bytes(I2OMessage(function=0x00) / Raw(body))
    assert len(raw) % 4 == 0 and len(raw) == 16 + len(body) + (-len(body) % 4)
    assert struct.unpack_from("<H", raw, 2)[0] == len(raw) // 4
    assert raw[16:16 + len(body)] == body and not any(raw[16 + len(body):])


def test_sgl_offset_is_filled_in_for_block_read_write_only():
    read = I2OMessage(function=0x30) / I2OBlockRead(sgl=[I2OSGESimple()])
    assert bytes(read)[0] == 0x81  # SGL_OFFSET_8 | I2OVERSION, as Linux's i2o_block
    assert bytes(I2OMessage(function=0x37) / I2OBlockCacheFlush())[0] == 0x01
    assert bytes(I2OMessage(function=0x06, sgl_offset=5) / Raw(bytes(4)))[0] == 0x51


def test_padding_after_message_size_is_not_body():
    raw = bytes(I2OMessage(function=0x00)) + b"\xAA" * 8
    pkt = I2OMessage(raw)
    assert Raw not in pkt and pkt[Padding].load == b"\xAA" * 8


# ---------------------------------------------------------------- round trips
@given(pkt=ANY_FRAME)
def test_every_layer_round_trips(pkt):
    raw = bytes(pkt)
    back = I2OMessage(raw)
    assert bytes(back) == raw
    for cls in (I2OMessage, I2OReply, I2OBlockReply, I2OBlockRead, I2OBlockWrite,
                I2OBlockCacheFlush):
        assert (cls in back) == (cls in pkt)
        if cls in pkt:
            got = _fields(back[cls])
            # fields left None (sizes, offsets, byte counts) are checked where computed
            assert {k: v for k, v in _fields(pkt[cls]).items() if v is not None}.items() \
                <= got.items()


@given(pkt=block_requests().filter(lambda p: I2OBlockCacheFlush not in p))
def test_byte_count_defaults_to_the_sgl_total(pkt):
    body = I2OMessage(bytes(pkt)).payload
    data = [e.count for e in body.sgl if not isinstance(e, I2OSGEAttributes)]
    assert body.byte_count == sum(data)
    assert [type(e) for e in body.sgl] == [type(e) for e in pkt.payload.sgl]


def test_remote_element_layout_and_flag():
    e = I2OSGERemote(count=0x123456, virtual_address=0x1122334455667788, rkey=0xCAFEBABE)
    assert bytes(e) == bytes.fromhex("563412f4" "8877665544332211" "bebafeca")
    assert int(e.flags) & fast.SGL_ADDRESS_MODE_MASK == 0x34
    assert fast.sge_remote(0x123456, 0x1122334455667788, 0xCAFEBABE) == bytes(e)


def test_sgl_attribute_element_matches_linux_0x7c020002():
    assert bytes(I2OSGEAttributes(page_frame_size=4096)) == struct.pack("<II", 0x7C020002, 4096)


def test_sgl_stops_at_last_element():
    sgl = bytes(I2OSGESimple(count=1, address=2)) + bytes(I2OSGESimple(count=3, address=4))
    frame = fast.build_i2o(0x30, struct.pack("<HBBIQ", 0, 1, 0, 4, 0) + sgl, sgl_offset=8)
    pkt = I2OMessage(frame)
    assert len(pkt.sgl) == 1 and pkt[Raw].load == sgl[8:]
    assert_fast_matches(pkt)


# ---------------------------------------------------------------- answers
def _request(**kw):
    base = {"function": 0x30, "target_tid": 8, "initiator_tid": 1,
            "initiator_context": 0x1111, "transaction_context": 0x2222}
    return I2OMessage(**{**base, **kw}) / I2OBlockRead(sgl=[I2OSGESimple(count=512)])


def _reply(**kw):
    base = {"function": 0x30, "target_tid": 8, "initiator_tid": 1, "msg_flags": 0xC0,
            "initiator_context": 0x1111, "transaction_context": 0x2222}
    return I2OMessage(**{**base, **kw}) / I2OReply() / I2OBlockReply(transfer_count=512)


def test_reply_answers_request_with_the_same_contexts():
    req, rep = I2OMessage(bytes(_request())), I2OMessage(bytes(_reply()))
    assert rep.answers(req) and not req.answers(rep)
    assert rep.hashret() == req.hashret()
    udp_req = Ether(bytes(Ether() / IP() / UDP(dport=I2O_UDP_PORT) / _request()))
    udp_rep = Ether(bytes(Ether() / IP() / UDP(sport=I2O_UDP_PORT) / _reply()))
    assert udp_rep[I2OMessage].answers(udp_req[I2OMessage])


@pytest.mark.parametrize("change", [
    {"initiator_context": 0x1112}, {"transaction_context": 0x2223}, {"function": 0x31},
    {"msg_flags": 0x40},
])
def test_reply_does_not_answer_a_different_request(change):
    req, rep = I2OMessage(bytes(_request())), I2OMessage(bytes(_reply(**change)))
    assert not rep.answers(req)


def test_context_swap_restores_what_the_remote_server_sent():
    """Seed 001 Figs. 5/6: saved at step 530, put back at step 650."""
    inbound = bytes(_request())
    to_iop, saved = fast.swap_initiator_context(inbound, 0xFEED0001)
    iop_reply = fast.build_reply(fast.parse_i2o(to_iop), transfer_count=512)
    assert I2OMessage(iop_reply).initiator_context == 0xFEED0001
    assert not I2OMessage(iop_reply).answers(I2OMessage(inbound))
    outgoing, rt_ctx = fast.swap_initiator_context(iop_reply, saved)
    assert rt_ctx == 0xFEED0001 and saved == 0x1111
    assert I2OMessage(outgoing).answers(I2OMessage(inbound))


# ---------------------------------------------------------------- carriers
def test_udp_binding_both_directions():
    for udp in (UDP(sport=5000, dport=I2O_UDP_PORT), UDP(sport=I2O_UDP_PORT, dport=5000)):
        pkt = Ether(bytes(Ether() / IP() / udp / _request()))
        assert I2OBlockRead in pkt and pkt[UDP].len == 8 + 4 * pkt[I2OMessage].msg_size


def test_roce_send_payload_is_dissected_as_i2o():
    frame = Ether() / IP() / UDP(sport=0xC000, dport=4791) / BTH() / _request()
    assert frame[BTH].opcode == 4  # bound as RC SEND_ONLY payload
    pkt = Ether(bytes(frame))
    assert I2OBlockRead in pkt and Raw not in pkt and Padding not in pkt
    assert verify_icrc(bytes(frame))  # the ICRC covers the I2O frame
    assert not verify_icrc(bytes(frame)[:-8] + b"\xff" + bytes(frame)[-7:])


def test_looks_like_i2o():
    assert looks_like_i2o(bytes(_request())) and looks_like_i2o(bytes(_reply()))
    good = bytes(_request())
    assert not looks_like_i2o(good[:-4])  # MessageSize beyond the payload
    assert not looks_like_i2o(b"\x02" + good[1:])  # version 2
    assert not looks_like_i2o(good[:7] + b"\x60" + good[8:])  # function 0x60 unknown
    assert not looks_like_i2o(good[:2] + b"\x03\x00" + good[4:])  # smaller than a header
    assert not looks_like_i2o(b"\xF1" + good[1:])  # SGL offset past the frame
    assert not looks_like_i2o(good[:1] + b"\x04" + good[2:])  # reserved MsgFlags bit


# ---------------------------------------------------------------- fuzz
UDP_HEAD = bytes(Ether() / IP() / UDP(sport=1, dport=I2O_UDP_PORT))
ROCE_HEAD = bytes(Ether() / IP() / UDP(sport=1, dport=4791) / BTH(opcode=4))[:-4]
HEADERS = st.sampled_from([bytes(I2OMessage(function=f, msg_flags=m, msg_size=s))
                           for f in (0x30, 0x31, 0x37, 0xA0) for m in (0x00, 0x80, 0xA0)
                           for s in (4, 8, 12)])


@FUZZ
@given(data=st.binary(max_size=96))
def test_fuzz_message_alone_never_raises(data):
    bytes(I2OMessage(data))
    assert fast.parse_i2o(data) is None or len(data) >= 16


@FUZZ
@given(head=HEADERS, data=st.binary(max_size=80))
def test_fuzz_bodies_never_raise_and_fast_agrees(head, data):
    frame = head + data
    pkt = I2OMessage(frame)
    pkt.summary()
    if fast.parse_i2o(frame) is not None:
        assert_fast_matches(pkt)


@FUZZ
@given(data=st.binary(max_size=96), carrier=st.sampled_from([UDP_HEAD, ROCE_HEAD]))
def test_fuzz_under_carriers_never_raises(data, carrier):
    Ether(carrier + data).summary()


@FUZZ
@given(data=st.binary(max_size=96))
def test_fuzz_fast_parser_and_matcher_never_raise(data):
    fast.parse_i2o(data)
    looks_like_i2o(data)


# ---------------------------------------------------------------- fast == Scapy
@pytest.mark.parametrize("comment,pkt", ref.packets(), ids=[c for c, _ in ref.packets()])
def test_fast_parser_equals_scapy_on_reference(comment, pkt):
    dissected = Ether(bytes(pkt))
    assert_fast_matches(dissected)
    assert looks_like_i2o(bytes(dissected[I2OMessage]))


@given(pkt=ANY_FRAME)
def test_fast_parser_equals_scapy_generated(pkt):
    assert_fast_matches(I2OMessage(bytes(pkt)))


@given(fn=FUNCTIONS, flags=REQUEST_FLAGS, h=_header(), off=st.integers(0, 15),
       body=st.binary(max_size=40))
def test_build_i2o_equals_scapy(fn, flags, h, off, body):
    scapy = I2OMessage(function=fn, msg_flags=flags, sgl_offset=off, **h) / Raw(body)
    assert fast.build_i2o(fn, body, msg_flags=flags, sgl_offset=off, **h) == bytes(scapy)


@given(pkt=block_requests().filter(lambda p: I2OBlockCacheFlush not in p))
def test_build_block_rw_equals_scapy(pkt):
    body = pkt.payload
    sgl = []
    for e in body.sgl:
        if isinstance(e, I2OSGEAttributes):
            sgl.append(fast.sge_attributes(e.page_frame_size))
        elif isinstance(e, I2OSGERemote):
            sgl.append(fast.sge_remote(e.count, e.virtual_address, e.rkey, int(e.flags)))
        else:
            sgl.append(fast.sge_simple(e.count, e.address, int(e.flags),
                                       isinstance(e, I2OSGESimple64)))
    third = body.fetch_ahead if isinstance(body, I2OBlockRead) else body.reserved
    built = fast.build_block_rw(pkt.function, sgl, body.byte_address,
                                control_flags=int(body.control_flags),
                                time_multiplier=body.time_multiplier, fetch_ahead=third,
                                target_tid=pkt.target_tid, initiator_tid=pkt.initiator_tid,
                                initiator_context=pkt.initiator_context,
                                transaction_context=pkt.transaction_context)
    assert built == bytes(pkt)


@given(pkt=replies())
def test_build_reply_equals_scapy(pkt):
    request = {"function": pkt.function, "target_tid": pkt.target_tid,
               "initiator_tid": pkt.initiator_tid, "initiator_context": pkt.initiator_context,
               "transaction_context": pkt.transaction_context}
    pkt[I2OReply].reserved = 0
    block = pkt[I2OBlockReply] if I2OBlockReply in pkt else None
    built = fast.build_reply(
        request, pkt[I2OReply].req_status, pkt[I2OReply].detailed_status,
        transfer_count=block.transfer_count if block else None,
        error_address=block.error_address if block and pkt[I2OReply].req_status in ERRORS else None,
        msg_flags=int(pkt.msg_flags))
    assert built == bytes(pkt)


# ---------------------------------------------------------------- tshark
def _tshark(tmp_path, fields: list[str]) -> list[list[str]]:
    path = tmp_path / "i2o.pcapng"
    with PcapNgWriter(str(path)) as writer:
        for _, pkt in ref.packets():
            writer.write(Ether(bytes(pkt)))
    cmd = ["tshark", "-r", str(path), "-T", "fields", "-E", "occurrence=f"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


@pytest.mark.tshark
def test_tshark_sees_right_lengths_and_nothing_malformed(tmp_path):
    rows = _tshark(tmp_path, ["udp.dstport", "udp.length", "infiniband.bth.opcode",
                              "data.len", "_ws.malformed", "_ws.expert.severity"])
    sizes = [4 * Ether(bytes(p))[I2OMessage].msg_size for _, p in ref.packets()]
    assert len(rows) == len(sizes)
    roce = 0
    for (dport, ulen, opcode, dlen, malformed, _), size in zip(rows, sizes, strict=True):
        assert malformed == ""
        if dport == "4791":
            roce += 1
            # IB SEND Only, and the data it hands on is exactly the I2O frame
            assert opcode == "4" and int(dlen) == size
            assert int(ulen) == 8 + 12 + size + 4  # UDP + BTH + frame + ICRC
        else:
            assert dport == str(I2O_UDP_PORT) and int(ulen) == 8 + size
    assert roce == 6
