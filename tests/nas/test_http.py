# SPDX-License-Identifier: GPL-2.0-or-later
"""The NAS device's HTTP/1.1 core: exact responses, pipelining, uploads, handoff, redirect."""

from __future__ import annotations

import http.client
import shutil
import socket
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftsslab.nas.http import (
    CHUNK,
    MAX_BUFFER,
    AbortUpload,
    Close,
    CommitUpload,
    Conn,
    HttpServer,
    IllegalEvent,
    NotHere,
    RequestDone,
    ResumeError,
    SendBytes,
    SendFile,
    WriteUpload,
    peek_request,
)
from ftsslab.nas.volume import MemoryCatalog, RootDirectory, Volume

NOW = 1_700_000_000.0
DATE = "Date: Tue, 14 Nov 2023 22:13:20 GMT\r\n"
MTIME = 1_600_000_000 * 10**9
FILE = b"0123456789"
FILE_HEAD = ("Content-Type: application/octet-stream\r\nContent-Length: {n}\r\n{range}"
             "Last-Modified: Sun, 13 Sep 2020 12:26:40 GMT\r\n"
             'ETag: "84d89877f0d4041e"\r\nAccept-Ranges: bytes\r\n')
ACTION_TYPES = (SendBytes, SendFile, WriteUpload, CommitUpload, AbortUpload, Close, RequestDone,
                NotHere)


def catalog(**extra: bytes) -> MemoryCatalog:
    return MemoryCatalog({"/f": FILE, **{f"/{k}": v for k, v in extra.items()}}, MTIME)


def ok(status: str, n: int, rng: str = "", conn: str = "") -> bytes:
    head = FILE_HEAD.format(n=n, range=f"Content-Range: bytes {rng}\r\n" if rng else "")
    return f"HTTP/1.1 {status}\r\n{DATE}Server: ftsslab-nas\r\n{head}{conn}\r\n".encode()


def error(status: str, body: bool = True, extra: str = "", conn: str = "") -> bytes:
    text = f"{status}\n"
    return (f"HTTP/1.1 {status}\r\n{DATE}Server: ftsslab-nas\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(text)}\r\n"
            f"{extra}{conn}\r\n{text if body else ''}").encode()


def get(path: str = "/f", *headers: str, method: str = "GET", version: str = "1.1") -> bytes:
    return (f"{method} {path} HTTP/{version}\r\nHost: nas\r\n"
            + "".join(h + "\r\n" for h in headers) + "\r\n").encode()


@dataclass
class Driver:
    """Carries out a core's actions on a MemoryCatalog, as a device would, all writes whole."""

    store: MemoryCatalog
    out: bytearray = field(default_factory=bytearray)
    log: list = field(default_factory=list)
    uploads: dict = field(default_factory=dict)
    closed: bool = False

    def run(self, server: HttpServer, actions: list) -> None:
        queue = deque(actions)
        while queue:
            action = queue.popleft()
            assert isinstance(action, ACTION_TYPES)
            assert not self.closed, f"{action} after Close"
            self.log.append(action)
            if isinstance(action, SendBytes):
                self.out += action.data
            elif isinstance(action, SendFile):
                data = self.store.read(action.path, action.offset, action.length)
                assert len(data) == action.length and 0 < action.length <= CHUNK
                self.out += data
                queue.extend(server.sent(action.length, NOW))
            elif isinstance(action, WriteUpload):
                if action.path not in self.uploads:
                    self.uploads[action.path] = self.store.open_upload(action.path)
                self.uploads[action.path].write(action.offset, action.data)
            elif isinstance(action, CommitUpload):
                upload = self.uploads.pop(action.path, None) or self.store.open_upload(
                    action.path)
                upload.commit()
                queue.extend(server.committed(True, NOW))
            elif isinstance(action, AbortUpload):  # none if resumed mid-body and idle since
                if upload := self.uploads.pop(action.path, None):
                    upload.abort()
            elif isinstance(action, Close):
                self.closed = True

    def feed(self, server: HttpServer, *chunks: bytes) -> HttpServer:
        for chunk in chunks:
            self.run(server, server.receive(chunk, NOW))
        return server

    def of(self, kind: type) -> list:
        return [a for a in self.log if isinstance(a, kind)]


def serve(*chunks: bytes, store: MemoryCatalog | None = None, **kwargs) -> Driver:
    driver = Driver(store or catalog())
    driver.feed(HttpServer(driver.store, **kwargs), *chunks)
    return driver


# ------------------------------------------------------------------- exact responses


@pytest.mark.parametrize(("rng", "status", "content_range", "body"), [
    ("bytes=2-5", "206 Partial Content", "2-5/10", b"2345"),
    ("bytes=7-", "206 Partial Content", "7-9/10", b"789"),
    ("bytes=-3", "206 Partial Content", "7-9/10", b"789"),
    ("bytes=-30", "206 Partial Content", "0-9/10", FILE),
    ("bytes=8-100", "206 Partial Content", "8-9/10", b"89"),
    ("bytes = 1 - 1", "206 Partial Content", "1-1/10", b"1"),
    ("bytes=0-1,4-5", "200 OK", "", FILE),  # several ranges: the whole file (documented)
    ("bytes=5-2", "200 OK", "", FILE),  # invalid: ignored
    ("items=0-1", "200 OK", "", FILE),
    ("bytes=x-1", "200 OK", "", FILE),
    ("bytes=3", "200 OK", "", FILE),
    ("bytes=0-" + "9" * 40, "206 Partial Content", "0-9/10", FILE),
])
def test_get_range_exact(rng, status, content_range, body):
    driver = serve(get("/f", f"Range: {rng}"))
    assert bytes(driver.out) == ok(status, len(body), content_range) + body
    assert driver.of(RequestDone) == [RequestDone("GET", "/f", int(status[:3]), len(body))]
    assert not driver.closed


