"""blockproto: records survive encode/decode, any split of the stream gives the same records,
arbitrary bytes never raise, and a length beyond MAX_LENGTH is refused at its header."""

from __future__ import annotations

import errno

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ftsslab.i2o import blockproto as bp
from ftsslab.i2o.blockproto import (
    MAX_LENGTH,
    REPLY_HEADER,
    REPLY_MAGIC,
    REQUEST_HEADER,
    REQUEST_MAGIC,
    Decoder,
    Malformed,
    Op,
    Reply,
    Request,
)

u64 = st.integers(0, 2**64 - 1)
u32 = st.integers(0, 2**32 - 1)
small = st.binary(max_size=300)

requests = st.one_of(
    st.builds(Request.info, u64),
    st.builds(Request.flush, u64),
    st.builds(Request.read, u64, u64, st.integers(0, MAX_LENGTH)),
    st.builds(Request.write, u64, u64, small),
)
replies = st.one_of(
    st.builds(Reply.info, u64, u64, u32),
    st.builds(Reply, st.just(Op.READ), u64, st.just(0), small),
    st.builds(Reply, st.sampled_from(Op), u64, st.integers(1, 2**32 - 1)),
    st.builds(Reply, st.sampled_from([Op.WRITE, Op.FLUSH]), u64),
)
records = st.lists(st.one_of(requests, replies), max_size=8)


def test_header_layout():
    assert REQUEST_HEADER.size == 28 and REPLY_HEADER.size == 24
    assert REQUEST_MAGIC.to_bytes(4, "big") == b"BPRQ"
    assert REPLY_MAGIC.to_bytes(4, "big") == b"BPRP"
    wire = Request.write(7, 512, b"ab").encode()
    assert wire == b"BPRQ\0\x03\0\0" + (7).to_bytes(8, "big") + (512).to_bytes(8, "big") + (
        b"\0\0\0\x02ab"
    )
    wire = Reply.info(9, 16 << 20, 512).encode()
    assert wire[:4] == b"BPRP" and wire[16:24] == b"\0\0\0\0\0\0\0\x0c"
    assert wire[24:] == (16 << 20).to_bytes(8, "big") + (512).to_bytes(4, "big")


@given(records)
def test_round_trip(recs):
    dec = Decoder()
    assert dec.feed(b"".join(bp.encode(r) for r in recs)) == recs
    assert dec.pending == 0 and dec.close() is None


@given(records, st.data())
def test_any_split_gives_the_same_records(recs, data):
    wire = b"".join(r.encode() for r in recs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=10)))
    dec, out, prev = Decoder(), [], 0
    for cut in [*cuts, len(wire)]:
        out += dec.feed(wire[prev:cut])
        prev = cut
    assert out == recs


@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=5))
def test_arbitrary_bytes_never_raise(blob, cuts):
    for expect in (None, Request, Reply):
        dec, out, prev = Decoder(expect), [], 0
        for cut in [*sorted(cuts), len(blob)]:
            out += dec.feed(blob[prev:cut])
            prev = max(prev, cut)
        closed = dec.close()
        bad = [r for r in out if isinstance(r, Malformed)]
        assert len(bad) <= 1 and (not bad or out[-1] is bad[0])
        assert not (bad and closed)
        assert dec.feed(b"more") == [] if (bad or closed) else True


@given(records, st.binary(min_size=1, max_size=50))
def test_garbage_after_records_is_caught(recs, junk):
    wire = b"".join(r.encode() for r in recs)
    out = Decoder().feed(wire + b"\xff" + junk)
    assert out[:-1] == recs
    assert isinstance(out[-1], Malformed) and out[-1].offset == len(wire)


def test_oversize_length_is_refused_at_the_header():
    header = REQUEST_HEADER.pack(REQUEST_MAGIC, Op.WRITE, 0, 1, 0, MAX_LENGTH + 1)
    dec = Decoder()
    (bad,) = dec.feed(header)
    assert isinstance(bad, Malformed) and "length" in bad.reason and bad.offset == 0
    assert dec.pending == 0 and dec.feed(b"\0" * 4096) == []
    reply = REPLY_HEADER.pack(REPLY_MAGIC, Op.READ, 0, 1, 0, 2**32 - 1)
    (bad,) = Decoder().feed(reply)
    assert isinstance(bad, Malformed)
    with pytest.raises(ValueError):
        Request.read(1, 0, MAX_LENGTH + 1).encode()
    with pytest.raises(ValueError):
        Reply(Op.READ, 1, 0, b"\0" * (MAX_LENGTH + 1)).encode()


def test_the_largest_request_is_accepted():
    big = Request.write(3, 4096, bytes(MAX_LENGTH))
    dec = Decoder(Request)
    wire = big.encode()
    assert dec.feed(wire[:1000]) == [] and dec.pending == 1000
    assert dec.feed(wire[1000:]) == [big]


@pytest.mark.parametrize(
    "header",
    [
        REQUEST_HEADER.pack(REQUEST_MAGIC, 0, 0, 1, 0, 0),  # unknown op
        REQUEST_HEADER.pack(REQUEST_MAGIC, Op.READ, 1, 1, 0, 0),  # reserved flags
        REQUEST_HEADER.pack(REQUEST_MAGIC, Op.FLUSH, 0, 1, 0, 8),  # FLUSH with a length
        REPLY_HEADER.pack(REPLY_MAGIC, Op.READ, 0, 1, errno.EIO, 4),  # error with payload
        REPLY_HEADER.pack(REPLY_MAGIC, Op.INFO, 0, 1, 0, 4),  # short INFO payload
        REPLY_HEADER.pack(REPLY_MAGIC, Op.WRITE, 0, 1, 0, 4),  # WRITE reply with payload
    ],
)
def test_bad_headers_are_malformed(header):
    (bad,) = Decoder().feed(header + bytes(64))
    assert isinstance(bad, Malformed)


def test_expect_refuses_the_other_kind():
    (bad,) = Decoder(Request).feed(Reply.info(1, 0, 512).encode())
    assert isinstance(bad, Malformed)
    (bad,) = Decoder(Reply).feed(Request.info(1).encode())
    assert isinstance(bad, Malformed)


def test_truncated_stream_is_malformed_at_close():
    dec = Decoder()
    assert dec.feed(Request.write(1, 0, b"abcd").encode()[:-1]) == []
    assert isinstance(dec.close(), Malformed)


def test_errors_carry_the_errno_and_no_data():
    req = Request.read(5, 0, 4096)
    for code in (errno.EIO, errno.EINVAL, errno.ENOSPC):
        (rep,) = Decoder(Reply).feed(Reply.error(req, code).encode())
        assert rep == Reply(Op.READ, 5, code) and not rep.ok
