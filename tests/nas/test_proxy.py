"""When a device answers by proxy and when it hands off (B2.12, B2.14, check 19), and the parser
of the owner's answer it relays."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftsslab.nas.proxy import Plan, ProxyPolicy, Relayed, Upstream, UpstreamError, relayed, request

MIB = 1 << 20


def test_metadata_is_proxied_data_until_the_threshold_then_one_handoff():
    policy = ProxyPolicy(MIB)
    assert policy.plan("HEAD") is Plan.PROXY  # GETATTR: by proxy, never a move (L380)
    assert policy.plan("GET") is Plan.MEASURE and policy.plan("PUT") is Plan.HANDOFF
    assert policy.decide("d2", int(0.9 * MIB)) is Plan.PROXY
    policy.account("d2", int(0.9 * MIB))
    assert policy.decide("d3", int(0.9 * MIB)) is Plan.PROXY  # counted per device
    assert policy.decide("d2", int(0.1 * MIB) - 1) is Plan.PROXY
    assert policy.decide("d2", int(0.1 * MIB) + 1) is Plan.HANDOFF  # crossing 1 MiB
    assert policy.why("d2", 5) == f"proxied {int(0.9 * MIB)} + 5 bytes from d2 >= {MIB}"
    assert ProxyPolicy(MIB).decide("d2", 4 * MIB) is Plan.HANDOFF  # a large READ moves at once


def test_without_a_limit_every_foreign_request_moves():
    assert {ProxyPolicy(None).plan(m) for m in ("GET", "HEAD", "PUT")} == {Plan.HANDOFF}


ANSWER = (b"HTTP/1.1 206 Partial Content\r\nDate: x\r\nServer: s\r\nContent-Type: a/b\r\n"
          b"Content-Length: 5\r\nContent-Range: bytes 0-4/9\r\nConnection: close\r\n\r\nhello")


@given(st.lists(st.integers(0, len(ANSWER)), max_size=6))
def test_an_answer_split_anywhere_relays_the_same(cuts):
    up, body = Upstream(head_only=False), b""
    for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), len(ANSWER)], strict=True):
        body += up.feed(ANSWER[a:b])
    up.eof()
    assert (up.status, body, up.done) == (206, b"hello", True)
    assert up.fields == [("Content-Type", "a/b"), ("Content-Length", "5"),
                         ("Content-Range", "bytes 0-4/9")]  # Date, Server, Connection: ours


def test_answers_that_cannot_be_relayed():
    for bad in (b"SSH-2.0\r\n\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"HTTP/1.1 \xb2 OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: \xb9\r\n\r\n"):
        with pytest.raises(UpstreamError):
            Upstream(head_only=False).feed(bad)
    short = Upstream(head_only=False)
    short.feed(ANSWER[:-2])
    with pytest.raises(UpstreamError, match="3 of 5"):
        short.eof()
    with pytest.raises(UpstreamError, match="no response"):
        Upstream(head_only=True).eof()
    with pytest.raises(UpstreamError, match="too long"):
        Upstream(head_only=False).feed(b"x" * 20000)
    head = Upstream(head_only=True)
    assert head.feed(ANSWER.replace(b"hello", b"")) == b"" and head.done


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_upstream_error(data):
    try:
        Upstream(head_only=False).feed(data)
    except UpstreamError:
        pass


def test_the_fetch_asks_the_same_range_and_closes():
    assert request("GET", "/d2/b", "10.0.0.12", "bytes=0-9", None) == (
        b"GET /d2/b HTTP/1.1\r\nHost: 10.0.0.12\r\nRange: bytes=0-9\r\nConnection: close\r\n\r\n")


def test_the_fetch_names_its_client_for_the_owner():
    """Check 17: the owner learns whose connection a fetch is for (RFC 7239 Forwarded), and a
    fetch that does not name one (a second fetch after a handoff that failed) is not asked."""
    fetch = request("GET", "/d2/b", "10.0.0.12", None, ("10.0.0.1", 52990))
    assert b'\r\nForwarded: for="10.0.0.1:52990"\r\n' in fetch
    assert relayed(fetch) == Relayed("GET", "/d2/b", False, ("10.0.0.1", 52990))
    ranged = request("GET", "/d2/b", "10.0.0.12", "bytes=5-", ("10.0.0.1", 1))
    assert relayed(ranged) == Relayed("GET", "/d2/b", True, ("10.0.0.1", 1))
    assert relayed(request("GET", "/d2/b", "10.0.0.12", None, None)) is None
    assert relayed(fetch[:-2]) is None  # the head is not whole yet


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=40))
def test_reading_a_fetch_never_raises(junk, forwarded):
    for data in (junk, b"GET / HTTP/1.1\r\nForwarded: " + forwarded + b"\r\n\r\n"):
        got = relayed(data)
        assert got is None or 0 <= got.client[1] <= 0xFFFF