@pytest.mark.parametrize("rng", ["bytes=10-", "bytes=10-20", "bytes=-0", "bytes=" + "9" * 30 + "-"])
def test_unsatisfiable_range_is_416(rng):
    driver = serve(get("/f", f"Range: {rng}"))
    assert bytes(driver.out) == error("416 Range Not Satisfiable",
                                      extra="Content-Range: bytes */10\r\nAccept-Ranges: bytes\r\n")
    assert not driver.closed


def test_empty_file():
    driver = serve(get("/e"), get("/e", "Range: bytes=0-"), store=catalog(e=b""))
    assert driver.out.startswith(ok("200 OK", 0).replace(b"84d89877f0d4041e",
                                                         b"e3b0c44298fc1c14"))
    assert b"416 Range Not Satisfiable" in driver.out and not driver.of(SendFile)


def test_head_exact():
    driver = serve(get("/f", method="HEAD"), get("/f", "Range: bytes=1-2", method="HEAD"),
                   get("/nope", method="HEAD"))
    assert bytes(driver.out) == ok("200 OK", 10) + ok("206 Partial Content", 2, "1-2/10") + \
        error("404 Not Found", body=False)
    assert [d.nbytes for d in driver.of(RequestDone)] == [0, 0, 0]


def test_404_exact():
    driver = serve(get("/nope"))
    assert bytes(driver.out) == error("404 Not Found")
    assert driver.of(RequestDone) == [RequestDone("GET", "/nope", 404, 0)]


def test_pipelined_keep_alive_three_requests():
    """Three requests in one segment: three responses, in order, on one open connection."""
    driver = serve(get("/f", "Range: bytes=0-2") + get("/nope") + get("/f"))
    assert bytes(driver.out) == ok("206 Partial Content", 3, "0-2/10") + b"012" + \
        error("404 Not Found") + ok("200 OK", 10) + FILE
    assert [(d.path, d.status) for d in driver.of(RequestDone)] == [("/f", 206), ("/nope", 404),
                                                                     ("/f", 200)]
    assert not driver.closed


def test_pipelined_in_one_byte_chunks():
    data = get("/f", "Range: bytes=0-2") + get("/nope") + get("/f")
    driver = serve(*(data[i:i + 1] for i in range(len(data))))
    assert bytes(driver.out) == bytes(serve(data).out)


@pytest.mark.parametrize(("request_", "conn", "closed"), [
    (get("/f", "Connection: close"), "Connection: close\r\n", True),
    (get("/f", "Connection: Keep-Alive, CLOSE"), "Connection: close\r\n", True),
    (get("/f", version="1.0"), "Connection: close\r\n", True),
    (get("/f", "Connection: keep-alive", version="1.0"), "Connection: keep-alive\r\n", False),
    (b"GET /f HTTP/1.0\r\n\r\n", "Connection: close\r\n", True),  # no Host needed in 1.0
])
def test_keep_alive_rules(request_, conn, closed):
    driver = serve(request_ + get("/nope"))
    first = ok("200 OK", 10, conn=conn) + FILE
    assert driver.out.startswith(first)
    assert driver.closed == closed
    assert (len(driver.out) == len(first)) == closed  # nothing answered after a close


def test_if_range():
    fresh = serve(get("/f", "Range: bytes=0-0", 'If-Range: "84d89877f0d4041e"'))
    dated = serve(get("/f", "Range: bytes=0-0", "If-Range: Sun, 13 Sep 2020 12:26:40 GMT"))
    stale = serve(get("/f", "Range: bytes=0-0", 'If-Range: "other"'))
    assert fresh.out.endswith(b"\r\n\r\n0") and dated.out.endswith(b"\r\n\r\n0")
    assert stale.out == ok("200 OK", 10) + FILE


def test_absolute_form_and_leading_empty_lines():
    driver = serve(b"\r\n\r\n" + get("http://nas/f") + b"\n" + get("HTTP://nas"))
    assert driver.out.startswith(ok("200 OK", 10) + FILE)
    assert [d.status for d in driver.of(RequestDone)] == [200, 404]


def test_bare_lf_lines():
    driver = serve(b"GET /f HTTP/1.1\nHost: nas\n\n")
    assert bytes(driver.out) == ok("200 OK", 10) + FILE


@pytest.mark.parametrize(("method", "status", "extra"), [
    ("POST", "405 Method Not Allowed", "Allow: GET, HEAD, PUT\r\n"),
    ("DELETE", "405 Method Not Allowed", "Allow: GET, HEAD, PUT\r\n"),
    ("BREW", "501 Not Implemented", ""),
])
def test_other_methods(method, status, extra):
    driver = serve(get("/f", method=method) + get("/f", method="HEAD"))
    assert driver.out.startswith(error(status, extra=extra))
    assert not driver.closed and len(driver.of(RequestDone)) == 2


