# SPDX-License-Identifier: GPL-2.0-or-later
"""What the NAS processes (switch control, device) share: one thread, a ``selectors``
loop over their sockets, timers on the monotonic clock, the control socket
(``<lab dir>/<node>.ctl``, see ``ftsslab.lab.veth.control``) and an event log
(``<lab dir>/<node>.events``, one JSON line per state change or table event), which the
node's ``report`` returns.

A handler that raises is a bug: it is counted in ``internal_errors`` (which fails the
run, see ``VethBackend.problems``) with its traceback on stderr, and the loop goes on.
"""

from __future__ import annotations

import fcntl
import heapq
import itertools
import json
import os
import selectors
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from ftsslab.lab.veth.control import control_path, send_reply

from .segment import decode_frame

EVENTS_KEPT = 2000    # events a report returns (the newest)


class NasProcess:
    def __init__(self, node: str, lab_dir: str) -> None:
        self.node, self.lab_dir = node, lab_dir
        self.sel = selectors.DefaultSelector()
        self.internal_errors = 0
        self.events: list[dict] = []
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cores: list[tuple[Callable[[], float | None], Callable[[float], None]]] = []
        self._tick_at: float | None = None
        self._events_file = open(Path(lab_dir) / f"{node}.events", "a")  # noqa: SIM115
        path = control_path(lab_dir, node)
        if os.path.exists(path):
            os.unlink(path)
        self.control = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.control.bind(path)
        self.control.setblocking(False)
        self.watch(self.control, self._serve_control)
        self.requests: dict[str, Callable[[dict], dict]] = {
            "stats": lambda req: {"internal_errors": self.internal_errors,
                                  "stats": self.stats()},
            "report": lambda req: {"report": self.report()},
        }

    # ---- hooks -----------------------------------------------------------------------------
    def stats(self) -> dict:
        return {}

    def report(self) -> dict:
        return {"events": self.events[-EVENTS_KEPT:]}

    # ---- loop ------------------------------------------------------------------------------
    def watch(self, sock, handler: Callable[[], None],
              events: int = selectors.EVENT_READ) -> None:
        """Call ``handler()`` when ``sock`` is readable (or, with ``events``, writable)."""
        self.sel.register(sock, events, handler)

    def unwatch(self, sock) -> None:
        try:
            self.sel.unregister(sock)
        except (KeyError, ValueError):
            pass

    def at(self, when: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` at monotonic time ``when`` (or soon after)."""
        heapq.heappush(self._timers, (when, next(self._seq), fn))

    def timed(self, deadline: Callable[[], float | None], fire: Callable[[float], None]) -> None:
        """A sans-IO core's timer: ``fire(now)`` once ``deadline()`` has passed. One loop
        timer serves them all; ``arm`` after every change to a core."""
        self._cores.append((deadline, fire))

    def arm(self) -> None:
        when = min((d for d in (deadline() for deadline, _ in self._cores) if d is not None),
                   default=None)
        if when is not None and (self._tick_at is None or when < self._tick_at):
            self._tick_at = when
            self.at(when, self._tick)

    def _tick(self) -> None:
        now, self._tick_at = time.monotonic(), None
        for deadline, fire in self._cores:
            d = deadline()
            if d is not None and d <= now:
                fire(now)
        self.arm()

    def read_segments(self, sock: socket.socket, on_segment: Callable[..., None]) -> None:
        """The TCH frames waiting on ``sock``: ``on_segment(segment or None if malformed,
        now)`` for each, then ``arm``."""
        now = time.monotonic()
        for _ in range(256):
            try:
                frame = sock.recv(65536)
            except OSError:  # nothing more, or ENETDOWN once (the link went down)
                break
            on_segment(decode_frame(frame), now)
        self.arm()

    def event(self, kind: str, **detail) -> None:
        rec = {"t": time.monotonic(), "node": self.node, "kind": kind, **detail}
        self.events.append(rec)
        del self.events[:-EVENTS_KEPT]
        self._events_file.write(json.dumps(rec, sort_keys=True) + "\n")
        self._events_file.flush()

    def guarded(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:  # noqa: BLE001 -- a bug in a handler: counted, the node lives on
            self.internal_errors += 1
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()

    def loop(self) -> None:
        self.arm()  # the cores' timers due from the start (a heartbeat's first)
        while True:
            timeout = None
            if self._timers:
                timeout = max(0.0, self._timers[0][0] - time.monotonic())
            for key, _ in self.sel.select(timeout):
                self.guarded(key.data)
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                _, _, fn = heapq.heappop(self._timers)
                self.guarded(fn)

    # ---- control ---------------------------------------------------------------------------
    def _serve_control(self) -> None:
        try:
            data, peer = self.control.recvfrom(65536)
        except (BlockingIOError, InterruptedError):
            return
        try:
            req = json.loads(data)
            op = req.get("op") if isinstance(req, dict) else None
            handler = self.requests.get(op)
            if handler is None:
                raise ValueError(f"unknown request {op!r} (known: {', '.join(self.requests)})")
            reply = {"ok": True, **handler(req)}
        except (ValueError, KeyError, TypeError, LookupError) as exc:
            reply = {"ok": False, "error": str(exc)}
        send_reply(self.control, peer, reply)


def read_datagrams(sock: socket.socket, limit: int = 64) -> list[tuple[bytes, str]]:
    """What a UDP socket holds now (up to ``limit``): (payload, sender's address)."""
    out = []
    for _ in range(limit):
        try:
            data, (ip, _) = sock.recvfrom(65536)
        except OSError:  # none left, or ENETDOWN once (the link went down)
            break
        out.append((data, ip))
    return out


def send_segment(raw: socket.socket, seg) -> None:
    """A TCH segment out of a raw IP socket (``segment.Segment``)."""
    try:
        raw.sendto(seg.encode(), (seg.dst, 0))
    except OSError:
        pass  # like a lost segment: retransmitted after the RTO


SO_TIMESTAMPNS = 35


def packet_socket(iface: str, code: bytes | None = None, stamps: bool = False) -> socket.socket:
    """A non-blocking AF_PACKET socket on ``iface`` receiving what ``code`` (a BPF filter
    from ``bpf.tcp_filter``) accepts, never this host's own outgoing frames; ``stamps``:
    with the kernel's receive time of each frame (``recv_stamped``)."""
    from .bpf import attach

    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        if stamps:
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        if code is not None:
            attach(s, code)
        s.setsockopt(263, 23, 1)  # SOL_PACKET, PACKET_IGNORE_OUTGOING
        s.bind((iface, 0x0003 if code is not None else 0))  # ETH_P_ALL once filtered
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


def iface_mac(iface: str) -> str:
    """An interface's MAC in this namespace (SIOCGIFHWADDR: /sys is the root namespace's)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        got = fcntl.ioctl(s, 0x8927, struct.pack("256s", iface.encode()))
    return ":".join(f"{b:02x}" for b in got[18:24])


def recv_stamped(sock: socket.socket) -> tuple[bytes, int]:
    """One frame and its kernel receive time (ns, CLOCK_REALTIME): frames of different
    sockets are read in any order, their stamps say which came first."""
    frame, anc, _, _ = sock.recvmsg(65536, 64)
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack_from("qq", data)
            return frame, sec * 10**9 + nsec
    return frame, time.time_ns()
