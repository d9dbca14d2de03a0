"""The node process of an `ftss` or `server` node on the veth backend.

``python -m ftsslab.ftss.daemon --scenario FILE --node NAME --state DIR`` runs inside
the node's namespace and touches ``DIR/<node>.ready`` once its ports are open. It holds
one AF_PACKET socket per interface, the node's sans-IO core (``FtssCore`` or
``ServerUnit``, built exactly as the sim builds it), and a group-commit ``Store``: the
FTSS's is mirrored in ``DIR/<node>/m0`` and ``m1``, a server's in ``DIR/<node>/seen``
keeps the keys it handed to its stack. A ``Persist`` becomes a store submission; only
when its fsync is done does the core hear ``on_durable`` and may acknowledge (block 154
before 160/174). A ``Forget`` appends a tombstone. After a SIGKILL, the restarted
process recovers the records that are still live and the core's ``recover`` resumes.
Link state comes from the kernel (``LinkMonitor``: netlink inside the namespace, and
any send or receive that finds a link down), the moment it changes.
"""

from __future__ import annotations

import errno
import fcntl
import functools
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

from ftsslab.lab.veth import names
from ftsslab.lab.veth.control import control_path, send_reply
from ftsslab.lab.veth.linkstate import LinkMonitor, iface_mtu
from ftsslab.lab.veth.netns import call_in_netns
from ftsslab.lab.veth.nodeargs import node_args
from ftsslab.lab.veth.ring import PacketRing

from .actions import Forget, Persist, Transmit
from .kinds import SERVER_TAPS
from .sim_nodes import ftss_factory, server_factory
from .store import Store

REC_FORGET = 15  # tombstone: the records whose ids it lists (8 bytes each) are not needed
COMPACT_EVERY = 1 << 16  # forgotten records between compactions (each reads the whole log)


TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000


def open_tap(iface: str) -> int:
    """Attach to the TAP device ``iface`` (call inside its namespace); non-blocking fd."""
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", iface.encode(), IFF_TAP | IFF_NO_PI))
    os.set_blocking(fd, False)
    return fd


def next_epoch(state_dir: str, node: str) -> int:
    """A msg-id epoch never used before by this node: a counter kept (fsync'd) in the lab dir.

    Wall-clock seconds would repeat for a unit killed and restarted within one second,
    and the FTSS would take its new packets for retransmits of old ones.
    """
    path = Path(state_dir) / f"{node}.epoch"
    try:
        epoch = int(path.read_text()) + 1
    except (OSError, ValueError):
        epoch = 1
    with open(path, "w") as f:
        f.write(str(epoch))
        f.flush()
        os.fsync(f.fileno())
    return epoch & 0xFFFFFFFF