@pytest.mark.parametrize(("data", "status"), [
    (b"GET /f\r\n\r\n", "400 Bad Request"),
    (b"GET  /f HTTP/1.1\r\nHost: x\r\n\r\n", "400 Bad Request"),
    (b"GET /f HTTP/1.1\r\n\r\n", "400 Bad Request"),  # HTTP/1.1 without Host
    (b"GET /f HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "400 Bad Request"),
    (b"GET /f HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n", "400 Bad Request"),
    (b"GET /f HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\n", "400 Bad Request"),
    (b"GET /f HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", "400 Bad Request"),
    (b"GET /f HTTP/1.1\r\nHost: a\r\nContent-Length: " + b"9" * 30 + b"\r\n\r\n",
     "400 Bad Request"),
    (b"GET /f HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", "400 Bad Request"),
    (b"GET /f HTTP/1.1\r\nHost : a\r\n\r\n", "400 Bad Request"),
    (b"GET /f HTTP/1.1\r\nHost: a\rb\r\n\r\n", "400 Bad Request"),
    (b"GET /f HTTP/1.1\r\nHost: a\x00\r\n\r\n", "400 Bad Request"),
    (b"GET /f HTTP/1.x\r\nHost: a\r\n\r\n", "400 Bad Request"),
    (b"G\xc3T /f HTTP/1.1\r\nHost: a\r\n\r\n", "400 Bad Request"),
    (b"GET /\xc3 HTTP/1.1\r\nHost: a\r\n\r\n", "400 Bad Request"),
    (b"GET /f HTTP/2.0\r\nHost: a\r\n\r\n", "505 HTTP Version Not Supported"),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n", "414 URI Too Long"),
    (b"GET /" + b"a" * 9000, "414 URI Too Long"),  # known before the line ends
    (b"GET / HTTP/1.1\r\nX: " + b"a" * 9000, "431 Request Header Fields Too Large"),
    (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", "431 Request Header Fields Too Large"),
    (b"GET / HTTP/1.1\r\n" + (b"X: " + b"y" * 8000 + b"\r\n") * 9,
     "431 Request Header Fields Too Large"),
    (b"PUT /f HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
     "411 Length Required"),
    (b"PUT /f HTTP/1.1\r\nHost: a\r\nExpect: magic\r\nContent-Length: 1\r\n\r\nx",
     "417 Expectation Failed"),
])
def test_bad_input_is_answered_then_closed(data, status):
    driver = serve(data + get("/f"))
    assert bytes(driver.out) == error(status, conn="Connection: close\r\n")
    assert driver.closed and driver.of(RequestDone)[0].status == int(status[:3])


def test_limits_are_inclusive():
    """Exactly 100 headers and a request line of exactly 8 KiB are fine."""
    line = b"GET /" + b"a" * (8192 - len(b"GET / HTTP/1.1\r\n")) + b" HTTP/1.1\r\n"
    assert len(line) == 8192
    driver = serve(line + b"Host: a\r\n" + b"X: y\r\n" * 99 + b"\r\n")
    assert driver.of(RequestDone)[0].status == 404 and not driver.closed


def test_bad_path_is_400_and_keeps_the_connection():
    driver = serve(get("/../f") + get("/%zz") + get("/f"))
    assert [d.status for d in driver.of(RequestDone)] == [400, 400, 200]


def test_client_eof():
    assert serve(b"").closed and serve(b"").log == [Close()]
    partial = serve(b"GET /f HTTP/1.1\r\nHo", b"")
    assert partial.closed and partial.out == b""
    complete = serve(get("/f") + get("/f", "Range: bytes=0-0"), b"")
    assert complete.out.endswith(b"\r\n\r\n0") and complete.closed
    assert [d.status for d in complete.of(RequestDone)] == [200, 206]


def test_data_after_close_is_ignored():
    server = HttpServer(catalog())
    driver = Driver(server.catalog)
    driver.feed(server, get("/f", "Connection: close"))
    assert server.state is Conn.CLOSED and server.receive(get("/f"), NOW) == []
    with pytest.raises(IllegalEvent):
        server.export()


# ------------------------------------------------------------------------------- uploads


def put(path: str, body: bytes, *headers: str) -> bytes:
    return get(path, f"Content-Length: {len(body)}", *headers, method="PUT") + body


def test_put_in_many_chunks():
    body = bytes(range(256)) * 40
    data = put("/new", body) + put("/new", b"second") + get("/new")
    store = catalog()
    driver = serve(*(data[i:i + 97] for i in range(0, len(data), 97)), store=store)
    writes = [w for w in driver.of(WriteUpload) if w.path == "/new"]
    assert len(writes) > 50
    first = writes[:-1] if writes[-1].data == b"second" else writes
    assert [w.offset for w in first] == [sum(len(x.data) for x in first[:i])
                                         for i in range(len(first))]
    assert b"".join(w.data for w in first) == body
    created = f"HTTP/1.1 201 Created\r\n{DATE}Server: ftsslab-nas\r\nContent-Length: 0\r\n\r\n"
    replaced = f"HTTP/1.1 204 No Content\r\n{DATE}Server: ftsslab-nas\r\n\r\n"
    assert driver.out.startswith((created + replaced).encode())
    assert driver.out.endswith(b"second") and store.get("/new") == b"second"
    assert [(d.method, d.status, d.nbytes) for d in driver.of(RequestDone)] == [
        ("PUT", 201, len(body)), ("PUT", 204, 6), ("GET", 200, 6)]


def test_pipelined_get_sees_the_committed_put():
    """PUT and GET of the same file in one segment: the GET waits for the commit."""
    store = catalog()
    server = HttpServer(store)
    actions = server.receive(put("/new", b"abc") + get("/new"), NOW)
    assert actions == [WriteUpload("/new", 0, b"abc"), CommitUpload("/new")]
    assert server.state is Conn.COMMITTING
    with pytest.raises(IllegalEvent):
        server.export()  # carry out the commit first
    driver = Driver(store)
    driver.run(server, actions)
    assert driver.out.endswith(b"\r\n\r\nabc")
    assert [d.status for d in driver.of(RequestDone)] == [201, 200]


def test_failed_commit_is_500():
    server = HttpServer(catalog())
    with pytest.raises(IllegalEvent):
        server.committed(True, NOW)
    server.receive(put("/new", b"abc") + get("/f", method="HEAD"), NOW)
    actions = server.committed(False, NOW)
    assert actions[0] == SendBytes(error("500 Internal Server Error"))
    assert [a.status for a in actions if isinstance(a, RequestDone)] == [500, 200]


def test_put_is_invisible_until_commit():
    store = catalog()
    driver = Driver(store)
    server = driver.feed(HttpServer(store), put("/new", b"abcdef")[:-3])
    assert server.state is Conn.BODY and store.stat("/new") is None
    assert server.uploading == ("/new", 3)
    driver.feed(server, b"def")
    assert server.uploading is None
    assert store.get("/new") == b"abcdef" and driver.of(CommitUpload) == [CommitUpload("/new")]


def test_put_aborted_by_client_eof():
    store = catalog()
    driver = serve(put("/new", b"abcdef")[:-2], b"", store=store)
    assert driver.log[-2:] == [AbortUpload("/new"), Close()]
    assert store.get("/new") is None and driver.out == b""


def test_put_empty_and_without_length():
    store = catalog()
    driver = serve(put("/empty", b"") + get("/x", method="PUT"), store=store)
    assert store.get("/empty") == b"" and not driver.of(WriteUpload)
    assert [d.status for d in driver.of(RequestDone)] == [201, 411] and not driver.closed


def test_put_expect_100_continue():
    driver = serve(put("/new", b"abc", "Expect: 100-continue")[:-3])
    assert bytes(driver.out) == b"HTTP/1.1 100 Continue\r\n\r\n"
    refused = serve(get("/f", "Content-Length: 3", "Expect: 100-continue", method="POST"))
    assert b"405 Method Not Allowed" in refused.out and b"100 Continue" not in refused.out
    assert refused.closed  # its body was never asked for, so it cannot be skipped


def test_request_body_is_read_only_when_its_turn():
    """A PUT pipelined behind a streamed GET is not touched until the GET is done."""
    store = catalog(big=bytes(3 * CHUNK))
    server = HttpServer(store)
    driver = Driver(store)
    actions = server.receive(get("/big") + put("/new", b"xyz"), NOW)
    assert [type(a) for a in actions] == [SendBytes, SendFile]
    assert server.receive(b"more-after", NOW) == []
    assert server.state is Conn.SENDING
    driver.run(server, actions)
    assert driver.of(WriteUpload) == [WriteUpload("/new", 0, b"xyz")]
    assert store.get("/new") == b"xyz"
    assert driver.of(RequestDone)[1] == RequestDone("PUT", "/new", 201, 3)


def test_get_body_is_discarded():
    server = HttpServer(catalog())
    server.receive(get("/f", "Content-Length: 4") + b"ju", NOW)
    assert server.state is Conn.BODY and server.uploading is None
    driver = serve(get("/f", "Content-Length: 4") + b"junk" + get("/f", method="HEAD"))
    assert [d.status for d in driver.of(RequestDone)] == [200, 200] and not driver.of(WriteUpload)


def test_large_body_goes_in_chunks():
    size = 2 * CHUNK + 5
    driver = serve(get("/big"), store=catalog(big=bytes(size)))
    assert [(f.offset, f.length) for f in driver.of(SendFile)] == [
        (0, CHUNK), (CHUNK, CHUNK), (2 * CHUNK, 5)]


def test_backpressure_while_sending():
    server = HttpServer(catalog(big=bytes(CHUNK)))
    server.receive(get("/big"), NOW)
    assert not server.paused
    server.receive(b"x" * MAX_BUFFER, NOW)
    assert server.paused


def test_driver_errors_are_named():
    server = HttpServer(catalog())
    with pytest.raises(IllegalEvent):
        server.sent(1, NOW)
    with pytest.raises(IllegalEvent):
        server.refuse_redirect(NOW)
    actions = server.receive(get("/f"), NOW)
    with pytest.raises(IllegalEvent):
        server.sent(actions[-1].length + 1, NOW)
    assert server.sent(0, NOW) == [] and server.sent(4, NOW) == []
    assert [type(a) for a in server.sent(6, NOW)] == [RequestDone]
    with pytest.raises(ValueError):
        HttpServer(catalog(), chunk=CHUNK + 1)


# ------------------------------------------------------------------------ never raises

_GOOD = ["Content-Length: 3", "Content-Length: 0", "Range: bytes=1-3", "Range: bytes=-2",
         "Range: bytes=9999-", "Range: bytes=0-1,3-4", 'If-Range: "x"', "Connection: close",
         "Connection: keep-alive", "Expect: 100-continue"]
_BAD = ["Content-Length: 99999", "Content-Length: x", "Transfer-Encoding: chunked", " folded",
        "X:" + "y" * 300, "Host: again"]


@st.composite
def _requests(draw) -> list[bytes]:
    """Pipelined requests, mostly well-formed, some damaged, in random segments."""
    out = b""
    for _ in range(draw(st.integers(1, 4))):
        method = draw(st.sampled_from(["GET", "GET", "HEAD", "PUT", "PUT", "POST", "BREW"]))
        line = " ".join((method,
                         draw(st.sampled_from(["/f", "/big", "/missing", "/%zz", "*", "/new",
                                               "http://h/f"])),
                         draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0"]))))
        headers = [] if draw(st.integers(0, 9)) == 9 else ["Host: h"]  # (0 is drawn most)
        headers += draw(st.lists(st.sampled_from(_GOOD), max_size=4))
        if draw(st.integers(0, 7)) == 7:
            headers.append(draw(st.sampled_from(_BAD)))
        out += ("\r\n".join([line, *draw(st.permutations(headers))]) + "\r\n\r\n").encode()
        out += draw(st.sampled_from([b"", b"", b"abc", b"xyz\r\n\r\n"]))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):  # damage: a byte replaced
        at = draw(st.integers(0, len(out)))
        out = out[:at] + draw(st.sampled_from([b"", b"\r", b"\n", b" ", b"\x00"])) + out[at + 1:]
    cuts = sorted(draw(st.lists(st.integers(0, len(out)), max_size=6)))
    return [out[a:b] for a, b in zip([0, *cuts], [*cuts, len(out)], strict=True)]


def _exercise(chunks: list[bytes], redirect: bool = False) -> None:
    """Feed the chunks; after each, the connection moves to a core resumed from its export."""
    store = catalog(big=bytes(CHUNK + 7))
    kwargs = {"name": "d1", "root": RootDirectory({"/big": "d2"}), "redirect": redirect,
              "chunk": 4096}
    server = HttpServer(store, **kwargs)
    driver = Driver(store)
    for chunk in [*chunks, b""]:
        if driver.closed:
            break
        driver.run(server, server.receive(chunk, NOW))
        while server.state is Conn.REDIRECTING:
            assert isinstance(driver.log[-1], NotHere)
            driver.run(server, server.refuse_redirect(NOW))
        if not driver.closed:
            server = HttpServer.resume(store, server.export(), **kwargs)
            driver.run(server, server.proceed(NOW))
    assert server.state is Conn.CLOSED and driver.closed


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=64), max_size=12))
def test_fuzz_arbitrary_bytes(chunks):
    _exercise(chunks)


