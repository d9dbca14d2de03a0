# SPDX-License-Identifier: GPL-2.0-or-later
"""A NAS device's process: ``python -m ftsslab.nas.device --scenario F --node D --state
LABDIR``, run inside the device's namespace.

It serves the device's volume over HTTP/1.1 on the VIP (``http.HttpServer`` per client
connection, on kernel TCP sockets: any unmodified client works) and moves live
connections between devices with the first embodiment of TCH:

- as the first device (``giver.Giver``): on a ``handoff`` request, or when the root
  directory gives a request's path to another device (claim 10), it gives the connection
  away; the switch is reprogrammed by XAP change_connection, acked before END (D2.3);
- as the second device (``tch.TchListener``): on SET it restores the connection in repair
  mode (the duplicate TCB), on END it leaves repair mode (MORPH) and serves the client
  from the HTTP state that came with it.

TCH segments go to the device's own address and port ``vport``: an nftables input rule
keeps them from the kernel, an AF_PACKET socket hands them to this process and a raw
socket sends its own. The second embodiment's messages (UDP 4494) come and go on
``udp_tch.TchPort``; with the switch's ``tch: messages`` the device gives connections away
by them (``udp_tch.MessageGiver``), and it always takes them both ways.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import secrets
import selectors
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ftsslab.fast.tch import TCH_INITIATOR_OTHER, TCH_INITIATOR_SECOND
from ftsslab.fast.xap import XAP_OP_CHANGE_CONNECTION, XAP_OP_QUERY, XAP_UDP_PORT
from ftsslab.lab.veth.netns import write_sysctl
from ftsslab.lab.veth.nodeargs import node_args

from . import http, proxy, repair, staging, tch, xap
from . import tch_messages as tm
from .bpf import tcp_filter
from .cluster import ECHO_PORT, Cluster, cluster_of, file_bytes, nonce_path, read_nonces
from .failover_core import asked_to
from .giver import GUARD, SNDBUF, Gift, Giver, NotEstablished, Target, tcp_counts
from .pair import follow_paths
from .process import NasProcess, packet_socket, send_segment
from .reports import DeviceReports
from .segment import ACK, Segment
from .taker import MessageTaker
from .udp_tch import MessageGiver, TchPort
from .volume import RootDirectory, Volume, VolumeError

REPLICA_MTIME_NS = 1_767_225_600 * 10**9  # 2026-01-01: the volume files' modification time
WRITE_TURN = 1 << 20  # body bytes one connection writes per turn of the loop
FETCH_LIMIT = 10.0  # seconds a proxied answer may take to arrive whole from its owner
UDP_FLOWS_KEPT = 4096  # UDP flows a device remembers (the oldest is forgotten first)
RCVBUF = 64 * 1024    # SO_RCVBUF of client connections (the kernel doubles it)
PREDICTIVE_KEEPALIVE = 2.0  # a predictive session without a word this long fails (L336)
NEIGH_PROBE_MS = 100  # ARP probe interval with a standby link (Fig. 12)


@dataclass
class Client:
    """One client connection served here."""

    sock: socket.socket
    core: http.HttpServer
    peer: tuple[str, int]
    out: bytearray = field(default_factory=bytearray)  # SendBytes not yet written
    chunk: tuple[str, int, bytes] | None = None  # SendFile: path, offset, bytes left
    closing: bool = False
    gift: Gift | None = None  # set while the connection is being given away
    moving: tuple[socket.socket, bytearray] | None = None  # its partial upload, on the way
    ready: Callable[[], None] | None = None  # its selector handler
    policy: proxy.ProxyPolicy | None = None  # answer another device's file by proxy, or move
    fetch: Fetch | None = None  # the owner's answer being fetched for it
    # the switch's ``predictive``: a TCH session per other device from the start (check 16)
    predictive: dict[str, tm.FirstDevice] = field(default_factory=dict)
    since: float = field(default_factory=time.monotonic)  # here since (load balancing)
    relay: bool = False  # another device's fetch (``proxy.PORT``), not a client's connection
    held: bytearray | None = None  # a fetch held while its first device is asked (check 17)
    refetch: http.NotHere | None = None  # handed over when its owner asked: if not, fetch again


@dataclass
class Fetch:
    """One request to another device's internal port, for a client's NotHere."""

    sock: socket.socket
    notice: http.NotHere
    up: proxy.Upstream
    request: bytes
    measure: bool  # a HEAD for a GET's size: decide after it
    sent: bool = False


class NasDevice(NasProcess):
    def __init__(self, cluster: Cluster, node: str, files: dict, redirect: bool,
                 lab_dir: str, proxy_limit: int | None = None,
                 ask_above: int | None = None) -> None:
        super().__init__(node, lab_dir)
        self.cluster, self.me = cluster, cluster.devices[node]
        self.volume_dir = Path(lab_dir) / node / "volume"
        self.files, self.redirect, self.proxy_limit = files, redirect, proxy_limit
        self.ask_above = ask_above
        self.asks: dict[int, Client] = {}  # TCH session id -> the fetch held meanwhile
        self.device_ips = {d.ip for d in cluster.devices.values()}
        self.root = RootDirectory(cluster.root) if cluster.root else None
        self.clients: dict[socket.socket, Client] = {}
        self.uploads: dict[tuple[int, str], object] = {}  # (id(client), path) -> Upload
        # partial uploads of connections on their way here: (client, path) -> (Upload, expiry)
        self.staged: dict[tuple[tuple[str, int], str], tuple[object, float]] = {}
        # second device: restored, not yet morphed: TCH peer -> (socket, HTTP state, client)
        # (the second embodiment's are ``taker.MessageTaker``'s)
        self.incoming: dict[tuple[str, int], tuple[socket.socket, bytes, tuple[str, int]]] = {}
        # the UDP service: flows echoed here (peer -> datagrams), and moves asked (xid -> ...)
        self.udp_flows: dict[tuple[str, int], int] = {}
        self.udp_moves: dict[int, tuple[tuple[str, int], str]] = {}
        # second device, ``tcp-option`` carrier: claims awaiting the switch's ack (xid -> TCH
        # peer, checkpoint), and flows given back after a claim without ack
        self.claims: dict[int, tuple[tuple[str, int], repair.TcpCheckpoint]] = {}
        self.giving_back: set[int] = set()
        self.asking_back: dict[int, tuple[xap.FlowKey, str]] = {}  # query xid -> flow, first
        self.asked: dict[int, tuple[tuple[str, int], str, str]] = {}  # accepted requests
        self.counters = {"accepted": 0, "handoffs_in": 0, "tch_malformed": 0, "echoed": 0}
        self.reports: DeviceReports | None = None  # heartbeats (the switch's failover)
        self.requests.update(handoff=self._request_handoff, health=self._set_health,
                             sessions=lambda req: {"sessions": self.sessions()})

    # ---- set-up -------------------------------------------------------------------------------
    def setup(self) -> None:
        c, me = self.cluster, self.me
        for name, value in (("net.ipv4.conf.all.arp_ignore", "1"),
                            ("net.ipv4.conf.all.arp_announce", "2"),
                            (f"net.ipv4.conf.{me.iface}.arp_ignore", "1"),
                            (f"net.ipv4.conf.{me.iface}.arp_announce", "2")):
            write_sysctl(name, value)
        if c.pair is not None:  # Fig. 12: the route over the standby's link once ours is down
            write_sysctl("net.ipv4.conf.all.ignore_routes_with_linkdown", "1")
            # ARP probes every 100 ms, not 1 s: the client is resolved on the standby's link
            # as soon as the standby bridges it, not a second after the first probe it lost
            for iface in os.listdir("/proc/sys/net/ipv4/neigh"):
                if iface not in ("default", "lo"):
                    write_sysctl(f"net.ipv4.neigh.{iface}.retrans_time_ms", str(NEIGH_PROBE_MS))
        if me.alt_iface is not None:  # and each connection over the link it comes in on
            net = f"{ipaddress.IPv4Interface(f'{me.ip}/{c.prefix_len}').network}"
            follow_paths(_nft(), me.iface, me.alt_iface, me.ip, net)
        # the VIP on lo (LVS-DR style): replies leave with src = VIP (B2.6, L394)
        subprocess.run(["ip", "addr", "replace", f"{c.vip}/32", "dev", "lo"], check=True,
                       capture_output=True, timeout=30)
        self.nft = _nft()
        self.nft(f"add table inet {GUARD}\n"
                 f"add chain inet {GUARD} input {{ type filter hook input priority 0; }}\n"
                 f"flush chain inet {GUARD} input\n"
                 # TCH segments are the process's (AF_PACKET), never the kernel's
                 f"add rule inet {GUARD} input ip daddr {me.ip} tcp dport {c.vport} drop\n"
                 f"add rule inet {GUARD} input ip daddr {me.ip} tcp sport {c.vport} drop")
        self._volume()
        self.storage = Volume(self.volume_dir)
        nonces = read_nonces(wait_file(nonce_path(self.lab_dir, c.switch)))
        # a restarted device starts at a new xid: the switch remembers applied (nonce, xid)
        self.xap = xap.XapClient(nonces[self.me.name], c.control_ip,
                                 first_xid=secrets.randbits(16))
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # a small receive queue: what a checkpoint carries of an upload in flight
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        self.listener.bind((c.vip, c.vport))
        self.listener.listen(128)
        self.listener.setblocking(False)
        self.watch(self.listener, lambda: self._accept(self.listener))
        # the internal port other devices fetch from when they answer by proxy (proxy.py)
        self.internal = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.internal.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.internal.bind((me.ip, proxy.PORT))
        self.internal.listen(16)
        self.internal.setblocking(False)
        self.watch(self.internal, lambda: self._accept(self.internal))
        self.echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.echo.bind((c.vip, ECHO_PORT))
        self.echo.setblocking(False)
        self.watch(self.echo, self._on_echo)
        self.stager = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.stager.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.stager.bind((me.ip, staging.PORT))
        self.stager.listen(16)
        self.stager.setblocking(False)
        self.watch(self.stager, self._stage_accept)
        self.tch_rx = packet_socket(me.iface, tcp_filter(dst_ip=me.ip, port=c.vport))
        self.watch(self.tch_rx, lambda: self.read_segments(self.tch_rx, self._on_tch))
        self.raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((me.ip, XAP_UDP_PORT))  # where the switch acks a claim too
        self.udp.setblocking(False)
        self.watch(self.udp, self._on_xap)
        self.tch_in = tch.TchListener(me.ip, c.vport)
        # the second embodiment's port: every device takes both; what it sends is ``c.tch``
        self.tch_port = TchPort(self, me.ip, first=self._first_action,
                                second=self._second_action,
                                keepalive=PREDICTIVE_KEEPALIVE if c.predictive else None)
        giver_args = (self, me.ip, me.iface, me.mac, c.vip, c.vport, self.nft, self._tch_send,
                      self._given, self.arm)
        self.giver = (MessageGiver(*giver_args, port=self.tch_port)
                      if c.tch == "messages" else Giver(*giver_args))
        self.taker = MessageTaker(self, self.tch_port, self.giver, self._restored,
                                  self._serve_taken, self._core, self._give_back)
        self.timed(self.giver.next_deadline, self.giver.on_timer)
        self.timed(self.tch_in.next_deadline, lambda now: self._tch(self.tch_in.on_timer(now)))
        self.timed(self.xap.next_deadline, lambda now: self._xap_actions(self.xap.on_timer(now)))
        if c.failover:  # D2.12: the switch hears this device every 100 ms, or fails it over
            self.reports = DeviceReports(self, c, me.name, self._balanced, self._move)

    def _volume(self) -> None:
        """The files the scenario gives this device (written once per lab)."""
        self.volume_dir.mkdir(parents=True, exist_ok=True)
        for path, spec in self.files.items():
            dest = self.volume_dir / path.lstrip("/")
            if dest.exists():
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".tmp")
            tmp.write_bytes(file_bytes(spec))
            # one mtime on every replica: the ETag (size, mtime) says "same file" to a resume
            os.utime(tmp, ns=(REPLICA_MTIME_NS, REPLICA_MTIME_NS))
            os.rename(tmp, dest)

    # ---- serving ------------------------------------------------------------------------------
    def _accept(self, listener: socket.socket) -> None:
        for _ in range(64):
            try:
                sock, peer = listener.accept()
            except OSError:  # none pending
                return
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
            core = http.HttpServer(self.storage, name=self.node, root=self.root,
                                   redirect=self.redirect)
            cl = Client(sock, core, peer, relay=listener is self.internal)
            self._serve(cl)
            self.counters["accepted"] += 1
            if self.cluster.predictive and listener is self.listener:
                self._predict(cl)

    def _serve(self, cl: Client, actions: list | None = None) -> None:
        if cl.policy is None:  # a connection's proxy record stays here (a moved one starts anew)
            cl.policy = proxy.ProxyPolicy(self.proxy_limit)
        cl.sock.setblocking(False)
        self.clients[cl.sock] = cl
        cl.ready = lambda: self._ready(cl)
        self._apply(cl, actions if actions is not None else cl.core.proceed(time.time()))

    def _readable(self, cl: Client) -> None:
        if (cl.gift is not None and cl.gift.pausing) or cl.core.paused:
            self._interest(cl)
            return
        try:
            data = cl.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if cl.held is not None:  # its first device decides meanwhile: keep what comes
            if data:
                cl.held += data
            else:  # it closed: it hands the client's connection here
                self._drop(cl)
            return
        if cl.relay and self.ask_above is not None and self._ask(cl, data):
            return
        self._apply(cl, cl.core.receive(data, time.time()))

    def _apply(self, cl: Client, actions: list, write: bool = True) -> None:
        """Carry out the HTTP core's actions (``write``: then write what they queued)."""
        for a in actions:
            if isinstance(a, http.SendBytes):
                cl.out += a.data
            elif isinstance(a, http.SendFile):
                cl.chunk = (a.path, a.offset, self.storage.read(a.path, a.offset, a.length))
            elif isinstance(a, http.WriteUpload):
                try:
                    self._upload(cl, a.path).write(a.offset, a.data)
                except VolumeError:
                    self._apply(cl, cl.core.committed(False, time.time()), write=False)
            elif isinstance(a, http.CommitUpload):
                try:
                    self._upload(cl, a.path).commit()
                    ok = True
                except VolumeError:
                    ok = False
                self.uploads.pop((id(cl), a.path), None)
                self._apply(cl, cl.core.committed(ok, time.time()), write=False)
            elif isinstance(a, http.AbortUpload):
                up = self.uploads.pop((id(cl), a.path), None)
                if up is not None:
                    up.abort()
            elif isinstance(a, http.Close):
                cl.closing = True
            elif isinstance(a, http.RequestDone):
                self.event("request", **a.event(cl.peer))
            elif isinstance(a, http.NotHere):
                self._not_here(cl, a)
        if write:
            self._write(cl)

    def _upload(self, cl: Client, path: str):
        key = (id(cl), path)
        if key not in self.uploads:  # a connection handed here mid-upload brought its start
            staged = self.staged.pop((cl.peer, path), None)
            self.uploads[key] = staged[0] if staged else self.storage.open_upload(path)
        return self.uploads[key]

    def _write(self, cl: Client) -> None:
        """Write what is pending, at most ``WRITE_TURN`` bytes of body per call (the loop
        has TCH segments and control requests to answer too); body bytes are reported to
        the core as they go."""
        budget = WRITE_TURN
        while cl.sock in self.clients and budget > 0:
            if cl.out:
                n = self._send(cl, cl.out)
                if n is None:
                    break
                del cl.out[:n]
                continue
            if cl.chunk is not None and not (cl.gift and cl.gift.pausing):
                path, offset, data = cl.chunk
                n = self._send(cl, data)
                if n is None:
                    break
                cl.chunk = (path, offset + n, data[n:]) if n < len(data) else None
                budget -= n
                self._apply(cl, cl.core.sent(n, time.time()), write=False)
                continue
            if cl.closing:
                self._drop(cl)
            break
        self._interest(cl)

    def _send(self, cl: Client, data) -> int | None:
        try:
            n = cl.sock.send(data)
        except BlockingIOError:
            return None
        except OSError:
            self._drop(cl)
            return None
        return n or None

    def _interest(self, cl: Client) -> None:
        if cl.sock not in self.clients or (cl.gift is not None and cl.gift.frozen):
            return
        paused = cl.gift is not None and cl.gift.pausing
        want_write = bool(cl.out or (cl.chunk and not paused))
        want_read = not paused and not cl.core.paused
        events = (selectors.EVENT_WRITE if want_write else 0) | \
            (selectors.EVENT_READ if want_read else 0)
        if not events:
            self.unwatch(cl.sock)
            return
        try:
            self.sel.modify(cl.sock, events, cl.ready)
        except KeyError:
            self.sel.register(cl.sock, events, cl.ready)

    def _ready(self, cl: Client) -> None:
        self._write(cl)
        if cl.sock in self.clients:
            self._readable(cl)

    def _drop(self, cl: Client, close: bool = True) -> None:
        """Forget the connection (``close``: and close its socket; a given one is closed)."""
        self.unwatch(cl.sock)
        self.clients.pop(cl.sock, None)
        if cl.fetch is not None:
            self._end_fetch(cl, cl.fetch)
        for key in [k for k in self.uploads if k[0] == id(cl)]:
            self.uploads.pop(key).abort()
        for s in cl.predictive.values():  # (a given connection released its own)
            if tm.Event.RELEASE in s.expecting():
                self.tch_port.apply(s.release(time.monotonic()))
        cl.predictive.clear()
        if close:
            self.event("account", client=f"{cl.peer[0]}:{cl.peer[1]}", why="close",
                       **tcp_counts(cl.sock))
            cl.sock.close()

    # ---- handoff, first device ----------------------------------------------------------------
    def _request_handoff(self, req: dict) -> dict:
        if req.get("type", "full") != "full":
            raise ValueError("a half-handoff splits the connection by direction, which a "
                             "kernel socket cannot do (D2.6): give both devices tcp: user")
        to = req.get("to")
        if to not in self.cluster.devices or to == self.node:
            raise ValueError(f"no other device {to!r} (devices: "
                             f"{', '.join(sorted(self.cluster.devices))})")
        port = req.get("client_port")
        busy = [cl for cl in self.clients.values() if cl.gift is None and not cl.closing
                and cl.fetch is None and cl.peer[0] not in self.device_ips
                and (port is None or cl.peer[1] == port)]
        udp = [peer for peer in self.udp_flows if peer[1] == port]
        if not busy and udp:
            self._move_udp(udp[0], to)
            return {"client": f"{udp[0][0]}:{port}", "to": to, "proto": "udp"}
        if not busy:
            raise LookupError(f"{self.node} serves no connection"
                              + (f" from port {port}" if port is not None else ""))
        cl = min(busy, key=lambda c: c.peer[1])
        self._give(cl, to, "asked")
        return {"client": f"{cl.peer[0]}:{cl.peer[1]}", "to": to}

    # ---- a request for another device's file ----------------------------------------------
    def _not_here(self, cl: Client, a: http.NotHere) -> None:
        """Move the connection to the owner, or answer by proxy (``proxy.ProxyPolicy``)."""
        if a.owner not in self.cluster.devices or a.owner == self.node:
            self._apply(cl, cl.core.refuse_redirect(time.time()), write=False)
            return
        plan = cl.policy.plan(a.method)
        if plan is proxy.Plan.HANDOFF:
            self._redirect(cl, a.owner, f"redirect {a.path}")
        else:
            self._fetch(cl, a, measure=plan is proxy.Plan.MEASURE)

    def _redirect(self, cl: Client, owner: str, reason: str) -> None:
        try:
            self._give(cl, owner, reason)
        except NotEstablished:  # answered here after all
            self._not_moved(cl)

    def _not_moved(self, cl: Client) -> None:
        """A redirect did not happen: fetch what its owner asked for (without naming the
        client: it is not asked again), or answer here."""
        notice, cl.refetch = cl.refetch, None
        if notice is not None:
            self._fetch(cl, notice, measure=False, named=False)
        else:
            self._apply(cl, cl.core.refuse_redirect(time.time()), write=False)

    def _fetch(self, cl: Client, a: http.NotHere, measure: bool, named: bool = True) -> None:
        """``named``: the fetch names the client, so that its owner may ask for it (check 17)."""
        owner = self.cluster.devices[a.owner]
        method = "HEAD" if measure else a.method
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        cl.fetch = f = Fetch(sock, a, proxy.Upstream(head_only=method == "HEAD"),
                             proxy.request(method, a.path, owner.ip, a.range,
                                           cl.peer if named else None),
                             measure)
        err = sock.connect_ex((owner.ip, proxy.PORT))
        if err not in (0, errno.EINPROGRESS):
            return self._fetch_failed(cl, f, os.strerror(err))
        self.watch(sock, lambda: self._fetched(cl, f), selectors.EVENT_WRITE)
        self.at(time.monotonic() + FETCH_LIMIT, lambda: cl.fetch is f and self._fetch_failed(
            cl, f, f"no answer from {a.owner} in {FETCH_LIMIT:g} s"))

    def _fetched(self, cl: Client, f: Fetch) -> None:
        """The owner's connection is ready: send the request once, then relay what comes."""
        if cl.fetch is not f:
            return
        try:
            if not f.sent:
                err = f.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err))
                f.sock.sendall(f.request)  # a few hundred bytes into an empty buffer
                f.sent = True
                self.sel.modify(f.sock, selectors.EVENT_READ, lambda: self._fetched(cl, f))
                return
            data = f.sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError as exc:
            return self._fetch_failed(cl, f, str(exc))
        started = bool(f.up.status)
        try:
            body = f.up.feed(data) if data else f.up.eof() or b""
        except proxy.UpstreamError as exc:
            return self._fetch_failed(cl, f, str(exc))
        owner, now = f.notice.owner, time.time()
        if f.up.done:  # before the core goes on: its next request may start another fetch
            self._end_fetch(cl, f)
        if f.measure:
            if f.up.done and cl.policy.decide(owner, f.up.length) is proxy.Plan.HANDOFF:
                self._redirect(cl, owner, cl.policy.why(owner, f.up.length))
            elif f.up.done:
                self._fetch(cl, f.notice, measure=False)
            return
        if not started and f.up.status:
            if f.up.status not in http.REASONS:
                return self._fetch_failed(cl, f, f"status {f.up.status} from {owner}")
            self._apply(cl, cl.core.proxy(f.up.status, f.up.fields, now), write=False)
        cl.out += body
        if f.up.done and not f.up.head_only:
            cl.policy.account(owner, f.up.got)
            self._apply(cl, cl.core.proxied(f.up.got, now), write=False)
        self._write(cl)

    def _end_fetch(self, cl: Client, f: Fetch) -> None:
        self.unwatch(f.sock)
        f.sock.close()
        if cl.fetch is f:
            cl.fetch = None

    def _fetch_failed(self, cl: Client, f: Fetch, why: str) -> None:
        """Not relayed: answered here (404) if nothing was sent yet, else the connection goes
        (a body cut short can only be told by closing)."""
        path, state = f.notice.path, cl.core.state
        self._end_fetch(cl, f)
        self.event("proxy-failed", client=f"{cl.peer[0]}:{cl.peer[1]}", path=path, why=why)
        if state is http.Conn.REDIRECTING:
            self._apply(cl, cl.core.refuse_redirect(time.time()))
        elif cl.sock in self.clients:
            self._drop(cl)

    def _move_udp(self, peer: tuple[str, int], to: str) -> None:
        """A UDP flow has no state here: it moves by the switch's table alone (check 22)."""
        key = xap.FlowKey(peer[0], socket.IPPROTO_UDP, peer[1], self.cluster.vip, ECHO_PORT)
        xid, acts = self.xap.request(XAP_OP_CHANGE_CONNECTION, key,
                                     self.cluster.devices[to].ip, time.monotonic())
        self.udp_moves[xid] = (peer, to)
        self._xap_actions(acts)

    def _on_echo(self) -> None:
        """The UDP service (RFC 862): each datagram back to its sender, from the VIP."""
        for _ in range(64):
            try:
                data, peer = self.echo.recvfrom(65536)
            except OSError:  # nothing more, or ENETDOWN once (the link went down)
                return
            if peer not in self.udp_flows:
                if len(self.udp_flows) >= UDP_FLOWS_KEPT:
                    del self.udp_flows[next(iter(self.udp_flows))]
                self.udp_flows[peer] = 0
                self.event("udp-flow", client=f"{peer[0]}:{peer[1]}")
            self.udp_flows[peer] += 1
            self.counters["echoed"] += 1
            with contextlib.suppress(OSError):  # no buffer: lost, as a datagram may be
                self.echo.sendto(data, peer)

    def _give(self, cl: Client, to: str, reason: str) -> None:
        if cl.gift is not None:  # already moving: the request goes with it, answered there
            return
        dev = self.cluster.devices[to]
        more = {"predicted": cl.predictive} if isinstance(self.giver, MessageGiver) else {}
        cl.gift = self.giver.give(cl.sock, cl.peer, Target(dev.name, dev.ip, dev.mac), reason,
                                  flushed=lambda: self._flush(cl) and self._upload_moved(cl),
                                  export=cl.core.export, reprogram=self._reprogram, **more)
        self._interest(cl)
        self.arm()

    def _flush(self, cl: Client) -> bool:
        """Write the queued status line and headers (no more body): True when none is left."""
        while cl.out:
            n = self._send(cl, cl.out)
            if n is None:
                return False
            del cl.out[:n]
        return True

    def _upload_moved(self, cl: Client) -> bool:
        """True once a partial upload is on the second device (``staging.py``), or there is
        none. Reading stopped when the handoff began, so the bytes received stay put."""
        if cl.core.uploading is None or cl.gift is None:
            return True
        path, received = cl.core.uploading
        if cl.moving is None:
            up = self.uploads.get((id(cl), path))
            data = up.read(0, received) if up is not None and received else b""
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex((cl.gift.to.ip, staging.PORT))
            cl.moving = (s, bytearray(staging.message(cl.peer, path, data)))
            self.event("upload-move", client=f"{cl.peer[0]}:{cl.peer[1]}", path=path,
                       bytes=received, to=cl.gift.to.name)
        s, out = cl.moving
        try:
            while out:
                del out[:s.send(out)]
            if s.recv(1) == b"K":
                s.close()
                cl.moving = None
                return True
            raise ConnectionError("the second device did not stage the upload")
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:  # no copy there: the connection stays here
            s.close()
            cl.moving = None
            self.event("handoff-refused", client=f"{cl.peer[0]}:{cl.peer[1]}",
                       to=cl.gift.to.name, why=f"partial upload not moved: {exc}")
            self.giver.switch_failed(cl.gift)
            return False

    def _reprogram(self, gift: Gift) -> None:
        """D2.3: the first device asks the switch by XAP and sends END only on its ack (with
        the ``tcp-option`` carrier the second device claimed the flow before its SET)."""
        if self.cluster.xap_carrier == "tcp-option":
            self.giver.switch_updated(gift)
            return
        key = xap.FlowKey(gift.client[0], 6, gift.client[1], self.cluster.vip,
                          self.cluster.vport)
        gift.xid, acts = self.xap.request(XAP_OP_CHANGE_CONNECTION, key, gift.to.ip,
                                          time.monotonic())
        gift.xid_op = "change"
        self._xap_actions(acts)

    def _given(self, gift: Gift, given: bool, back: socket.socket | None) -> None:
        if self.reports is not None:
            self.reports.moved(gift.client, gift.to.name, given)
        cl = next((c for c in self.clients.values() if c.gift is gift), None)
        if cl is None:
            return
        cl.gift = None
        if given:
            self._drop(cl, close=False)
        elif back is not None:  # frozen and back: the same connection on a new socket
            self._drop(cl, close=False)
            core = http.HttpServer.resume(self.storage, gift.exported, name=self.node,
                                          root=self.root, redirect=False)
            self._serve(Client(back, core, cl.peer))
        elif cl.core.state is http.Conn.REDIRECTING:  # the redirect did not happen
            self._not_moved(cl)
            self._write(cl)
        else:  # never frozen: go on serving
            self._write(cl)

    # ---- handoff, second device ---------------------------------------------------------------
    def _restored(self, carried: bytes) -> tuple[socket.socket, bytes, repair.TcpCheckpoint]:
        """The connection a first device sent (checkpoint + HTTP state), in repair mode (the
        duplicate TCB); ValueError, struct.error, http.ProtocolError or OSError if not."""
        n = struct.unpack_from(">I", carried)[0]
        cp = repair.TcpCheckpoint.unpack(carried[4:4 + n])
        exported = carried[4 + n:]
        if cp is None:
            raise ValueError("not a checkpoint")
        http.HttpServer.resume(self.storage, exported)  # refuse what cannot go on here
        self.giver.release((cp.remote_ip, cp.remote_port))  # it left here once
        return repair.restore(cp, sndbuf=SNDBUF), exported, cp

    def _restore(self, a: tch.Restore) -> None:
        """SET arrived: rebuild the client's connection in repair mode (the duplicate TCB)."""
        try:
            sock, exported, cp = self._restored(a.state)
        except (ValueError, struct.error, http.ProtocolError, OSError) as exc:
            self._tch(self.tch_in.restore_failed(a.peer, str(exc), time.monotonic()))
            return
        self.incoming[a.peer] = (sock, exported, (cp.remote_ip, cp.remote_port))
        if self.cluster.xap_carrier == "tcp-option":  # claim the flow first; SET on the ack
            key = xap.FlowKey(cp.remote_ip, 6, cp.remote_port, self.cluster.vip,
                              self.cluster.vport)
            xid, acts = self.xap.claim(key, time.monotonic())
            self.claims[xid] = (a.peer, cp)
            self._xap_actions(acts)
            return
        self._tch(self.tch_in.restored(a.peer, time.monotonic()))

    def _claim_settled(self, a: xap.Acked | xap.TimedOut) -> None:
        """The switch acked this device's claim: SET to the first device. No ack: the restore
        failed, and the flow is given back to the first device in case the claim was applied
        and only its ack lost (the switch refuses that if it was not)."""
        peer, cp = self.claims.pop(a.xid)
        acked, now = isinstance(a, xap.Acked), time.monotonic()
        self.event("xap", xid=a.xid, op="claim", acked=acked,
                   owner=getattr(a, "owner_ip", None))
        alive = peer in self.incoming  # (the first device may have aborted meanwhile)
        if acked and alive:
            self._tch(self.tch_in.restored(peer, now))
            return
        key = xap.FlowKey(cp.remote_ip, 6, cp.remote_port, self.cluster.vip, self.cluster.vport)
        xid, acts = self.xap.request(XAP_OP_CHANGE_CONNECTION, key, peer[0], now)
        self.giving_back.add(xid)
        self._xap_actions(acts)
        if alive:
            self._tch(self.tch_in.restore_failed(peer, "the switch did not ack the claim", now))

    def _send_on_flow(self, a: xap.SendOnFlow) -> None:
        """A claim on the flow's packet: a pure ACK from the VIP at the restored TCB's
        numbers, option 253 first; the switch takes it (and drops it) on this device's port."""
        cp = next((cp for _, cp in self.claims.values()
                   if (cp.remote_ip, cp.remote_port) == (a.key.client_ip, a.key.client_port)),
                  None)
        if cp is None:
            return
        window = min(0xFFFF, cp.window.rcv_wnd >> cp.rcv_wscale)
        send_segment(self.raw, Segment(self.cluster.vip, cp.remote_ip, self.cluster.vport,
                                       cp.remote_port, cp.snd_nxt, cp.rcv_nxt, ACK,
                                       window=window, options=a.option))

    def _morph(self, a: tch.Morph) -> None:
        """END arrived: repair off, and the connection is served here."""
        got = self.incoming.pop(a.peer, None)
        if got is None:
            return
        sock, exported, peer = got
        repair.leave_repair(sock)
        core = http.HttpServer.resume(self.storage, exported, name=self.node, root=self.root,
                                      redirect=self.redirect)
        self.counters["handoffs_in"] += 1
        self.event("morph", client=f"{peer[0]}:{peer[1]}")
        self._serve(Client(sock, core, peer))
        self._arrived(peer, a.peer[0])

    def _tch(self, actions: list) -> None:
        """The second device's TCH actions."""
        for a in actions:
            if isinstance(a, tch.Send):
                self._tch_send(a.segment)
            elif isinstance(a, tch.StateChanged):
                self.event("tch", role=a.role, old=a.old.name, new=a.new.name, why=a.why)
            elif isinstance(a, tch.Restore):
                self._restore(a)
            elif isinstance(a, tch.Morph):
                self._morph(a)
            elif isinstance(a, tch.Finished):
                got = self.incoming.pop(a.peer, None)
                if got is not None:  # restored, never morphed: this copy must stay silent
                    repair.close_silently(got[0])
                self.event("tch-done", role="second", outcome=a.outcome.name, reason=a.reason)
        self.arm()

    # ---- the second embodiment (udp_tch.py) -------------------------------------------------
    def _predict(self, cl: Client) -> None:
        """Check 16: a predictive session to every other device as the connection starts;
        its Updates keep them ready (L336), a handoff turns one into the handoff."""
        c, now = self.cluster, time.monotonic()
        state = {"client_ip": cl.peer[0], "client_port": cl.peer[1], "cluster_ip": c.vip,
                 "cluster_port": c.vport}
        for dev in c.devices.values():
            if dev.name != self.node:
                cl.predictive[dev.name], acts = self.tch_port.node.open(
                    dev.ip, tm.Kind.PREDICTIVE, state, now)
                self.tch_port.apply(acts)

    def _first_action(self, s: tm.Session, a: tm.Action) -> None:
        if isinstance(a, tm.HandoffRequested) and a.initiator == TCH_INITIATOR_OTHER:
            self._asked_by_other(s, a)
            return
        if isinstance(a, tm.HandoffRequested) and a.initiator == TCH_INITIATOR_SECOND:
            self._asked_by_owner(s, a)
            return
        if isinstance(a, tm.Finished) and s.session_id in self.asked:
            self._asked_handoff(*self.asked.pop(s.session_id))
            return
        if isinstance(a, tm.Finished) and (dev := self.cluster.by_ip(s.peer)) is not None:
            for cl in self.clients.values():  # a predictive session is over (released, ...)
                if cl.predictive.get(dev.name) is s:
                    del cl.predictive[dev.name]
        if isinstance(self.giver, MessageGiver):
            self.giver.on_action(s, a)

    def _asked_by_other(self, s: tm.FirstDevice, a: tm.HandoffRequested) -> None:
        """Another device -- the switch, for a predicted failure (claim 34) -- asks this one
        to hand the client's session off, to the device its app state names ("to=IP"): an
        accept says the handoff starts (check 17), which then goes as any other, once the
        request's session is over (its Done, or its timeout: accepted either way), so the
        two sessions never interleave."""
        client = (a.state.get("client_ip"), a.state.get("client_port"))
        to = self.cluster.by_ip(asked_to(s.app_state))
        cl = next((c for c in self.clients.values() if c.peer == client), None)
        now = time.monotonic()
        if cl is None or cl.gift is not None or to is None or to.name == self.node:
            self.tch_port.apply(s.deny(now))
            return
        self.asked[s.session_id] = (client, to.name, f"asked by {a.peer}")
        self.tch_port.apply(s.accept(now))

    def _asked_by_owner(self, s: tm.FirstDevice, a: tm.HandoffRequested) -> None:
        """Check 17, B2.31: the owner of a file this device is about to relay asks for the
        client's connection instead. Given -- the session's Handoff -- while nothing of the
        answer came yet; else Fail(superseded), and the relay goes on."""
        client = (a.state.get("client_ip"), a.state.get("client_port"))
        dev, now = self.cluster.by_ip(a.peer), time.monotonic()
        cl = next((c for c in self.clients.values() if c.peer == client), None)
        f = cl.fetch if cl is not None else None
        if (f is None or dev is None or f.notice.owner != dev.name or f.measure
                or f.up.status or cl.gift is not None or not isinstance(self.giver, MessageGiver)):
            self.event("asked", client=f"{client[0]}:{client[1]}",
                       by=dev.name if dev is not None else a.peer, given=False)
            self.tch_port.apply(s.release(now))
            return
        self.event("asked", client=f"{client[0]}:{client[1]}", by=dev.name, given=True)
        self._end_fetch(cl, f)
        old = cl.predictive.get(dev.name)
        if old is not None and tm.Event.RELEASE in old.expecting():
            self.tch_port.apply(old.release(now))
        cl.predictive[dev.name], cl.refetch = s, f.notice
        self._redirect(cl, dev.name, f"asked by {dev.name}")

    def _ask(self, cl: Client, data: bytes) -> bool:
        """Check 17, B2.31 ("only when a large amount of data needs be transported"): a
        fetch of a whole file of at least ``ask_above`` bytes asks the fetching device for
        the client's connection, by Open(initiator=second); the fetch waits for its answer.
        Only a fetch whose head is in its first read is asked about (any other is relayed)."""
        got = proxy.relayed(data)
        info = self.storage.stat(got.path) if got is not None and not got.ranged else None
        first = self.cluster.by_ip(cl.peer[0])
        if (got is None or got.method != "GET" or info is None or first is None
                or info.size < self.ask_above):
            return False
        c, now = self.cluster, time.monotonic()
        state = {"client_ip": got.client[0], "client_port": got.client[1],
                 "cluster_ip": c.vip, "cluster_port": c.vport}
        s, acts = self.tch_port.node.request(first.ip, state, now, as_second=True)
        cl.held, self.asks[s.session_id] = bytearray(data), cl
        self.event("ask", client=f"{got.client[0]}:{got.client[1]}", of=first.name,
                   path=got.path, bytes=info.size)
        self.tch_port.apply(acts)
        return True

    def _second_action(self, s: tm.SecondDevice, a: tm.Action) -> None:
        """The taker's, and the end of an ask: not handed here, the held fetch is answered."""
        if isinstance(a, tm.Finished) and (cl := self.asks.pop(s.session_id, None)):
            if a.outcome is not tm.Outcome.HANDED_OFF and cl.sock in self.clients:
                held, cl.held = bytes(cl.held or b""), None
                self._apply(cl, cl.core.receive(held, time.time()))
        self.taker.on_action(s, a)

    def _asked_handoff(self, client: tuple[str, int], to: str, reason: str) -> None:
        cl = next((c for c in self.clients.values() if c.peer == client), None)
        if cl is None or cl.gift is not None:  # (gone, or moving already)
            return
        try:
            self._give(cl, to, reason)
        except NotEstablished:  # (being torn down: nothing to move)
            pass

    def _serve_taken(self, sock: socket.socket, core: http.HttpServer,
                     client: tuple[str, int], actions: list | None, from_ip: str) -> None:
        """A connection that came by messages (``taker.py``): served here from now on."""
        self.counters["handoffs_in"] += 1
        cl = Client(sock, core, client)
        self._serve(cl, actions)
        self._arrived(client, from_ip)
        if self.cluster.predictive:  # ready for the next handoff, as from the start
            self._predict(cl)

    def _core(self, exported: bytes | None) -> http.HttpServer:
        if exported is None:
            return http.HttpServer(self.storage, name=self.node, root=self.root, redirect=False)
        return http.HttpServer.resume(self.storage, exported, name=self.node, root=self.root,
                                      redirect=self.redirect)

    def _balanced(self) -> dict[tuple[str, int], tuple[float, bool]]:
        """The client connections that count as this device's load: since, being given."""
        return {cl.peer: (cl.since, cl.gift is not None) for cl in self.clients.values()
                if cl.peer[0] not in self.device_ips and not cl.closing}

    def _move(self, flow: tuple[str, int], to: str) -> bool:
        """Claim 48: this device's decider hands ``flow`` to ``to`` (False: it cannot now)."""
        cl = next((c for c in self.clients.values() if c.peer == flow), None)
        if cl is None or cl.gift is not None:
            return False
        try:
            self._give(cl, to, "balance")
        except NotEstablished:
            return False
        return True

    def _arrived(self, client: tuple[str, int], from_ip: str) -> None:
        if self.reports is not None:
            self.reports.arrived(client, from_ip)

    def _set_health(self, req: dict) -> dict:
        if self.reports is None:
            raise ValueError("the switch has no failover: nobody hears the health reports")
        return {"health": self.reports.set_health(str(req.get("health", ""))).name}

    def _give_back(self, client: tuple[str, int], to_ip: str) -> None:
        """A handoff here failed: if the switch already moved the flow here, point it back
        at the first device (only the owner moves a flow, D2.10: the first cannot)."""
        key = xap.FlowKey(client[0], 6, client[1], self.cluster.vip, self.cluster.vport)
        xid, acts = self.xap.request(XAP_OP_QUERY, key, None, time.monotonic())
        self.asking_back[xid] = (key, to_ip)
        self._xap_actions(acts)

    def _stage_accept(self) -> None:
        try:
            conn, _ = self.stager.accept()
        except OSError:  # none pending
            return
        conn.setblocking(False)
        got = staging.Incoming()
        self.watch(conn, lambda: self._stage_read(conn, got))

    def _stage_read(self, conn: socket.socket, got: staging.Incoming) -> None:
        """A first device's partial upload: staged until its connection arrives."""
        try:
            data = conn.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        got.buf += data
        whole = got.parse()
        if whole is None and data:
            return
        self.unwatch(conn)
        if whole:
            client, path, body = whole
            try:
                up = self.storage.open_upload(path)
                up.write(0, body)
            except VolumeError:
                conn.close()  # no "K": the first device keeps the connection
                return
            self.staged[(client, path)] = (up, time.monotonic() + staging.STAGED_FOR)
            self.at(time.monotonic() + staging.STAGED_FOR, self._unstage)
            try:
                conn.send(b"K")
            except OSError:
                pass
        conn.close()

    def _unstage(self) -> None:
        """Staged uploads whose connection never came."""
        now = time.monotonic()
        for key, (up, expiry) in list(self.staged.items()):
            if expiry <= now:
                del self.staged[key]
                up.abort()

    # ---- TCH and XAP I/O ----------------------------------------------------------------------
    def _on_tch(self, seg: Segment | None, now: float) -> None:
        if seg is None:
            self.counters["tch_malformed"] += 1
        elif not self.giver.on_segment(seg, now):
            self._tch(self.tch_in.on_segment(seg, now))

    def _tch_send(self, seg: Segment) -> None:
        send_segment(self.raw, seg)

    def _on_xap(self) -> None:
        for _ in range(64):
            try:
                data, (ip, port) = self.udp.recvfrom(65536)
            except OSError:  # nothing more, or ENETDOWN once (the link went down)
                return
            self._xap_actions(self.xap.on_datagram(ip, port, data, time.monotonic()))

    def _xap_actions(self, actions: list) -> None:
        for a in actions:
            if isinstance(a, xap.SendDatagram):
                try:
                    self.udp.sendto(a.payload, (a.dst_ip, a.dst_port))
                except OSError:
                    pass  # retransmitted
            elif isinstance(a, xap.SendOnFlow):
                self._send_on_flow(a)
            elif isinstance(a, xap.Acked | xap.TimedOut) and a.xid in self.claims:
                self._claim_settled(a)
            elif isinstance(a, xap.Acked | xap.TimedOut) and a.xid in self.giving_back:
                self.giving_back.discard(a.xid)
                self.event("xap", xid=a.xid, op="give-back", acked=isinstance(a, xap.Acked))
            elif isinstance(a, xap.Acked | xap.TimedOut) and a.xid in self.asking_back:
                key, to_ip = self.asking_back.pop(a.xid)
                if isinstance(a, xap.Acked) and a.owner_ip == self.me.ip:
                    xid, more = self.xap.request(XAP_OP_CHANGE_CONNECTION, key, to_ip,
                                                 time.monotonic())
                    self.giving_back.add(xid)
                    self._xap_actions(more)
            elif isinstance(a, xap.Acked | xap.TimedOut) and a.xid in self.udp_moves:
                peer, to = self.udp_moves.pop(a.xid)
                self.event("udp-moved", client=f"{peer[0]}:{peer[1]}", to=to,
                           acked=isinstance(a, xap.Acked))
                if isinstance(a, xap.Acked):
                    self.udp_flows.pop(peer, None)
            elif isinstance(a, xap.Acked | xap.TimedOut):
                gift = next((g for g in self.giver.gifts.values() if g.xid == a.xid), None)
                if gift is None:
                    continue
                asked = gift.xid_op
                self.event("xap", xid=a.xid, op=asked, acked=isinstance(a, xap.Acked),
                           owner=getattr(a, "owner_ip", None))
                if isinstance(a, xap.Acked) and (asked == "change" or a.owner_ip == gift.to.ip):
                    self.giver.switch_updated(gift)
                elif asked == "change":
                    # no ack: lost requests, or a lost ack of an applied one -- ask before
                    # taking the connection back (it must not live on two devices)
                    self._ask_owner(gift)
                else:
                    self.giver.switch_failed(gift)
        self.arm()

    def _ask_owner(self, gift: Gift) -> None:
        key = xap.FlowKey(gift.client[0], 6, gift.client[1], self.cluster.vip,
                          self.cluster.vport)
        gift.xid, acts = self.xap.request(XAP_OP_QUERY, key, None, time.monotonic())
        gift.xid_op = "query"
        self._xap_actions(acts)

    # ---- reports ------------------------------------------------------------------------------
    def sessions(self) -> list[dict]:
        return [{"client": f"{cl.peer[0]}:{cl.peer[1]}", "state": cl.core.state.name,
                 "handoff": cl.gift.to.name if cl.gift else None}
                for cl in self.clients.values()]

    def stats(self) -> dict:
        return {**self.counters, "tch_sessions": len(self.tch_in.sessions),
                "tch_messages": dict(self.tch_port.node.counters),
                "xap": dict(self.xap.stats)}

    def report(self) -> dict:
        return {**super().report(), "sessions": self.sessions(), "stats": self.stats()}


def _nft():
    from ftsslab.lab.veth.switchd import Nft

    return Nft()


def wait_file(path: Path, timeout: float = 30.0) -> Path:
    """The switch writes the nonces when it starts (in parallel with the devices)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"nas device: no {path} after {timeout:g}s (is the switch up?)")
        time.sleep(0.01)
    return path


def main(argv: list[str] | None = None) -> int:
    a = node_args(__doc__.splitlines()[0], argv)
    node, state = a.node, str(a.state)
    if node.options.get("tcp") == "user":  # ftsslab's TCP: the device model (D2.6)
        from .userdevice import UserDevice

        proc = UserDevice(a.scenario, node.name, state)
    else:
        cluster = cluster_of(a.scenario, node.name)
        ipaddress.IPv4Address(cluster.vip)
        proc = NasDevice(cluster, node.name, node.options["files"], node.options["redirect"],
                         state, node.options.get("proxy_limit"), node.options.get("ask_above"))
    proc.setup()
    a.ready()
    proc.loop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