class NodeProcess:
    """One loop: frames in, core actions out, store completions, timers, link state.

    A core that raises is a bug, not bad input: the exception is counted
    (``internal_errors``, answered by the control request ``stats``) and its traceback
    goes to ``<node>.err``; the node keeps serving, and the run that started it fails
    (``VethBackend.problems``).
    """

    def __init__(self, core, ifaces: list[str], store: Store | None, control: str | None = None,
                 taps: dict[str, int] | None = None):
        """``taps``: port name -> file of a TAP device (a server's stack side)."""
        self.core = core
        self.store = store
        self.taps = dict(taps or {})
        # a receive ring per port: frames are read from shared memory, not one recv each
        self.socks = {i: PacketRing(i, iface_mtu(i)) for i in ifaces if i not in self.taps}
        # port -> how a frame goes out on it: the packet socket's send, or a write to the TAP
        self._send = {i: s.sock.send for i, s in self.socks.items()}
        self._send.update({i: functools.partial(os.write, fd) for i, fd in self.taps.items()})
        self.links = LinkMonitor(list(self.socks))
        self.sel = selectors.DefaultSelector()
        for iface, s in self.socks.items():
            self.sel.register(s, selectors.EVENT_READ, iface)
        for iface, fd in self.taps.items():
            self.sel.register(fd, selectors.EVENT_READ, iface)
        self.sel.register(self.links, selectors.EVENT_READ, _LINKS)
        self.durable: list[tuple[int, BaseException | None]] = []  # filled by the writer
        self._woken = False  # a wake-up byte is in the pipe: the writer need not write one
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, _DURABLE)
        self.control = None
        if control is not None:
            if os.path.exists(control):
                os.unlink(control)
            self.control = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.control.bind(control)
            self.control.setblocking(False)
            self.sel.register(self.control, selectors.EVENT_READ, _CONTROL)
        self.internal_errors = 0
        self.counters: dict[str, int] = {}  # what the process itself dropped (MTU, no buffer)
        self._seen_down: set[str] = set()  # a send or receive found the link down
        self.tombstones = 0
        self.live: dict[int, int] = {}  # record id -> store seq of its live record
        self._flushes = hasattr(core, "flush")
        self._batch = hasattr(core, "on_durable_batch")
        self._persists: list[Persist] = []  # this turn's records, submitted together
        self._forgets: list[int] = []  # this turn's forgotten record ids: one tombstone
        for iface, up in self.links.up.items():  # a link that is down at start
            if not up:
                self.run_actions(self._call("on_port", iface, False, time.time()))

    def _call(self, method: str | Callable[..., list], *args) -> list:
        """``core.<method>(*args)`` (or a bound method of the core, looked up once by a loop
        that calls it per frame); an exception is a bug of the core: counted and logged."""
        try:
            return (getattr(self.core, method) if isinstance(method, str) else method)(*args)
        except Exception:
            self.internal_errors += 1
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
            return []

    def _bump(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1

    # ---- actions -----------------------------------------------------------------------
    def run_actions(self, actions: list) -> None:
        """Frames go out at once; records wait for ``flush_store`` (end of the loop's turn)."""
        for a in actions:
            kind = type(a)
            if kind is Transmit:
                try:
                    self._send[a.port](a.frame)
                except OSError as exc:
                    self._send_failed(a, exc)
            elif kind is Persist:
                self._persists.append(a)
            elif kind is Forget:
                self.live.pop(a.record_id, None)
                self._forgets.append(a.record_id)

    def flush_store(self) -> None:
        """This turn's records as one submission, its forgotten ids as one tombstone."""
        if self.store is None:
            return
        while self._persists or self._forgets:
            persists, self._persists = self._persists, []
            items = [(a.kind, a.record_id, a.payload, self._done(a.record_id, a.awaited))
                     for a in persists]
            if self._forgets:
                forgets, self._forgets = self._forgets, []
                items.append((REC_FORGET, 0, struct.pack(f"!{len(forgets)}Q", *forgets),
                              _ignore))
                self.tombstones += len(forgets)
            refused = []
            for a, seq in zip(persists, self.store.submit_many(items), strict=False):
                if isinstance(seq, int):
                    self.live[a.record_id] = seq
                    continue
                if isinstance(seq, ValueError):  # a record the store cannot hold: a bug
                    self.internal_errors += 1
                    print(f"store refused record {a.record_id}: {seq}", file=sys.stderr)
                refused.append(a.record_id)  # full or closed: REJECTED STORE_FULL
            for rid in refused:
                self.run_actions(self._call("on_persist_failed", rid, time.time()))

    def _send_failed(self, a: Transmit, exc: OSError) -> None:
        """The frame is lost (the core retries it); what the error says is counted."""
        if exc.errno in (errno.ENETDOWN, errno.ENXIO) and a.port in self.socks:
            self._seen_down.add(a.port)  # a link down before netlink said so
        elif exc.errno == errno.EMSGSIZE:  # a configuration error worth a line in <node>.err
            if not self.counters.get("dropped_mtu"):
                print(f"{a.port}: {len(a.frame)}-byte frame exceeds the link MTU",
                      file=sys.stderr, flush=True)
            self._bump("dropped_mtu")
        elif exc.errno in (errno.ENOBUFS, errno.EAGAIN, errno.EIO, errno.ENETDOWN,
                           errno.ENXIO):  # EIO: the TAP is down
            self._bump("dropped_tx")
        else:
            raise exc

    def _done(self, rid: int, awaited: bool):
        """The store's completion of record ``rid``; one nothing waits for wakes the loop
        only if it failed (the unit's seen keys: a commit need not cost a turn)."""
        def done(_seq: int, error: BaseException | None) -> None:  # on the store's writer
            if error is None and not awaited:
                return
            self.durable.append((rid, error))
            if not self._woken:  # one wake-up for a whole group commit, not one per record
                self._woken = True
                os.write(self.wake_w, b"x")
        return done

    # ---- loop --------------------------------------------------------------------------
    def loop(self) -> None:
        select, next_deadline = self.sel.select, self.core.next_deadline
        deadline = next_deadline()
        while True:
            events = select(None if deadline is None else max(0.0, deadline - time.time()))
            if len(events) > 1:  # completed commits first: their acks free the senders' windows
                events.sort(key=lambda e: e[0].data is not _DURABLE)
            for key, _ in events:
                if key.data is _DURABLE:
                    self._drain_durable()
                elif key.data is _CONTROL:
                    self._serve_control()
                elif key.data is _LINKS:
                    self._link_changes(self.links.changes())
                else:
                    self._drain_port(key.data)
            if self._seen_down:
                self._link_changes([])
            now = time.time()
            deadline = next_deadline()
            if deadline is not None and deadline <= now:
                self.run_actions(self._call("on_timer", now))
            if self._flushes:  # the core's end of a batch of events
                self.run_actions(self._call("flush", now))
            self.flush_store()
            if self.tombstones >= COMPACT_EVERY:
                # queued behind every submission so far: exactly the live records survive
                self.tombstones = 0
                live = dict(self.live)
                self.store.compact(lambda r, live=live: live.get(r.key) == r.seq)
            deadline = next_deadline()

    def _link_changes(self, changes: list[tuple[str, bool]]) -> None:
        """Tell the core of every link that went down or up (netlink, or a failed send)."""
        while True:
            failed, self._seen_down = self._seen_down, set()
            for iface in sorted(failed):
                changes += self.links.mark(iface, False)
            if not changes:
                return
            for iface, up in changes:
                self.run_actions(self._call("on_port", iface, up, time.time()))
            changes = []

    def _drain_durable(self) -> None:
        try:
            os.read(self.wake_r, 65536)
        except BlockingIOError:
            pass
        self._woken = False  # first: a record done from here on wakes the loop again
        done, self.durable = self.durable, []
        now, durable = time.time(), []
        for rid, error in done:  # in commit order; a core with on_durable_batch hears each
            if error is None:    # commit's records at once (to merge their acknowledgments)
                durable.append(rid)
                continue
            self._durable(durable, now)
            durable = []
            self.run_actions(self._call("on_persist_failed", rid, now))
        self._durable(durable, now)

    def _durable(self, rids: list[int], now: float) -> None:
        if not rids:
            return
        if self._batch:
            self.run_actions(self._call("on_durable_batch", rids, now))
            return
        on_durable = self.core.on_durable
        for rid in rids:
            self.run_actions(self._call(on_durable, rid, now))

    def _serve_control(self) -> None:
        """JSON requests: ``{"op": "stats"}`` -> the core's counters and the process's own;
        ``{"op": "report"}`` -> the core's ``report()``;
        ``{"op": "replay", "node_id": N, "since": unix time}`` -> ``{"ok", "replayed"}``."""
        try:
            data, peer = self.control.recvfrom(65536)
        except (BlockingIOError, InterruptedError):
            return
        try:
            req = json.loads(data)
            op = req.get("op") if isinstance(req, dict) else None
            if op == "stats":
                reply = {"ok": True, "internal_errors": self.internal_errors,
                         "stats": dict(getattr(self.core, "stats", {})),
                         "process": dict(self.counters)}
            elif op == "report" and hasattr(self.core, "report"):
                reply = {"ok": True, "report": self.core.report()}
            elif op == "replay" and hasattr(self.core, "replay"):
                actions = self._call("replay", int(req["node_id"]), float(req["since"]),
                                     time.time())
                self.run_actions(actions)
                reply = {"ok": True, "replayed": len(actions)}
            else:
                raise ValueError(f"unknown request {op!r}")
        except (ValueError, KeyError, TypeError) as exc:
            reply = {"ok": False, "error": str(exc)}
        send_reply(self.control, peer, reply)

    def _drain_port(self, iface: str) -> None:
        """What arrived on a port, all with one timestamp (a NIC's batch has one too)."""
        if iface in self.taps:
            fd, frames = self.taps[iface], []
            for _ in range(256):
                try:
                    frames.append(os.read(fd, 65536))
                except (BlockingIOError, InterruptedError):
                    break
        else:
            ring = self.socks[iface]
            frames = ring.frames(256)
            if not frames and ring.pending_error() in (errno.ENETDOWN, errno.ENXIO):
                self._seen_down.add(iface)  # the socket reports its link going down once
        on_frame, call, run, now = self.core.on_frame, self._call, self.run_actions, time.time()
        for frame in frames:
            run(call(on_frame, iface, frame, now))
        if frames and self._flushes:
            # the batch ends here: a unit acknowledges what it just handed up at once (a
            # SIGKILL between the two would have the FTSS deliver it again)
            run(call("flush", now))


_DURABLE, _CONTROL, _LINKS = object(), object(), object()  # selector keys besides ports


def _ignore(_seq: int, _error: BaseException | None) -> None:
    """A tombstone's completion: nothing waits for it."""


def recovered_live(store: Store) -> dict[int, tuple[int, int, bytes]]:
    """seq -> (record id, kind, payload) of the records no later tombstone forgot.

    In seq order: a tombstone forgets the record id's earlier record; a restarted core
    may reuse a forgotten id, and that later record is live again.
    """
    live: dict[int, tuple[int, tuple[int, int, bytes]]] = {}
    for r in store.recovered:
        if r.kind == REC_FORGET:
            for (rid,) in struct.iter_unpack("!Q", r.payload[: len(r.payload) // 8 * 8]):
                live.pop(rid, None)
        else:
            live[r.key] = (r.seq, (r.key, r.kind, r.payload))
    return dict(sorted(live.values()))


def main(argv: list[str] | None = None) -> int:
    a = node_args(__doc__.splitlines()[0], argv)  # the store lives in the lab's directory
    scenario, node, state = a.scenario, a.node, str(a.state)
    ifaces = sorted({ep.iface for ln in scenario.links for ep in (ln.a, ln.b)
                     if ep.node == node.name})
    base = a.state / node.name
    taps = {}
    if node.kind == "ftss":
        make, grace = ftss_factory(node, scenario)
        store = Store([base / "m0", base / "m1"])  # RAID 1 (seed 000: RAID 142)
        core = make()
    else:
        make_unit = server_factory(node, scenario)
        lab_id = a.state.name
        for ln in scenario.links:  # the TAP is the peer's interface, in the peer's namespace
            for ep, peer in ((ln.a, ln.b), (ln.b, ln.a)):
                if ep.node == node.name and ep.iface in SERVER_TAPS:
                    taps[ep.iface] = call_in_netns(names.ns_name(lab_id, peer.node), open_tap,
                                                   peer.iface)
        store, grace = Store([base / "seen"]), 0.0  # the keys it handed to its stack
        core = make_unit(next_epoch(state, node.name))
    proc = NodeProcess(core, ifaces, store, control_path(state, node.name), taps=taps)
    records = recovered_live(store)
    proc.live.update({rid: seq for seq, (rid, _, _) in records.items()})
    proc.run_actions(core.recover(list(records.values()), time.time(), grace=grace))
    proc.flush_store()
    a.ready()
    proc.loop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