@settings(max_examples=500)
@given(_requests(), st.booleans())
def test_fuzz_request_like_bytes(chunks, redirect):
    _exercise(chunks, redirect)


@given(st.binary(max_size=300))
def test_peek_request_never_raises(data):
    req = peek_request(data)
    assert req is None or req.method


def test_peek_request():
    req = peek_request(get("/d2/a%20b", "Range: bytes=0-1") + b"trailing")
    assert (req.method, req.path, req.range, req.minor) == ("GET", "/d2/a b", "bytes=0-1", 1)
    assert peek_request(get("/d2/f")[:-1]) is None
    assert peek_request(b"GARBAGE\r\n\r\n") is None


# --------------------------------------------------------------------------- handoff


@dataclass
class Stepper:
    """A device pair's view of one connection: writes in arbitrary pieces, handoffs anywhere.

    The kernel socket is the byte stream ``out`` (what TCP_REPAIR moves); a handoff drops
    whatever body bytes of the current SendFile were not yet written, exactly as the first
    device does, and moves a partial upload's bytes along, as the lead's device does.
    """

    files: dict
    chunk: int
    store: MemoryCatalog = None
    server: HttpServer = None
    out: bytearray = field(default_factory=bytearray)
    pending: bytes = b""
    queue: deque = field(default_factory=deque)
    upload: tuple | None = None  # (path, object, bytes written)
    done: list = field(default_factory=list)
    closed: bool = False
    steps_taken: int = 0

    def __post_init__(self):
        self.store = MemoryCatalog(self.files, MTIME)
        self.server = HttpServer(self.store, chunk=self.chunk)

    def drain(self) -> None:
        """Carry out actions up to a SendFile (left pending, to be written in pieces)."""
        while self.queue and not self.pending:
            action = self.queue.popleft()
            if isinstance(action, SendBytes):
                self.out += action.data
            elif isinstance(action, SendFile):
                self.pending = self.store.read(action.path, action.offset, action.length)
            elif isinstance(action, WriteUpload):
                if self.upload is None:
                    self.upload = (action.path, self.store.open_upload(action.path), 0)
                path, obj, _ = self.upload
                obj.write(action.offset, action.data)
                self.upload = (path, obj, action.offset + len(action.data))
            elif isinstance(action, CommitUpload):
                obj = self.upload[1] if self.upload else self.store.open_upload(action.path)
                obj.commit()
                self.files[action.path] = self.store.get(action.path)
                self.upload = None
                self.queue.extend(self.server.committed(True, NOW))
            elif isinstance(action, RequestDone):
                self.done.append(action)
            elif isinstance(action, Close):
                self.closed = True
            else:
                raise AssertionError(action)

    def receive(self, data: bytes) -> None:
        self.queue.extend(self.server.receive(data, NOW))
        self.drain()

    def write(self, n: int) -> None:
        piece, self.pending = self.pending[:n], self.pending[n:]
        self.out += piece
        self.queue.extend(self.server.sent(len(piece), NOW))
        self.drain()

    def handoff(self) -> None:
        assert not self.queue  # actions are carried out before the freeze
        exported = self.server.export()
        self.pending = b""
        self.store = MemoryCatalog(self.files, MTIME)  # the second device: a replica
        if self.upload:
            path, obj, n = self.upload
            assert self.server.uploading == (path, n)
            moved = self.store.open_upload(path)
            moved.write(0, obj.read(0, n))
            obj.abort()
            self.upload = (path, moved, n)
        self.server = HttpServer.resume(self.store, exported, chunk=self.chunk)
        self.queue.extend(self.server.proceed(NOW))
        self.drain()

    def play(self, chunks: list[bytes], steps: list[tuple[int, bool]]) -> bytes:
        """Each step writes up to n body bytes or reads the next chunk, then may hand off."""
        chunks = deque(chunks)
        steps = deque(steps)
        while not self.closed and (chunks or self.pending):
            n, hand = steps.popleft() if steps else (1 << 30, False)
            self.steps_taken += 1
            if self.pending:
                self.write(n)
            else:
                self.receive(chunks.popleft())
            if hand and not self.closed:
                self.handoff()
        return bytes(self.out)


