# SPDX-License-Identifier: GPL-2.0-or-later
"""The HTTP/1.1 front end of a NAS device: a sans-IO server core whose state can move (D2.15).

Any unmodified client (curl, wget, ``http.client``) talks to a device's volume with GET, HEAD
and PUT. One ``HttpServer`` serves one client connection: the driver feeds it what it read
(``receive``), what body bytes it wrote (``sent``) and whether an upload was committed
(``committed``), and carries out the actions it returns, in order.

The connection may be handed to another device in the middle of a response (TCH): the kernel
socket moves with TCP_REPAIR, and ``export()`` is the application half -- unparsed input, the
response in progress (file, next body offset, end), the request body being read, keep-alive.
``HttpServer.resume`` continues on the other device exactly where this one stopped, so the
client's byte stream is the same as without the handoff. Large bodies go out in ``SendFile``
chunks of at most ``CHUNK`` bytes, so a handoff can happen between two of them.

With ``redirect=True`` and a ``RootDirectory`` naming another device for a request's path
(claim 10: the fast path to any disk, which redirects), the core stops *before* that request
and returns ``NotHere``; the request stays unanswered in the exported state, for the owner to
serve after the handoff. A request is redirected at most once (no ping-pong between devices
whose directories disagree); ``refuse_redirect`` answers it here.

Choices: requests are answered strictly in order and a request's body is read only when it is
its turn (the unparsed input *is* the pipeline queue); a body is stored (PUT) or discarded,
always read before the response; ``Transfer-Encoding`` is refused with 411 and the connection
closed; a Range with several ranges gets the whole file (200). A failed upload (a write or
the commit) is reported with ``committed(False)`` and answered 500; a failed read in the
middle of a body can only be answered by closing the connection. ``AbortUpload`` may name an
upload this device never opened (resumed mid-body, nothing written since): nothing to do.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from email.utils import formatdate
from enum import Enum

from ftsslab.nas.volume import Catalog, FileInfo, RootDirectory, canonical_path

CHUNK = 256 * 1024  # the largest SendFile: progress is visible, a handoff fits in between
MAX_LINE = 8 * 1024  # request line (414) or one header line (431), terminator included
MAX_HEAD = 64 * 1024  # the whole request head (431)
MAX_HEADERS = 100  # header lines (431)
MAX_BUFFER = 256 * 1024  # unprocessed input at which the driver should stop reading (paused)
SERVER = "ftsslab-nas"
FILE_METHODS = ("GET", "HEAD", "PUT")
KNOWN_METHODS = frozenset(("GET", "HEAD", "PUT", "POST", "DELETE", "CONNECT", "OPTIONS", "TRACE",
                           "PATCH"))
REASONS = {200: "OK", 201: "Created", 204: "No Content", 206: "Partial Content",
           400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           411: "Length Required", 414: "URI Too Long", 416: "Range Not Satisfiable",
           417: "Expectation Failed", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 501: "Not Implemented", 505: "HTTP Version Not Supported"}


class ProtocolError(Exception):
    """Base of this module's errors."""


class IllegalEvent(ProtocolError):
    """The driver called something the connection's state does not allow (a driver bug)."""


class ResumeError(ProtocolError):
    """An exported state that cannot be resumed: not one, or its file differs on this device."""


# ------------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class SendBytes:
    """Write these bytes into the socket (status line and headers, small bodies)."""

    data: bytes


@dataclass(frozen=True)
class SendFile:
    """Read ``length`` bytes of ``path`` at ``offset``, write them, report them to ``sent``."""

    path: str
    offset: int
    length: int


@dataclass(frozen=True)
class WriteUpload:
    """Write PUT body bytes at ``offset`` of the upload to ``path`` (the first one opens it)."""

    path: str
    offset: int
    data: bytes


@dataclass(frozen=True)
class CommitUpload:
    """The PUT body is complete: commit the upload (opening it first for an empty body).

    The driver reports the outcome with ``committed``, so that the status tells the truth and
    a pipelined request behind it sees the new file. A failed write is reported there too.
    """

    path: str


