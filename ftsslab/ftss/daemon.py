"""The node process of an `ftss` or `server` node on the veth backend.

``python -m ftsslab.ftss.daemon --scenario FILE --node NAME --state DIR`` runs inside
the node's namespace and touches ``DIR/<node>.ready`` once its ports are open. It holds
one AF_PACKET socket per interface, the node's sans-IO core (``FtssCore`` or
``ServerUnit``, built exactly as the sim builds it), and for the FTSS
the mirrored group-commit ``Store`` in ``DIR/<node>/m0`` and ``m1``. A ``Persist``
becomes a store submission; only when its fsync is done does the core hear
``on_durable`` and may acknowledge (block 154 before 160/174). A ``Forget`` appends a
tombstone. After a SIGKILL, the restarted process recovers the records that are
still live and ``FtssCore.recover`` resumes delivery.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import os
import queue
import selectors
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path

from ftsslab.lab.scenario import load_scenario
from ftsslab.lab.veth import names
from ftsslab.lab.veth.netns import call_in_netns

from .actions import Forget, Persist, Transmit
from .sim_nodes import ftss_factory, server_factory
from .store import Store, StoreClosed, StoreFull
from .veth_nodes import SERVER_TAPS

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
REC_FORGET = 15  # tombstone: the record with this key is no longer needed
OPERSTATE_POLL = 0.02  # seconds between link-state checks
COMPACT_EVERY = 4096  # tombstones between compactions


TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000


def open_tap(iface: str) -> int:
    """Attach to the TAP device ``iface`` (call inside its namespace); non-blocking fd."""
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", iface.encode(), IFF_TAP | IFF_NO_PI))
    os.set_blocking(fd, False)
    return fd


def open_port(iface: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((iface, 0))
    s.setblocking(False)
    return s


def link_up(iface: str) -> bool:
    try:
        return Path(f"/sys/class/net/{iface}/operstate").read_text().strip() in ("up", "unknown")
    except OSError:
        return False


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


def control_path(state_dir: str, node: str) -> str:
    """The node's control socket: JSON requests such as a retention replay."""
    return os.path.join(state_dir, f"{node}.ctl")


def control_request(state_dir: str, node: str, request: dict, timeout: float = 5.0) -> dict:
    """Send one JSON request to a running node process and return its JSON reply (OSError
    when nothing answers)."""
    with tempfile.TemporaryDirectory(prefix="ftsslab-") as tmp, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(os.path.join(tmp, "reply"))
        s.settimeout(timeout)
        s.sendto(json.dumps(request).encode(), control_path(state_dir, node))
        return json.loads(s.recv(4096))