PIPELINE = (get("/f", "Range: bytes=1-8") + get("/big") + get("/missing") + get("/f", method="HEAD")
            + put("/up", bytes(range(200)) * 3) + get("/big", "Range: bytes=-1000")
            + get("/f", "Connection: close"))
FILES = {"/f": FILE, "/big": bytes(range(251)) * 40}


def _reference() -> bytes:
    return Stepper(dict(FILES), chunk=1000).play([PIPELINE], [])


def test_reference_stream_is_sane():
    stream = _reference()
    assert stream.count(b"HTTP/1.1 ") == 7 and stream.endswith(FILE)


def test_handoff_at_every_step_gives_the_same_stream():
    """The pipeline in 37-byte segments, body written 300 bytes a time: a handoff after any step."""
    chunks = [PIPELINE[i:i + 37] for i in range(0, len(PIPELINE), 37)]
    reference = _reference()
    plain = Stepper(dict(FILES), chunk=1000)
    assert plain.play(chunks, [(300, False)] * 10_000) == reference
    assert plain.steps_taken > len(chunks) + 40  # bodies in many pieces
    for before in range(plain.steps_taken):
        steps = [(300, False)] * before + [(300, True)] + [(300, False)] * 10_000
        stepper = Stepper(dict(FILES), chunk=1000)
        assert stepper.play(chunks, steps) == reference, f"handoff after step {before}"
        assert stepper.files["/up"] == bytes(range(200)) * 3


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(1, len(PIPELINE)), max_size=30),
       st.lists(st.tuples(st.integers(1, 2500), st.booleans()), max_size=80))