@dataclass(frozen=True)
class AbortUpload:
    """The client went away mid-body: drop the upload."""

    path: str


@dataclass(frozen=True)
class Close:
    """Close the connection (after writing everything before this action)."""


@dataclass(frozen=True)
class RequestDone:
    """A request was answered (for the run log: which device served what).

    ``nbytes`` is the body length sent (GET) or received (PUT); ``resumed_at`` the body offset
    at which this core took the request over after a handoff (None: it served all of it).
    """

    method: str
    path: str
    status: int
    nbytes: int
    resumed_at: int | None = None
    via: str | None = None  # the device whose response was relayed (``proxy``), if any

    def event(self, client: tuple[str, int]) -> dict:
        """The fields of the ``request`` event a device logs, on either backend."""
        return {"method": self.method, "path": self.path, "status": self.status,
                "bytes": self.nbytes, "resumed_at": self.resumed_at,
                "client": f"{client[0]}:{client[1]}", **({"via": self.via} if self.via else {})}


@dataclass(frozen=True)
class NotHere:
    """The next request is for ``owner``'s file: hand the connection over, answer it with
    the owner's response (``proxy``), or here after all (``refuse_redirect``). ``range`` is the
    request's Range header, for a proxy to ask the owner the same."""

    path: str
    owner: str
    method: str = "GET"
    range: str | None = None


Action = SendBytes | SendFile | WriteUpload | CommitUpload | AbortUpload | Close | RequestDone | \
    NotHere


# --------------------------------------------------------------------------- state machine


class Conn(Enum):
    IDLE = "idle"  # waiting for (parsing) the next request head
    BODY = "body"  # reading the current request's body
    SENDING = "sending"  # streaming the current response's body
    COMMITTING = "committing"  # a PUT body is complete: waiting for ``committed``
    REDIRECTING = "redirecting"  # stopped before a request another device owns (NotHere)
    PROXYING = "proxying"  # relaying the owner's answer to it (the driver writes the body)
    CLOSED = "closed"


class Event(Enum):
    BODY_START = "body-start"
    BODY_END = "body-end"
    COMMIT = "commit"
    COMMITTED = "committed"
    STREAM = "stream"
    STREAM_END = "stream-end"
    FOREIGN = "foreign"  # the next request's path belongs to another device
    REFUSED = "refused"  # ... and it is answered here after all
    PROXY = "proxy"  # ... with the owner's response, relayed
    PROXIED = "proxied"  # the relayed body is written
    CLOSE = "close"


TRANSITIONS: dict[tuple[Conn, Event], Conn] = {
    (Conn.IDLE, Event.BODY_START): Conn.BODY,
    (Conn.BODY, Event.BODY_END): Conn.IDLE,
    (Conn.IDLE, Event.STREAM): Conn.SENDING,
    (Conn.IDLE, Event.COMMIT): Conn.COMMITTING,
    (Conn.COMMITTING, Event.COMMITTED): Conn.IDLE,
    (Conn.SENDING, Event.STREAM_END): Conn.IDLE,
    (Conn.IDLE, Event.FOREIGN): Conn.REDIRECTING,
    (Conn.REDIRECTING, Event.REFUSED): Conn.IDLE,
    (Conn.REDIRECTING, Event.PROXY): Conn.PROXYING,
    (Conn.PROXYING, Event.PROXIED): Conn.IDLE,
    (Conn.IDLE, Event.CLOSE): Conn.CLOSED,
    (Conn.BODY, Event.CLOSE): Conn.CLOSED,
}


# -------------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Request:
    """A parsed request head. ``path`` is canonical, None when the target names no file path."""

    method: str
    target: str
    path: str | None
    minor: int  # HTTP/1.<minor>
    headers: tuple[tuple[str, str], ...]  # (lower-case name, value), in order
    content_length: int | None
    chunked: bool  # a Transfer-Encoding was given
    keep_alive: bool
    expect: str | None  # lower case
    range: str | None
    if_range: str | None


