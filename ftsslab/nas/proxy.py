# SPDX-License-Identifier: GPL-2.0-or-later
"""Answering by proxy, and when to hand off instead (B2.12, B2.14, check 19).

A device that gets a request for another device's file may fetch it there and relay the answer
("data returned to the client from a location other than the first device") instead of handing
the connection over. ``ProxyPolicy`` decides per connection: metadata (HEAD, the seed's
GETATTR) is always answered by proxy, since only a change of the working disk moves a session
(B2.14); a GET is relayed while the bytes relayed from that device stay below ``limit``, and the
request that would reach it moves the connection there instead (L201). Uploads always move.
Without a limit every such request moves the connection (claim 10's redirect).

The fetch goes to the owner's internal HTTP port ``PORT`` (clients cannot reach device
addresses, check 21): a HEAD first, whose Content-Length tells the size of a GET's answer
before anything is relayed, then the GET itself. ``Upstream`` parses what comes back; the
device writes the bytes. Both are sans-IO.

The fetch names the client (``Forwarded: for="ip:port"``, RFC 7239), so that the owner may
decide instead (B2.31, check 17): an owner with ``ask_above`` that is asked for a body that
large asks the relaying device for the client's connection (``relayed`` reads the fetch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

PORT = 4496
MAX_LIMIT = 64 << 20  # a relayed answer is buffered whole at worst: bounded by the limit
MAX_HEAD = 16 * 1024
# the owner's header fields a relayed answer keeps (Date, Server, Connection are the relay's)
RELAYED = ("content-type", "content-length", "content-range", "last-modified", "etag",
           "accept-ranges")


class Plan(Enum):
    PROXY = "proxy"      # answer it with the owner's response, relayed
    MEASURE = "measure"  # ask the owner for the size first (HEAD), then ``decide``
    HANDOFF = "handoff"  # move the connection to the owner


class ProxyPolicy:
    """One connection's record of bytes relayed from each other device."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.relayed: dict[str, int] = {}

    def plan(self, method: str) -> Plan:
        if self.limit is None or method not in ("GET", "HEAD"):
            return Plan.HANDOFF
        return Plan.PROXY if method == "HEAD" else Plan.MEASURE

    def decide(self, owner: str, size: int) -> Plan:
        """A GET of ``size`` body bytes from ``owner``: relay it, or move if that reaches the
        limit."""
        reached = self.relayed.get(owner, 0) + size >= self.limit
        return Plan.HANDOFF if reached else Plan.PROXY

    def account(self, owner: str, nbytes: int) -> None:
        self.relayed[owner] = self.relayed.get(owner, 0) + nbytes

    def why(self, owner: str, size: int) -> str:
        return (f"proxied {self.relayed.get(owner, 0)} + {size} bytes from {owner} "
                f">= {self.limit}")


def request(method: str, path: str, host: str, byte_range: str | None,
            client: tuple[str, int] | None) -> bytes:
    """The fetch sent to the owner (one request per connection), for ``client`` if named."""
    extra = f"Range: {byte_range}\r\n" if byte_range else ""
    extra += f'Forwarded: for="{client[0]}:{client[1]}"\r\n' if client else ""
    return (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
            ).encode("latin-1")


@dataclass(frozen=True)
class Relayed:
    """A fetch as the owner reads it: what is asked, and for which client."""

    method: str
    path: str
    ranged: bool
    client: tuple[str, int]


def relayed(head: bytes) -> Relayed | None:
    """The fetch in ``head`` (its first bytes), or None: incomplete, not one, no client."""
    end = head.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = head[:end].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    fields = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    host, _, port = fields.get("forwarded", "").removeprefix('for="').removesuffix('"'
                                                                            ).rpartition(":")
    if len(parts) != 3 or not host or not _number(port) or int(port) > 0xFFFF:
        return None
    return Relayed(parts[0], parts[1], "range" in fields, (host, int(port)))


def _number(text: str) -> bool:
    return text.isascii() and text.isdigit()  # not "²" (isdigit, but int() refuses it)


class UpstreamError(ValueError):
    """The owner's answer cannot be relayed (not HTTP, no length, too big, cut short)."""


@dataclass
class Upstream:
    """The owner's answer to one fetch, parsed as it arrives: ``feed`` returns the body bytes
    to relay; ``status``/``fields``/``length`` once the head is in; ``done`` at its end."""

    head_only: bool  # a HEAD: no body follows
    status: int = 0
    fields: list[tuple[str, str]] = field(default_factory=list)
    length: int = 0
    got: int = 0
    _buf: bytearray = field(default_factory=bytearray)

    @property
    def done(self) -> bool:
        return bool(self.status) and (self.head_only or self.got == self.length)

    def feed(self, data: bytes) -> bytes:
        if self.status:
            body = data[:self.length - self.got] if not self.head_only else b""
            self.got += len(body)
            return body
        self._buf += data
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEAD:
                raise UpstreamError("the owner's response head is too long")
            return b""
        lines = bytes(self._buf[:end]).decode("latin-1").split("\r\n")
        rest = bytes(self._buf[end + 4:])
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not _number(parts[1]):
            raise UpstreamError(f"not an HTTP response: {lines[0][:80]!r}")
        fields = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep and name.strip().lower() in RELAYED:
                fields.append((name.strip(), value.strip()))
        length = next((v for k, v in fields if k.lower() == "content-length"), None)
        if length is None or not _number(length):
            raise UpstreamError("the owner's response has no Content-Length")
        self.status, self.fields, self.length = int(parts[1]), fields, int(length)
        self._buf = bytearray()
        return self.feed(rest) if rest else b""

    def eof(self) -> None:
        """The owner closed: fine once the answer is whole."""
        if not self.done:
            raise UpstreamError(f"the owner's response ended at {self.got} of {self.length} "
                                "body bytes" if self.status else "the owner sent no response")