def test_handoffs_anywhere_give_the_same_stream(cuts, steps):
    cuts = sorted(set(cuts))
    chunks = [PIPELINE[a:b] for a, b in zip([0, *cuts], [*cuts, len(PIPELINE)], strict=True)]
    stepper = Stepper(dict(FILES), chunk=1000)
    assert stepper.play([c for c in chunks if c], steps) == _reference()
    assert [d.path for d in stepper.done][-1] == "/f" and stepper.files["/up"] == bytes(
        range(200)) * 3


def test_resumed_request_done_says_where_it_took_over():
    stepper = Stepper(dict(FILES), chunk=1000)
    stepper.receive(get("/big"))
    stepper.write(1000)
    stepper.write(10)
    stepper.handoff()
    while stepper.pending:
        stepper.write(1 << 30)
    assert stepper.done == [RequestDone("GET", "/big", 200, len(FILES["/big"]), 1010)]


def test_export_is_pure():
    server = HttpServer(catalog(big=bytes(5000)), chunk=1000)
    actions = server.receive(get("/big") + get("/f"), NOW)
    before = server.export()
    assert server.export() == before
    driver = Driver(server.catalog)
    driver.run(server, actions)
    assert driver.out.endswith(FILE)


@pytest.mark.parametrize("files", [{"/f": FILE}, {"/f": FILE, "/big": bytes(10000)},
                                   {"/f": FILE, "/big": bytes(range(250)) * 40 + b"x"}])
def test_resume_refuses_another_file(files):
    server = HttpServer(catalog(big=bytes(range(250)) * 40), chunk=1000)
    server.receive(get("/big"), NOW)
    with pytest.raises(ResumeError):
        HttpServer.resume(MemoryCatalog(files, MTIME), server.export())


def _exports() -> list[bytes]:
    """Exports of every state: idle, reading a body, sending, redirecting, half-closed."""
    store = catalog(big=bytes(5000))
    out = []
    for data in (b"", get("/f")[:5], put("/u", b"abcdef")[:-2], get("/big"),
                 get("/d2/x") + b"next"):
        server = HttpServer(store, name="d1", root=RootDirectory({"/d2/": "d2"}), redirect=True,
                            chunk=1000)
        if data:
            server.receive(data, NOW)
        out.append(server.export())
    server = HttpServer(store, chunk=1000)
    server.receive(get("/big", "Connection: close"), NOW)
    server.receive(b"", NOW)
    return [*out, server.export()]


def test_exports_resume():
    store = catalog(big=bytes(5000))
    for exported in _exports():
        resumed = HttpServer.resume(store, exported)
        assert resumed.export() == exported


def test_resume_from_damaged_exports_raises_resume_error():
    store = catalog(big=bytes(5000))
    for exported in _exports():
        for n in range(len(exported)):
            with pytest.raises(ResumeError):
                HttpServer.resume(store, exported[:n])
        with pytest.raises(ResumeError):
            HttpServer.resume(store, exported + b"\x00")


@given(st.binary(max_size=200))
def test_resume_from_garbage(data):
    with pytest.raises(ResumeError):
        HttpServer.resume(catalog(), data)


@given(st.sampled_from(_exports()), st.integers(0, 10**6), st.integers(0, 255))
def test_resume_from_bit_flips_never_raises_anything_else(exported, where, value):
    damaged = bytearray(exported)
    damaged[where % len(damaged)] = value
    try:
        server = HttpServer.resume(catalog(big=bytes(5000)), bytes(damaged))
    except ResumeError:
        return
    _exercise_resumed(server)