class NodeProcess:
    """One loop: frames in, core actions out, store completions, timers, link state."""

    def __init__(self, core, ifaces: list[str], store: Store | None, control: str | None = None,
                 taps: dict[str, int] | None = None):
        """``taps``: port name -> file of a TAP device (a server's stack side)."""
        self.core = core
        self.store = store
        self.taps = dict(taps or {})
        self.socks = {i: open_port(i) for i in ifaces if i not in self.taps}
        self.up = {i: link_up(i) for i in self.socks}
        self.sel = selectors.DefaultSelector()
        for iface, s in self.socks.items():
            self.sel.register(s, selectors.EVENT_READ, iface)
        for iface, fd in self.taps.items():
            self.sel.register(fd, selectors.EVENT_READ, iface)
        self.durable: queue.SimpleQueue = queue.SimpleQueue()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, None)
        self.control = None
        if control is not None:
            if os.path.exists(control):
                os.unlink(control)
            self.control = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.control.bind(control)
            self.control.setblocking(False)
            self.sel.register(self.control, selectors.EVENT_READ, "control")
        self.tombstones = 0
        self.live: dict[int, int] = {}  # record id -> store seq of its live record

    # ---- actions -----------------------------------------------------------------------
    def run_actions(self, actions: list) -> None:
        for a in actions:
            if isinstance(a, Transmit):
                self.transmit(a)
            elif isinstance(a, Persist):
                try:
                    self.live[a.record_id] = self.store.submit_cb(
                        a.kind, a.record_id, a.payload, self._done(a.record_id))
                except (StoreFull, StoreClosed):  # the core answers REJECTED STORE_FULL
                    self.run_actions(self.core.on_persist_failed(a.record_id, time.time()))
            elif isinstance(a, Forget):
                self.live.pop(a.record_id, None)
                self.store.submit_cb(REC_FORGET, a.record_id, b"", lambda seq, err: None)
                self.tombstones += 1

    def transmit(self, a: Transmit) -> None:
        try:
            if a.port in self.taps:
                os.write(self.taps[a.port], a.frame)
            else:
                self.socks[a.port].send(a.frame)
        except OSError as exc:  # a down link drops the frame; the core retries elsewhere
            if exc.errno not in (errno.ENETDOWN, errno.ENXIO, errno.EMSGSIZE, errno.ENOBUFS,
                                 errno.EIO, errno.EAGAIN):  # EIO: the TAP is down
                raise
            if exc.errno == errno.EMSGSIZE:  # a configuration error worth a line in <node>.err
                print(f"{a.port}: {len(a.frame)}-byte frame exceeds the link MTU",
                      file=sys.stderr, flush=True)

    def _done(self, rid: int):
        def done(_seq: int, error: BaseException | None) -> None:  # on the store's writer
            self.durable.put((rid, error))
            os.write(self.wake_w, b"x")
        return done

    # ---- loop --------------------------------------------------------------------------
    def loop(self) -> None:
        next_poll = 0.0
        while True:
            now = time.time()
            deadline = self.core.next_deadline()
            timeout = OPERSTATE_POLL if deadline is None else max(0.0, min(deadline - now,
                                                                         OPERSTATE_POLL))
            for key, _ in self.sel.select(timeout):
                if key.data is None:
                    self._drain_durable()
                elif key.data == "control":
                    self._serve_control()
                else:
                    self._drain_port(key.data)
            now = time.time()
            if now >= next_poll:
                next_poll = now + OPERSTATE_POLL
                for iface in self.socks:
                    state = link_up(iface)
                    if state != self.up[iface]:
                        self.up[iface] = state
                        self.run_actions(self._port(iface, state, now))
            deadline = self.core.next_deadline()
            if deadline is not None and deadline <= now:
                self.run_actions(self.core.on_timer(now))
            if self.store is not None and self.tombstones >= COMPACT_EVERY:
                # queued behind every submission so far: exactly the live records survive
                self.tombstones = 0
                live = dict(self.live)
                self.store.compact(lambda r, live=live: live.get(r.key) == r.seq)

    def _port(self, iface: str, up: bool, now: float) -> list:
        if hasattr(self.core, "on_port"):
            return self.core.on_port(iface, up, now)
        self.core.set_port(iface, up)
        return []

    def _drain_durable(self) -> None:
        try:
            os.read(self.wake_r, 65536)
        except BlockingIOError:
            pass
        while True:
            try:
                rid, error = self.durable.get_nowait()
            except queue.Empty:
                return
            now = time.time()
            if error is None:
                self.run_actions(self.core.on_durable(rid, now))
            else:
                self.run_actions(self.core.on_persist_failed(rid, now))

    def _serve_control(self) -> None:
        """``{"op": "replay", "node_id": N, "since": unix time}`` -> ``{"ok", "replayed"}``."""
        try:
            data, peer = self.control.recvfrom(4096)
        except (BlockingIOError, InterruptedError):
            return
        try:
            req = json.loads(data)
            if req.get("op") != "replay" or not hasattr(self.core, "replay"):
                raise ValueError(f"unknown request {req.get('op')!r}")
            actions = self.core.replay(int(req["node_id"]), float(req["since"]), time.time())
            self.run_actions(actions)
            reply = {"ok": True, "replayed": len(actions)}
        except (ValueError, KeyError, TypeError) as exc:
            reply = {"ok": False, "error": str(exc)}
        if peer:
            self.control.sendto(json.dumps(reply).encode(), peer)

    def _drain_port(self, iface: str) -> None:
        if iface in self.taps:
            for _ in range(256):
                try:
                    frame = os.read(self.taps[iface], 65536)
                except (BlockingIOError, InterruptedError):
                    return
                self.run_actions(self.core.on_frame(iface, frame, time.time()))
            return
        s = self.socks[iface]
        for _ in range(256):
            try:
                frame, addr = s.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            if addr[2] == PACKET_OUTGOING:
                continue
            self.run_actions(self.core.on_frame(iface, frame, time.time()))


def recovered_live(store: Store) -> dict[int, tuple[int, int, bytes]]:
    """seq -> (record id, kind, payload) of the records no later tombstone forgot.

    In seq order: a tombstone forgets the record id's earlier record; a restarted core
    may reuse a forgotten id, and that later record is live again.
    """
    live: dict[int, tuple[int, tuple[int, int, bytes]]] = {}
    for r in store.recovered:
        if r.kind == REC_FORGET:
            live.pop(r.key, None)
        else:
            live[r.key] = (r.seq, (r.key, r.kind, r.payload))
    return dict(sorted(live.values()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", required=True)
    ap.add_argument("--node", required=True)
    ap.add_argument("--state", required=True, help="the lab's directory (store lives here)")
    args = ap.parse_args(argv)
    scenario = load_scenario(args.scenario)
    node = scenario.node(args.node)
    ifaces = sorted({ep.iface for ln in scenario.links for ep in (ln.a, ln.b)
                     if ep.node == node.name})
    if node.kind == "ftss":
        make, grace = ftss_factory(node, scenario)
        base = Path(args.state) / node.name
        store = Store([base / "m0", base / "m1"])
        core = make()
        proc = NodeProcess(core, ifaces, store, control_path(args.state, node.name))
        records = recovered_live(store)
        proc.live.update({rid: seq for seq, (rid, _, _) in records.items()})
        proc.run_actions(core.recover(list(records.values()), time.time(), grace=grace))
    else:
        make_unit = server_factory(node, scenario)
        lab_id = os.path.basename(os.path.normpath(args.state))
        taps = {}
        for ln in scenario.links:  # the TAP is the peer's interface, in the peer's namespace
            for ep, peer in ((ln.a, ln.b), (ln.b, ln.a)):
                if ep.node == node.name and ep.iface in SERVER_TAPS:
                    taps[ep.iface] = call_in_netns(names.ns_name(lab_id, peer.node), open_tap,
                                                   peer.iface)
        proc = NodeProcess(make_unit(next_epoch(args.state, node.name)), ifaces, None, taps=taps)
    (Path(args.state) / f"{node.name}.ready").touch()  # the backend waits for this
    proc.loop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