@dataclass(frozen=True)
class _Bad:
    status: int


_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_VALUE_BAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_ABSOLUTE = re.compile(r"https?://[^/]*", re.IGNORECASE)
_BIG = 1 << 62  # a number too large for anything here


def _number(text: str) -> int | None:
    """A decimal made of ASCII digits (``_BIG`` when absurdly long), or None."""
    if not text.isascii() or not text.isdigit():
        return None
    return int(text) if len(text.lstrip("0")) <= 18 else _BIG


class _Scanner:
    """Finds the end of a request head incrementally (each byte is looked at once)."""

    def __init__(self) -> None:
        self.pos = self.lines = 0

    def feed(self, buf: bytes | bytearray) -> int | _Bad | None:
        """The head's length (blank line included), an over-limit status, or None (need more)."""
        while True:
            nl = buf.find(b"\n", self.pos)
            end = len(buf) if nl < 0 else nl + 1
            if end - self.pos > MAX_LINE:
                return _Bad(414 if self.lines == 0 else 431)
            if end > MAX_HEAD:
                return _Bad(431)
            if nl < 0:
                return None
            if buf[self.pos:nl] in (b"", b"\r"):  # (empty lines before a head are stripped)
                return end
            self.lines += 1
            if self.lines > MAX_HEADERS + 1:
                return _Bad(431)
            self.pos = end


def _strip_empty_lines(buf: bytearray) -> None:
    """RFC 9112 2.2: empty lines before a request line are ignored."""
    n = 0
    while True:
        if buf.startswith(b"\n", n):
            n += 1
        elif buf.startswith(b"\r\n", n):
            n += 2
        else:
            break
    del buf[:n]


def _parse_head(raw: bytes) -> Request | _Bad:
    """A complete head (up to its blank line) as a Request, or the status that rejects it."""
    lines = raw.split(b"\n")[:-2]  # the blank line and what follows its LF are not lines
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    if not lines or any(b"\r" in line for line in lines):
        return _Bad(400)
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not _TARGET.fullmatch(parts[1]):
        return _Bad(400)
    version = _VERSION.fullmatch(parts[2])
    if version is None:
        return _Bad(400)
    if version.group(1) != b"1":
        return _Bad(505)
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            return _Bad(400)  # also obs-fold (a line starting with SP/HT) and "Name :"
        value = value.strip(b" \t")
        if _VALUE_BAD.search(value):
            return _Bad(400)
        headers.append((name.decode().lower(), value.decode("latin-1")))
    return _request(parts[0].decode(), parts[1].decode(), int(version.group(2)), tuple(headers))


def _request(method: str, target: str, minor: int,
             headers: tuple[tuple[str, str], ...]) -> Request | _Bad:
    def values(name: str) -> list[str]:
        return [v for k, v in headers if k == name]

    def single(name: str) -> str | None:
        found = values(name)
        return found[0] if len(found) == 1 else None

    hosts = values("host")
    if len(hosts) > 1 or (minor >= 1 and not hosts):
        return _Bad(400)  # RFC 9112 3.2
    content_length = None
    if values("content-length"):  # a list of equal values is one value (RFC 9110 8.6)
        lengths = {_number(v.strip(" \t"))
                   for v in ",".join(values("content-length")).split(",")}
        if len(lengths) != 1 or None in lengths or _BIG in lengths:
            return _Bad(400)
        content_length = lengths.pop()
    connection = {t.strip(" \t").lower() for t in ",".join(values("connection")).split(",")}
    keep_alive = "close" not in connection if minor >= 1 else "keep-alive" in connection
    absolute = _ABSOLUTE.match(target)
    path = target[absolute.end():] or "/" if absolute else target
    expect = single("expect")
    return Request(
        method=method, target=target, path=canonical_path(path) if path.startswith("/") else None,
        minor=minor, headers=headers, content_length=content_length,
        chunked=bool(values("transfer-encoding")), keep_alive=keep_alive,
        expect=expect.lower() if expect is not None else None,
        range=single("range"), if_range=single("if-range"))


