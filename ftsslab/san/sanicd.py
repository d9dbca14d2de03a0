"""The process of a `sanic` node on veth: its ``SanicCore`` driven from the port's packet ring,
the clock and the node's control socket.

One thread: it polls the ring (behind ``port.roce_filter``: ARP and RoCEv2 for the node's
address) and the control socket (``{"op": "verb", "args": ...}`` from `verb` steps and
``ftsslab san``; ``stats``, ``report``, ``events``), fires the core's timers on the monotonic
clock, and appends every event the core logs to ``<lab dir>/<node>.events`` (``logged``
expectations read it). A handler that raises is a bug: counted in ``internal_errors`` (which
fails the run), its traceback on stderr, and the loop goes on.
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from ftsslab.lab.veth.control import control_path, send_reply
from ftsslab.lab.veth.nodeargs import node_args
from ftsslab.lab.veth.ring import PacketRing

from .kinds import sanic_config
from .node import SanicCore
from .port import roce_filter

BATCH = 256  # frames taken from the ring at a time
BATCHES = 8  # ... and batches before the control socket and the timers get their turn
RING_BYTES = 16 << 20  # 8192 slots at MTU 1500: a window of 64 KiB READs and what comes back
EVENTS_PER_REPLY = 100  # events in one control reply (it must fit in a datagram)


class Sanicd:
    def __init__(self, core: SanicCore, lab_dir: str) -> None:
        self.core = core
        cfg = core.cfg
        mtu = int(Path(f"/sys/class/net/{cfg.iface}/mtu").read_text())
        self.ring = PacketRing(cfg.iface, mtu, RING_BYTES)
        self.ring.attach_filter(roce_filter(cfg.ip))
        path = control_path(lab_dir, cfg.name)
        if os.path.exists(path):
            os.unlink(path)
        self.control = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.control.bind(path)
        self.control.setblocking(False)
        self.events_file = open(Path(lab_dir) / f"{cfg.name}.events", "a")  # noqa: SIM115
        self.logged = 0
        self.internal_errors = 0
        self.send_errors = 0
        self._poll = select.poll()
        self._poll.register(self.ring.fileno(), select.POLLIN)
        self._poll.register(self.control.fileno(), select.POLLIN)
        self._watched: dict[int, Callable[[], None]] = {}
        self.after_turn: Callable[[], None] = lambda: None  # an application's own work

    def watch(self, fd: int, ready: Callable[[], None]) -> None:
        """Serve one more descriptor in the loop (an application's socket): ``ready`` when it
        can be read."""
        self._watched[fd] = ready
        self._poll.register(fd, select.POLLIN)

    def unwatch(self, fd: int) -> None:
        self._watched.pop(fd, None)
        self._poll.unregister(fd)

    def loop(self) -> None:
        while True:
            due = self.core.next_deadline()
            wait = -1 if due is None else max(0.0, due - time.monotonic()) * 1000
            for fd, ev in self._poll.poll(wait):
                if fd == self.control.fileno():
                    self._guarded(self._serve)
                elif fd in self._watched:
                    self._guarded(self._watched[fd])
                elif ev & select.POLLERR:
                    self.ring.pending_error()
            self._guarded(self._frames)
            due = self.core.next_deadline()
            if due is not None and due <= time.monotonic():
                self._guarded(lambda: self.transmit(self.core.on_timer(time.monotonic())))
            self._guarded(self.after_turn)
            self._log()

    def _guarded(self, fn) -> None:
        try:
            fn()
        except Exception:  # a bug in the core: counted, and the node goes on
            self.internal_errors += 1
            traceback.print_exc(file=sys.stderr)

    def _frames(self) -> None:
        iface = self.core.cfg.iface
        for _ in range(BATCHES):
            batch = self.ring.frames(BATCH)
            if not batch:
                return
            for data in batch:
                self.transmit(self.core.on_frame(iface, data, time.monotonic()))

    def transmit(self, out) -> None:
        """Frames out of the port (the core's ``Transmit`` actions)."""
        for t in out:
            try:
                self.ring.send(t.frame)
            except OSError:  # a full queue is a loss the QP recovers from
                self.send_errors += 1

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.control.recvfrom(1 << 16)
            except BlockingIOError:
                return
            try:
                req = json.loads(data)
                reply = self._request(req)
            except Exception as exc:  # a bad request, or a bug: the asker hears of it
                self.internal_errors += not isinstance(exc, ValueError)
                traceback.print_exc(file=sys.stderr)
                reply = {"ok": False, "error": repr(exc)}
            send_reply(self.control, peer, reply)

    def _request(self, req: dict) -> dict:
        op = req.get("op")
        if op == "verb":
            self.transmit(self.core.verb(req["args"], time.monotonic()))
            self._log()
            return {"ok": True}
        if op == "stats":
            return {"ok": True, "internal_errors": self.internal_errors,
                    "stats": {**self.core.stats(), "send_errors": self.send_errors}}
        if op == "events":  # what the node logged from index `since` on (`ftsslab san`)
            since = int(req.get("since", 0))
            return {"ok": True, "events": self.core.events[since:since + EVENTS_PER_REPLY],
                    "total": len(self.core.events)}
        if op == "report":
            return {"ok": True, "report": {"stats": self.core.stats(),
                                           "events": self.core.events[-200:]}}
        return {"ok": False, "error": f"unknown request {op!r}"}

    def _log(self) -> None:
        new = self.core.events[self.logged:]
        if new:
            self.events_file.write("".join(json.dumps(e, sort_keys=True) + "\n" for e in new))
            self.events_file.flush()
            self.logged += len(new)


def main(argv: list[str] | None = None) -> int:
    a = node_args(__doc__.splitlines()[0], argv)
    d = Sanicd(SanicCore(sanic_config(a.node, a.scenario), time.monotonic()), str(a.state))
    a.ready()
    d.loop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
