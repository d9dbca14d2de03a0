"""The ``fetch`` step's HTTP/1.1 client, one per backend, with one result format.

A fetch is one TCP connection that GETs its URLs in turn (keep-alive) and then closes. Its
result is an ``ExecResult`` whose stdout has one line per response, ``<status> <sha256 of the
body> <body bytes>``, so a ``command`` expectation reads the same on both backends; its status
is 0 when every response arrived, 1 when the connection failed, ``TIMEOUT_STATUS`` when the
whole fetch took longer than its timeout.

- veth: ``CLIENT`` is an unmodified client -- Python's ``http.client`` -- run in the node's
  namespace by the backend's ``exec`` (the node's kernel is its TCP);
- sim: :class:`HttpFetch` is the same client as a sans-IO core over a modelled TCB
  (``tcp.Tcb``), driven by the host's sim model.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field
from urllib.parse import urlsplit

TIMEOUT_STATUS = 124  # the status of a fetch that did not finish in time (timeout(1)'s)

# both clients: arguments, and a whole-run deadline (SIGALRM) that exits 124 like timeout(1)
_PREAMBLE = r"""
timeout, urls = float(sys.argv[1]), sys.argv[2:]
def expired(*_):
    print("timed out", file=sys.stderr, flush=True)
    sys.exit(124)
signal.signal(signal.SIGALRM, expired)
signal.setitimer(signal.ITIMER_REAL, timeout)
first = urllib.parse.urlsplit(urls[0])
"""

CLIENT = r"""
import hashlib, http.client, signal, sys, urllib.parse
""" + _PREAMBLE + r"""
conn = http.client.HTTPConnection(first.hostname, first.port or 80, timeout=timeout + 1)
try:
    for url in urls:
        u = urllib.parse.urlsplit(url)
        conn.request("GET", (u.path or "/") + ("?" + u.query if u.query else ""))
        resp = conn.getresponse()
        body = resp.read()
        print(resp.status, hashlib.sha256(body).hexdigest(), len(body), flush=True)
except (OSError, http.client.HTTPException) as exc:
    print(f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    sys.exit(1)
finally:
    conn.close()
"""

PIPELINED = r"""
import hashlib, signal, socket, sys, urllib.parse
""" + _PREAMBLE + r"""
host = first.hostname + ("" if (first.port or 80) == 80 else f":{first.port}")
def request(url):
    u = urllib.parse.urlsplit(url)
    path = (u.path or "/") + ("?" + u.query if u.query else "")
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\n"
            "Accept-Encoding: identity\r\n\r\n").encode()
sock = socket.create_connection((first.hostname, first.port or 80), timeout=timeout + 1)
sock.sendall(request(urls[0]))
asked, buf, done = 1, b"", 0
while done < len(urls):
    head = None
    while head is None:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head, buf = buf[:end].decode("latin-1"), buf[end + 4:]
            break
        data = sock.recv(1 << 16)
        if not data:
            print("ConnectionError: closed before the response", file=sys.stderr, flush=True)
            sys.exit(1)
        buf += data
    status = int(head.split(" ", 2)[1])
    length = next(int(v) for k, _, v in (line.partition(":") for line in head.split("\r\n")[1:])
                  if k.strip().lower() == "content-length")
    digest, got = hashlib.sha256(), 0
    while got < length:
        if not buf:
            buf = sock.recv(1 << 16)
            if not buf:
                print("ConnectionError: closed in a body", file=sys.stderr, flush=True)
                sys.exit(1)
        take = buf[:length - got]
        digest.update(take)
        got, buf = got + len(take), buf[len(take):]
        if asked < len(urls) and asked == done + 1 and 2 * got >= length:
            sock.sendall(request(urls[asked]))  # pipelined: the response is still arriving
            asked += 1
    print(status, digest.hexdigest(), length, flush=True)
    done += 1
    if asked == done < len(urls):
        sock.sendall(request(urls[asked]))
        asked += 1
sock.close()
"""
"""The ``pipeline`` client (raw socket: ``http.client`` does not pipeline): each next request
goes out once half the current response's body arrived, so it overlaps that response."""


@dataclass(frozen=True)
class Target:
    """Where a fetch connects, and the request targets it sends there, in order."""

    host: str
    port: int
    paths: tuple[str, ...]