def peek_request(data: bytes) -> Request | None:
    """The first request head in ``data`` (a switch inspecting the first segment, B2.3).

    None while it is incomplete or when it is malformed; never raises.
    """
    buf = bytearray(data)
    _strip_empty_lines(buf)
    end = _Scanner().feed(buf)
    if not isinstance(end, int):
        return None
    req = _parse_head(bytes(buf[:end]))
    return req if isinstance(req, Request) else None


def _byte_range(req: Request, info: FileInfo) -> tuple[int, int, int]:
    """(status, start, end) for a GET/HEAD: 200 whole, 206 one range, 416 unsatisfiable."""
    size = info.size
    whole = (200, 0, size)
    if req.range is None:
        return whole
    if req.if_range is not None and req.if_range not in (info.etag, _http_date(info.mtime_ns)):
        return whole  # the client's copy is stale: RFC 9110 13.1.5
    unit, eq, spec = req.range.partition("=")
    if unit.strip(" \t").lower() != "bytes" or not eq or "," in spec:
        return whole  # not a byte range (ignored), or several ranges: the whole file
    first, dash, last = (s.strip(" \t") for s in spec.partition("-"))
    if not dash:
        return whole
    if first == "":  # suffix: the last n bytes
        n = _number(last)
        if n is None:
            return whole
        return (416, 0, 0) if n == 0 or size == 0 else (206, max(0, size - n), size)
    start = _number(first)
    stop = _number(last) if last else _BIG
    if start is None or stop is None or stop < start:
        return whole  # invalid: RFC 9110 14.2 says ignore it
    return (416, 0, 0) if start >= size else (206, start, min(stop, size - 1) + 1)


def _http_date(ns: int) -> str:
    return formatdate(ns / 1e9, usegmt=True)


# ------------------------------------------------------------------------------ the core