def _exercise_resumed(server: HttpServer) -> None:
    driver = Driver(server.catalog)
    driver.run(server, server.proceed(NOW))
    if server.state is Conn.REDIRECTING:
        driver.run(server, server.refuse_redirect(NOW))
    if not driver.closed:
        driver.run(server, server.receive(b"", NOW))


# -------------------------------------------------------------------------- redirect

ROOT = RootDirectory({"/d1/": "d1", "/d2/": "d2", "/d3/": "d3"}, version=2)


def _device(name: str, files: dict, redirect: bool = True) -> HttpServer:
    return HttpServer(MemoryCatalog(files, MTIME), name=name, root=ROOT, redirect=redirect)


def test_not_here_stops_before_the_request():
    d1 = _device("d1", {"/d1/a": b"aaa"})
    driver = Driver(d1.catalog)
    data = get("/d1/a") + get("/d2/b") + get("/d1/a")
    driver.feed(d1, data)
    assert driver.log[-1] == NotHere("/d2/b", "d2") and d1.state is Conn.REDIRECTING
    assert [d.path for d in driver.of(RequestDone)] == ["/d1/a"]
    assert d1.receive(b"more", NOW) == []
    # the device hands the connection to d2, which answers the request and what follows
    d2 = HttpServer.resume(MemoryCatalog({"/d2/b": b"bbbb"}, MTIME), d1.export(), name="d2",
                           root=ROOT, redirect=True)
    on_d2 = Driver(d2.catalog)
    on_d2.run(d2, d2.proceed(NOW))
    assert on_d2.out.endswith(b"\r\n\r\nbbbb")
    assert on_d2.of(RequestDone) == [RequestDone("GET", "/d2/b", 200, 4)]
    assert on_d2.log[-1] == NotHere("/d1/a", "d1")  # the next one is d1's again
    assert d2.export().endswith(get("/d1/a") + b"more")  # unanswered, in order


def test_not_here_for_a_put_leaves_its_body_unread():
    d1 = _device("d1", {})
    driver = Driver(d1.catalog)
    driver.feed(d1, put("/d2/new", b"payload"))
    assert driver.log == [NotHere("/d2/new", "d2", "PUT")]
    d2 = HttpServer.resume(MemoryCatalog({}, MTIME), d1.export(), name="d2", root=ROOT,
                           redirect=True)
    on_d2 = Driver(d2.catalog)
    on_d2.run(d2, d2.proceed(NOW))
    assert d2.catalog.get("/d2/new") == b"payload" and d1.catalog.get("/d2/new") is None


def test_proxy_answers_with_the_owners_response_then_goes_on():
    """B2.12/B2.14: the device answers a request for d2's file with d2's response, relayed;
    the connection stays here and the next request is served as usual."""
    d1 = _device("d1", {"/d1/a": b"aaa"})
    driver = Driver(d1.catalog)
    driver.feed(d1, get("/d2/b", "Range: bytes=0-3") + get("/d1/a"))
    assert driver.log[-1] == NotHere("/d2/b", "d2", "GET", "bytes=0-3")
    driver.run(d1, d1.proxy(206, [("Content-Length", "4")], NOW))
    assert d1.state is Conn.PROXYING and driver.out.startswith(b"HTTP/1.1 206 Partial Content")
    assert driver.out.endswith(b"Content-Length: 4\r\n\r\n")
    with pytest.raises(IllegalEvent):
        d1.export()  # no handoff while relaying
    driver.out += b"bbbb"  # the driver writes the relayed body
    driver.run(d1, d1.proxied(4, NOW))
    assert driver.of(RequestDone) == [RequestDone("GET", "/d2/b", 206, 4, None, "d2"),
                                      RequestDone("GET", "/d1/a", 200, 3)]
    tail = driver.out[driver.out.index(b"bbbb") + 4:]  # right after the relayed body: a1's
    assert tail.startswith(b"HTTP/1.1 200 OK") and tail.endswith(b"\r\n\r\naaa")
    assert d1.state is Conn.IDLE


def test_a_proxied_head_is_done_at_once_and_a_next_foreign_request_stops_again():
    d1 = _device("d1", {})
    driver = Driver(d1.catalog)
    driver.feed(d1, get("/d2/b", method="HEAD") + get("/d2/b"))
    assert driver.log[-1] == NotHere("/d2/b", "d2", "HEAD")
    driver.run(d1, d1.proxy(200, [("Content-Length", "4")], NOW))
    assert driver.of(RequestDone) == [RequestDone("HEAD", "/d2/b", 200, 0, None, "d2")]
    assert driver.log[-1] == NotHere("/d2/b", "d2") and d1.state is Conn.REDIRECTING
    with pytest.raises(IllegalEvent):
        d1.proxied(0, NOW)  # nothing is being relayed


def test_refuse_redirect_answers_here():
    d1 = _device("d1", {"/d2/b": b"local"})
    driver = Driver(d1.catalog)
    driver.feed(d1, get("/d2/b") + get("/d2/c"))
    assert driver.of(NotHere) == [NotHere("/d2/b", "d2")]
    driver.run(d1, d1.refuse_redirect(NOW))
    assert driver.out.startswith(b"HTTP/1.1 200 OK") and b"local" in driver.out
    assert driver.of(NotHere) == [NotHere("/d2/b", "d2"), NotHere("/d2/c", "d2")]
    driver.run(d1, d1.refuse_redirect(NOW))
    assert driver.out.endswith(error("404 Not Found"))