def parse_urls(urls: tuple[str, ...]) -> Target:
    """The target of ``http://<IPv4>[:port]/path`` URLs that share scheme, host and port;
    ValueError (a one-line message) otherwise. A host name would need DNS: refused."""
    if not urls:
        raise ValueError("no URL")
    where, paths = None, []
    for url in urls:
        try:
            u = urlsplit(url)
            port = u.port or 80
        except ValueError as exc:
            raise ValueError(f"not a URL: {url!r} ({exc})") from None
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"not an http:// URL: {url!r}")
        try:
            host = str(ipaddress.IPv4Address(u.hostname))
        except ValueError:
            raise ValueError(f"{url!r}: the host must be an IPv4 address") from None
        if u.username or u.password or u.fragment or any(c in url for c in " \r\n"):
            raise ValueError(f"{url!r}: no user, fragment or white space")
        if where is not None and where != (host, port):
            raise ValueError(f"{url!r}: every URL of one fetch goes to {where[0]}:{where[1]} "
                             "(one connection)")
        where = (host, port)
        paths.append((u.path or "/") + (f"?{u.query}" if u.query else ""))
    return Target(where[0], where[1], tuple(paths))


@dataclass
class _Response:
    head: bytearray = field(default_factory=bytearray)
    status: int = 0
    length: int | None = None  # None: the body runs to the end of the connection
    got: int = 0
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)


class HttpFetch:
    """The client's HTTP side: ``requests()`` to write, ``feed`` what arrives, ``lines``
    the results so far; ``done`` once every response is complete (or the connection ended)."""

    def __init__(self, target: Target, pipeline: bool = False) -> None:
        self.target, self.pipeline = target, pipeline
        self.lines: list[str] = []
        self._asked = 1 if pipeline else len(target.paths)
        self.error = ""
        self._buf = bytearray()
        self._resp: _Response | None = _Response()

    def requests(self) -> bytes:
        """What to write first: every request, or with ``pipeline`` the first."""
        return b"".join(self._request(p) for p in self.target.paths[:self._asked])

    def due(self) -> bytes:
        """With ``pipeline``: the next request, once half the current body arrived."""
        r, done = self._resp, len(self.lines)
        if r is None or self._asked >= len(self.target.paths):
            return b""
        half = self._asked == done + 1 and r.length is not None and 2 * r.got >= r.length
        if not half and self._asked != done:  # (all answered: the next goes at once)
            return b""
        self._asked += 1
        return self._request(self.target.paths[self._asked - 1])

    def _request(self, path: str) -> bytes:
        host = self.target.host if self.target.port == 80 else \
            f"{self.target.host}:{self.target.port}"
        return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept-Encoding: identity\r\n\r\n" \
            .encode()

    @property
    def done(self) -> bool:
        return self._resp is None

    def feed(self, data: bytes) -> None:
        self._buf += data
        while self._resp is not None and self._step():
            pass

    def eof(self) -> None:
        """The server closed: a body that runs to the end is complete; anything else failed."""
        r = self._resp
        if r is not None and r.status and r.length is None:
            self._finish(r)
        elif r is not None:
            self.error = "the server closed the connection before the response"
            self._resp = None

    def _step(self) -> bool:
        r = self._resp
        if not r.status:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            head, self._buf = bytes(self._buf[:end]), self._buf[end + 4:]
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[1].isdigit() or not parts[0].startswith("HTTP/1."):
                self.error, self._resp = f"not an HTTP response: {lines[0]!r}", None
                return False
            r.status = int(parts[1])
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length" and value.strip().isdigit():
                    r.length = int(value.strip())
            if r.status in (204, 304) or 100 <= r.status < 200:
                r.length = 0
            if 100 <= r.status < 200:  # an interim response: the real one follows
                self._resp = _Response()
                return True
        take = len(self._buf) if r.length is None else min(r.length - r.got, len(self._buf))
        r.digest.update(self._buf[:take])
        r.got += take
        del self._buf[:take]
        if r.length is not None and r.got == r.length:
            self._finish(r)
            return True
        return False

    def _finish(self, r: _Response) -> None:
        self.lines.append(f"{r.status} {r.digest.hexdigest()} {r.got}")
        self._resp = _Response() if len(self.lines) < len(self.target.paths) else None