_EXPORT = struct.Struct(">2sBBBHQQQQQ")  # magic, format, state, flags, status, received, start,
# next, end, size; then head (u32 length), etag (u16), unparsed input (u32)
_MAGIC, _FORMAT = b"NH", 1
_FLAG_EOF, _FLAG_REDIRECTED, _FLAG_CLOSE = 1, 2, 4  # client closed; redirected; close after
_CODES = {Conn.IDLE: 0, Conn.BODY: 1, Conn.SENDING: 2}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class HttpServer:
    """One client connection's HTTP/1.1 server (sans-IO). ``now`` is wall-clock seconds (Date).

    ``root`` may be replaced by the device when a newer directory version arrives.
    """

    def __init__(self, catalog: Catalog, *, name: str | None = None,
                 root: RootDirectory | None = None, redirect: bool = False,
                 chunk: int = CHUNK) -> None:
        if not 0 < chunk <= CHUNK:
            raise ValueError(f"chunk {chunk}: 1..{CHUNK}")
        self.catalog, self.name, self.root, self.redirect, self.chunk = (
            catalog, name, root, redirect, chunk)
        self.state = Conn.IDLE
        self._buf = bytearray()
        self._scanner = _Scanner()
        self._eof = False
        self._redirected = False  # the next request was already redirected once
        self._req: Request | None = None  # BODY, SENDING: the current request ...
        self._head = b""  # ... and its raw head (what export carries)
        self._received = 0  # BODY: body bytes read
        self._status = 0  # SENDING, COMMITTING: the status of the response
        self._start = self._next = self._asked = self._end = 0  # SENDING: body offsets
        self._info: FileInfo | None = None  # SENDING: the file being sent
        self._keep = True  # SENDING, COMMITTING: keep the connection after this response
        self._resumed_at: int | None = None
        self._foreign_at: tuple[Request, int] | None = None  # REDIRECTING: the request, its end
        self._via: str | None = None  # PROXYING: the owner whose response is relayed

    def _go(self, event: Event) -> None:
        try:
            self.state = TRANSITIONS[self.state, event]
        except KeyError:
            raise IllegalEvent(f"{event.value} in state {self.state.value}") from None

    @property
    def has_input(self) -> bool:
        """Bytes received and not yet taken as a request (a half-handoff waits for none)."""
        return bool(self._buf)

    @property
    def paused(self) -> bool:
        """True when the driver should stop reading: closed, or enough input is waiting."""
        return self.state is Conn.CLOSED or len(self._buf) >= MAX_BUFFER

    @property
    def uploading(self) -> tuple[str, int] | None:
        """The PUT body being stored: (path, bytes received so far), else None.

        A handoff in the middle of it must carry those first bytes along (``Upload.read`` here,
        ``write`` there): the resumed core goes on writing at the offset it was exported at.
        """
        if self.state is Conn.BODY and self._storable(self._req):
            return self._req.path, self._received
        return None

    # ---- driver calls

    def receive(self, data: bytes, now: float) -> list[Action]:
        """Bytes read from the socket; ``b""`` when the client closed its sending side."""
        if self.state is Conn.CLOSED:
            return []
        if data:
            self._buf += data
        else:
            self._eof = True
        return self.proceed(now)

    def sent(self, n: int, now: float) -> list[Action]:
        """The driver wrote ``n`` more body bytes of the current SendFile into the socket."""
        if self.state is not Conn.SENDING or not 0 <= n <= self._asked - self._next:
            raise IllegalEvent(f"sent({n}) in state {self.state.value}")
        self._next += n
        if n == 0 or self._next < self._asked:
            return []
        if self._next < self._end:
            return [self._send_chunk()]
        out: list[Action] = [self._done_record(self._status, self._end - self._start)]
        self._go(Event.STREAM_END)
        self._finish(out, self._keep)
        return self._advance(out, now)

    def committed(self, ok: bool, now: float) -> list[Action]:
        """The driver carried out CommitUpload: the file is in place (ok) or the upload failed."""
        self._go(Event.COMMITTED)
        out: list[Action] = []
        keep = self._keep
        if not ok:
            self._error(out, now, 500, keep)
        else:
            # a 204 never carries Content-Length (RFC 9110 8.6)
            fields = [("Content-Length", "0")] if self._status == 201 else []
            out.append(SendBytes(self._response_head(self._status, now, keep, fields)))
            out.append(self._done_record(self._status, self._req.content_length))
            self._finish(out, keep)
        return self._advance(out, now)

    def refuse_redirect(self, now: float) -> list[Action]:
        """Answer the request NotHere named here after all (owner unknown, handoff refused)."""
        self._go(Event.REFUSED)
        return self.proceed(now)

    def proxy(self, status: int, fields: list[tuple[str, str]], now: float) -> list[Action]:
        """Answer the request NotHere named with its owner's response (B2.14: metadata by
        proxy; B2.12: data below a threshold): this device's head with the owner's status and
        ``fields``; the driver then writes the body it relays and calls ``proxied``. A HEAD
        has no body: it is done at once."""
        if self.state is not Conn.REDIRECTING or status not in REASONS:
            raise IllegalEvent(f"proxy({status}) in state {self.state.value}")
        self._go(Event.PROXY)
        req, end = self._foreign_at
        self._req, self._head, self._status = req, bytes(self._buf[:end]), status
        self._via = self.root.owner(req.path)
        del self._buf[:end]
        self._redirected = False
        out: list[Action] = [SendBytes(self._response_head(status, now, req.keep_alive,
                                                           fields))]
        return out + self.proxied(0, now) if req.method == "HEAD" else out

    def proxied(self, nbytes: int, now: float) -> list[Action]:
        """The driver wrote the relayed body (``nbytes``) after ``proxy``'s head."""
        via, keep = self._via, self._req.keep_alive if self._req else False
        self._go(Event.PROXIED)
        done = self._done_record(self._status, nbytes)
        out: list[Action] = [RequestDone(done.method, done.path, done.status, nbytes, None, via)]
        self._finish(out, keep)
        return self._advance(out, now)

    def proceed(self, now: float) -> list[Action]:
        """Whatever can be done without new input: the first call after ``resume``."""
        if self.state is Conn.SENDING:
            return [self._send_chunk()] if self._asked == self._next else []
        return self._advance([], now)

    # ---- the request loop

    def _advance(self, out: list[Action], now: float) -> list[Action]:
        while True:
            if self.state is Conn.IDLE:
                progressed = self._next_request(out, now)
            elif self.state is Conn.BODY:
                progressed = self._read_body(out, now)
            else:
                progressed = False
            if not progressed:
                return out

    def _next_request(self, out: list[Action], now: float) -> bool:
        if self._scanner.pos == 0:
            _strip_empty_lines(self._buf)
        end = self._scanner.feed(self._buf) if self._buf else None
        if end is None:
            if self._eof:
                self._close(out)
            return False
        req = _parse_head(bytes(self._buf[:end])) if isinstance(end, int) else end
        self._scanner = _Scanner()
        if isinstance(req, _Bad):
            self._error(out, now, req.status, keep=False)
            return False
        if self._foreign(req):
            self._redirected = True
            self._go(Event.FOREIGN)
            self._foreign_at = (req, end)
            out.append(NotHere(req.path, self.root.owner(req.path), req.method,
                               next((v for k, v in req.headers if k == "range"), None)))
            return False
        self._redirected = False
        self._req, self._head = req, bytes(self._buf[:end])
        del self._buf[:end]
        self._start_request(out, now)
        return True

    def _foreign(self, req: Request) -> bool:
        if not self.redirect or self._redirected or self.root is None or req.path is None \
                or req.method not in FILE_METHODS or req.chunked:
            return False
        owner = self.root.owner(req.path)
        return owner is not None and owner != self.name

    def _start_request(self, out: list[Action], now: float) -> None:
        req = self._req
        if req.chunked:
            return self._error(out, now, 411, keep=False)  # its body cannot be skipped
        if req.expect not in (None, "100-continue"):
            return self._error(out, now, 417, keep=False)
        if req.content_length:
            if req.expect and not self._storable(req):
                return self._respond(out, now, keep=False)  # final status instead of 100
            if req.expect and req.minor >= 1:
                out.append(SendBytes(_CONTINUE))
            self._received = 0
            return self._go(Event.BODY_START)
        self._respond(out, now, req.keep_alive)

    @staticmethod
    def _storable(req: Request) -> bool:
        return (req.method == "PUT" and req.path is not None and not req.path.endswith("/")
                and req.content_length is not None)

    def _read_body(self, out: list[Action], now: float) -> bool:
        req = self._req
        take = min(req.content_length - self._received, len(self._buf))
        if take:
            if self._storable(req):
                out.append(WriteUpload(req.path, self._received, bytes(self._buf[:take])))
            del self._buf[:take]
            self._received += take
        if self._received == req.content_length:
            self._go(Event.BODY_END)
            self._respond(out, now, req.keep_alive)
            return True
        if self._eof:
            if self._storable(req):
                out.append(AbortUpload(req.path))
            self._close(out)
        return False

    def _respond(self, out: list[Action], now: float, keep: bool) -> None:
        """Answer the current request (its body, if any, has been read)."""
        req = self._req
        if req.method not in KNOWN_METHODS:
            return self._error(out, now, 501, keep)
        if req.method not in FILE_METHODS:
            return self._error(out, now, 405, keep, [("Allow", ", ".join(FILE_METHODS))])
        if req.path is None or (req.method == "PUT" and req.path.endswith("/")):
            return self._error(out, now, 400, keep)
        info = self.catalog.stat(req.path)
        if req.method == "PUT":
            if req.content_length is None:
                return self._error(out, now, 411, keep)
            self._status, self._keep = (201 if info is None else 204), keep
            self._go(Event.COMMIT)
            out.append(CommitUpload(req.path))
            return None
        if info is None:
            return self._error(out, now, 404, keep)
        status, start, end = _byte_range(req, info)
        if status == 416:
            return self._error(out, now, 416, keep, [("Content-Range", f"bytes */{info.size}"),
                                                     ("Accept-Ranges", "bytes")])
        fields = [("Content-Type", "application/octet-stream"),
                  ("Content-Length", str(end - start))]
        if status == 206:
            fields.append(("Content-Range", f"bytes {start}-{end - 1}/{info.size}"))
        fields += [("Last-Modified", _http_date(info.mtime_ns)), ("ETag", info.etag),
                   ("Accept-Ranges", "bytes")]
        out.append(SendBytes(self._response_head(status, now, keep, fields)))
        if req.method == "HEAD" or start == end:
            out.append(self._done_record(status, 0))
            return self._finish(out, keep)
        self._status, self._start, self._next, self._asked, self._end, self._info = (
            status, start, start, start, end, info)
        self._keep = keep
        self._go(Event.STREAM)
        out.append(self._send_chunk())

    def _send_chunk(self) -> SendFile:
        self._asked = min(self._next + self.chunk, self._end)
        return SendFile(self._req.path, self._next, self._asked - self._next)

    def _error(self, out: list[Action], now: float, status: int, keep: bool,
               extra: list[tuple[str, str]] | None = None) -> None:
        body = f"{status} {REASONS[status]}\n".encode()
        fields = [("Content-Type", "text/plain; charset=utf-8"),
                  ("Content-Length", str(len(body))), *(extra or [])]
        if self._req is not None and self._req.method == "HEAD":
            body = b""
        out.append(SendBytes(self._response_head(status, now, keep, fields) + body))
        out.append(self._done_record(status, 0))
        self._finish(out, keep)

    def _response_head(self, status: int, now: float, keep: bool,
                       fields: list[tuple[str, str]]) -> bytes:
        lines = [f"HTTP/1.1 {status} {REASONS[status]}", f"Date: {formatdate(now, usegmt=True)}",
                 f"Server: {SERVER}", *(f"{k}: {v}" for k, v in fields)]
        if not keep:
            lines.append("Connection: close")
        elif self._req is not None and self._req.minor == 0:
            lines.append("Connection: keep-alive")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _done_record(self, status: int, nbytes: int) -> RequestDone:
        req, resumed_at = self._req, self._resumed_at
        self._resumed_at = None
        if req is None:
            return RequestDone("", "", status, nbytes)
        return RequestDone(req.method, req.path or req.target, status, nbytes, resumed_at)

    def _finish(self, out: list[Action], keep: bool) -> None:
        self._req, self._head, self._info = None, b"", None
        if not keep:
            self._close(out)

    def _close(self, out: list[Action]) -> None:
        self._go(Event.CLOSE)
        out.append(Close())

    # ---- handoff

    def export(self) -> bytes:
        """The connection's application state, as if every action so far was carried out.

        SendBytes are taken as written, a SendFile as far as ``sent`` reported. Pure: the
        connection can go on here if the handoff does not happen.
        """
        if self.state in (Conn.CLOSED, Conn.COMMITTING, Conn.PROXYING):
            raise IllegalEvent(f"export in state {self.state.value}")
        flags = (_FLAG_EOF if self._eof else 0) | (_FLAG_REDIRECTED if self._redirected else 0) \
            | (_FLAG_CLOSE if self._info and not self._keep else 0)
        code = _CODES.get(self.state, _CODES[Conn.IDLE])  # REDIRECTING: idle, redirected
        etag = self._info.etag.encode("latin-1") if self._info else b""
        size = self._info.size if self._info else 0
        return b"".join((
            _EXPORT.pack(_MAGIC, _FORMAT, code, flags, self._status if self._info else 0,
                         self._received if self.state is Conn.BODY else 0,
                         *((self._start, self._next, self._end) if self._info else (0, 0, 0)),
                         size),
            struct.pack(">I", len(self._head)), self._head,
            struct.pack(">H", len(etag)), etag,
            struct.pack(">I", len(self._buf)), bytes(self._buf)))

    @classmethod
    def resume(cls, catalog: Catalog, exported: bytes, *, name: str | None = None,
               root: RootDirectory | None = None, redirect: bool = False,
               chunk: int = CHUNK) -> HttpServer:
        """The connection ``export`` described, continued on this device: call ``proceed``.

        Raises ResumeError for anything ``export`` did not produce, and when the response in
        progress is for a file this catalog lacks or holds with another size or entity tag.
        """
        server = cls(catalog, name=name, root=root, redirect=redirect, chunk=chunk)
        try:
            fields, head, etag, buf = _decode(exported)
            etag_text = etag.decode("ascii")
        except (struct.error, UnicodeDecodeError):
            raise ResumeError("not an exported HTTP connection") from None
        code, flags, status, received, start, nxt, end, size = fields
        if flags & ~(_FLAG_EOF | _FLAG_REDIRECTED | _FLAG_CLOSE) \
                or (flags & _FLAG_CLOSE and code != _CODES[Conn.SENDING]):
            raise ResumeError(f"flags {flags:#x} in state {code}")
        server._buf, server._eof = bytearray(buf), bool(flags & _FLAG_EOF)
        server._redirected = bool(flags & _FLAG_REDIRECTED)
        numbers = (status, received, start, nxt, end, size)
        if code == _CODES[Conn.IDLE]:
            if head or etag or any(numbers):
                raise ResumeError("an idle connection with a request in progress")
            return server
        req = _whole_head(head)
        if req is None or server._redirected:
            raise ResumeError("no request head in progress")
        server._req, server._head = req, head
        if code == _CODES[Conn.BODY]:
            if etag or status or start or nxt or end or size or req.chunked \
                    or not received < (req.content_length or 0):
                raise ResumeError("a body state that export does not produce")
            server.state, server._received, server._resumed_at = Conn.BODY, received, received
            return server
        if code != _CODES[Conn.SENDING] or received or req.method != "GET" or req.path is None \
                or status not in (200, 206) or not start <= nxt < end <= size \
                or (status == 200 and (start, end) != (0, size)):
            raise ResumeError("a response state that export does not produce")
        info = catalog.stat(req.path)
        if info is None or (info.size, info.etag) != (size, etag_text):
            raise ResumeError(f"{req.path}: not the file the response was started from")
        server.state, server._info, server._resumed_at = Conn.SENDING, info, nxt
        server._keep = not flags & _FLAG_CLOSE
        server._status, server._start, server._next, server._asked, server._end = (
            status, start, nxt, nxt, end)
        return server


def _decode(data: bytes) -> tuple[tuple[int, ...], bytes, bytes, bytes]:
    """Split an export into its fields (struct.error when it is not one)."""
    magic, fmt, *fields = _EXPORT.unpack_from(data)
    if magic != _MAGIC or fmt != _FORMAT:
        raise struct.error("magic")
    pos, blobs = _EXPORT.size, []
    for width in (">I", ">H", ">I"):
        (n,) = struct.unpack_from(width, data, pos)
        pos += struct.calcsize(width)
        if pos + n > len(data):
            raise struct.error("short")
        blobs.append(bytes(data[pos:pos + n]))
        pos += n
    if pos != len(data):
        raise struct.error("trailing bytes")
    return tuple(fields), blobs[0], blobs[1], blobs[2]


def _whole_head(head: bytes) -> Request | None:
    """The request of a raw head that is exactly one complete, valid head, or None."""
    if _Scanner().feed(head) != len(head) or head[:1] in (b"\r", b"\n"):
        return None
    req = _parse_head(head)
    return req if isinstance(req, Request) else None