def test_a_request_is_redirected_at_most_once():
    """d3's directory is stale and says d1: the request is answered on d3, no ping-pong."""
    d1 = _device("d1", {})
    d1.receive(get("/d3/x"), NOW)
    stale = RootDirectory({"/d3/": "d1"}, version=1)
    d3 = HttpServer.resume(MemoryCatalog({"/d3/x": b"x"}, MTIME), d1.export(), name="d3",
                           root=stale, redirect=True)
    on_d3 = Driver(d3.catalog)
    on_d3.run(d3, d3.proceed(NOW))
    assert not on_d3.of(NotHere) and on_d3.out.endswith(b"\r\n\r\nx")
    on_d3.feed(d3, get("/d3/x"))  # the next request is a new decision
    assert on_d3.log[-1] == NotHere("/d3/x", "d1")


@pytest.mark.parametrize(("name", "redirect", "path"), [
    ("d1", False, "/d2/b"),  # redirect off: answered here (404)
    ("d1", True, "/elsewhere/b"),  # no prefix covers it
    ("d2", True, "/d2/b"),  # it is ours
])
def test_no_redirect(name, redirect, path):
    server = _device(name, {}, redirect=redirect)
    driver = Driver(server.catalog)
    driver.feed(server, get(path) + get("/d3/x", method="POST"))
    assert not driver.of(NotHere) and [d.status for d in driver.of(RequestDone)] == [404, 405]


# ------------------------------------------------------------------ real sockets


class SocketDriver:
    """A threaded test driver: one HttpServer per accepted connection on 127.0.0.1."""

    def __init__(self, volume: Volume) -> None:
        self.volume = volume
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        server, uploads = HttpServer(self.volume), {}
        conn.settimeout(30)
        try:
            with conn:
                while server.state is not Conn.CLOSED:
                    data = conn.recv(65536)
                    queue = deque(server.receive(data, time.time()))
                    while queue:
                        action = queue.popleft()
                        if isinstance(action, SendBytes):
                            conn.sendall(action.data)
                        elif isinstance(action, SendFile):
                            chunk = self.volume.read(action.path, action.offset, action.length)
                            conn.sendall(chunk)
                            queue.extend(server.sent(len(chunk), time.time()))
                        elif isinstance(action, WriteUpload):
                            if action.path not in uploads:
                                uploads[action.path] = self.volume.open_upload(action.path)
                            uploads[action.path].write(action.offset, action.data)
                        elif isinstance(action, CommitUpload):
                            (uploads.pop(action.path, None)
                             or self.volume.open_upload(action.path)).commit()
                            queue.extend(server.committed(True, time.time()))
                        elif isinstance(action, AbortUpload):
                            if upload := uploads.pop(action.path, None):
                                upload.abort()
                        elif isinstance(action, Close):
                            conn.shutdown(socket.SHUT_WR)
        except (OSError, AssertionError) as exc:  # a test's client went away: say so
            self.errors.append(exc)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def nas(tmp_path):
    (tmp_path / "d1").mkdir()
    (tmp_path / "d1" / "f").write_bytes(bytes(range(256)) * 4096)  # 1 MiB: 4 chunks
    driver = SocketDriver(Volume(tmp_path))
    yield driver
    driver.close()


def test_http_client_range_head_keep_alive(nas):
    client = http.client.HTTPConnection("127.0.0.1", nas.port, timeout=30)
    client.request("GET", "/d1/f", headers={"Range": "bytes=1000-1999"})
    resp = client.getresponse()
    assert resp.status == 206 and resp.read() == (bytes(range(256)) * 4096)[1000:2000]
    assert resp.getheader("Content-Range") == "bytes 1000-1999/1048576"
    client.request("HEAD", "/d1/f")
    resp = client.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Length") == "1048576"
    assert resp.read() == b""
    client.request("PUT", "/d1/up", body=b"uploaded")
    resp = client.getresponse()
    assert resp.status == 201 and resp.read() == b""
    client.request("GET", "/d1/up")
    assert client.getresponse().read() == b"uploaded"
    client.request("GET", "/d1/f")
    assert client.getresponse().read() == bytes(range(256)) * 4096
    client.close()
    assert nas.connections == 1 and not nas.errors


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl (Debian package curl)")
def test_curl_range_head_keep_alive(nas, tmp_path):
    url = f"http://127.0.0.1:{nas.port}/d1/f"

    def curl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["curl", "-sS", "--max-time", "30", *args], check=True,
                              capture_output=True, timeout=60)

    assert curl("-r", "10-19", url).stdout == (bytes(range(256)) * 4096)[10:20]
    head = curl("-I", url).stdout.decode()
    assert head.startswith("HTTP/1.1 200 OK") and "Content-Length: 1048576" in head
    connects = curl("-o", str(tmp_path / "a"), "-o", str(tmp_path / "b"), "-w",
                    "%{num_connects} ", url, url + "?again").stdout.decode().split()
    assert connects == ["1", "0"]  # the second transfer reused the connection
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes() == (
        tmp_path / "d1" / "f").read_bytes()
    upload = curl("-v", "-T", str(tmp_path / "a"), "-w", "%{http_code}", url + "-copy")
    assert upload.stdout == b"201" and b"HTTP/1.1 100 Continue" in upload.stderr
    assert (tmp_path / "d1" / "f-copy").read_bytes() == (tmp_path / "a").read_bytes()
    assert nas.connections == 4 and not nas.errors
