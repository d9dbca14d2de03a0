# SPDX-License-Identifier: GPL-2.0-or-later
"""The NAS switch's control process: ``python -m ftsslab.nas.switchd --scenario F --node S
--state LABDIR``, run inside the switch's namespace.

The data plane stays in the kernel (seed 002 B2.5: "once programmed, the fabric
bypasses the processor of the switch"): the Linux bridge ``br0`` plus the nftables
forwarding table of the lab's ``switch`` kind (``ftsslab.lab.veth.switchd``, whose unix
socket this process also answers, so ``table`` steps and expectations work). This
process only

- owns the VIP (on ``br0``: the kernel answers ARP for it with the switch's MAC, claims
  1, 13, 25) and the control address XAP is sent to;
- places new connections: a SYN to VIP:vport with no forwarding entry is dropped by the
  ingress chain, seen here on an AF_PACKET socket, given a device by the placement
  policy, and sent on once the entry is in the kernel (B2.4 (b), the fast path);
- or, with ``placement: delayed`` (B2.3, B2.4 (a), claims 6-9), accepts the connection
  itself on the VIP, reads the first request past the TCP header (peeked: the bytes stay
  in the socket and travel with it), picks the device the root directory names for the
  path, and hands the live connection to it by TCH as the first device (``giver.py``);
- applies XAP requests (UDP 5016) through ``XapSwitch`` and acks each only after the
  kernel table changed (B2.10 step 6);
- keeps clients off the cluster's internal ports and addresses (B2.7, check 21):
  dropped and counted at the client ports.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
import time
from pathlib import Path

from ftsslab.fast.cluster import CLUSTER_UDP_PORT
from ftsslab.fast.tch import TCH_UDP_PORT
from ftsslab.fast.xap import XAP_TCP_OPTION_KIND, XAP_UDP_PORT, parse_xap_tcp_options
from ftsslab.lab.veth import names
from ftsslab.lab.veth.nodeargs import node_args
from ftsslab.lab.veth.switchd import (
    CHAIN,
    TABLE,
    Switchd,
    SwitchdError,
    _recv_line,
    entry_rule,
    read_kernel_entries,
    validate_entry,
)

from . import http, xap
from .bpf import tcp_filter, udp_filter
from .cluster import ECHO_PORT, Cluster, Placement, assign_nonces, cluster_of
from .failover import Failover
from .giver import GUARD, Gift, Giver, NotEstablished, Target
from .pair import ActiveSide, StandbySide
from .process import NasProcess, iface_mac, packet_socket, recv_stamped, send_segment
from .segment import Segment
from .volume import MemoryCatalog, RootDirectory

FIN, RST = 0x01, 0x04
LINGER = 2.0  # seconds an ended connection's entry stays (last ACKs, resent FINs)
BIND_TIMEOUT = 10.0  # seconds delayed binding waits for a connection's first request


class NasSwitch(NasProcess):
    def __init__(self, cluster: Cluster, lab_dir: str, lab_id: str) -> None:
        super().__init__(cluster.switch, lab_dir)
        self.cluster = cluster
        c = cluster
        standby = c.pair is not None and c.pair.standby
        nonces = (StandbySide.registration(lab_dir, c.pair.partner) if standby
                  else assign_nonces(lab_dir, c))
        self.devices = {d.name: xap.Device(d.name, nonces[d.name], d.ip, d.mac, d.switch_port)
                        for d in c.devices.values()}
        peers = [xap.Device(c.pair.partner, nonces[c.pair.partner], c.pair.partner_ip, "",
                            c.pair.port)] if standby else []
        self.xap = xap.XapSwitch(self.devices.values(), c.vip, c.control_ip, peers=peers)
        ports = [*c.client_ports, *(d.switch_port for d in c.devices.values())]
        if c.pair is not None and not standby:  # an out port: flows rerouted (policy (c))
            ports.append(c.pair.port)
        self.table = Switchd(c.switch, ports, names.switchd_socket(lab_id, c.switch),
                             names.switchd_log(lab_id, c.switch))
        self.placement = Placement(self.cluster.placement)
        self.counters = {"syn_placed": 0, "syn_seen_with_entry": 0, "udp_placed": 0,
                         "udp_seen_with_entry": 0, "xap_rx": 0, "xap_claims": 0,
                         "xap_claim_foreign": 0,
                         "program_failed": 0, "bound": 0, "bind_failed": 0}
        # FIN seen from "client"/"device" (or "rst"), and the kernel time of the first
        self.closing: dict[xap.FlowKey, tuple[set[str], int]] = {}
        self.handles: dict[xap.FlowKey, int] = {}  # the kernel rule of each flow's entry
        self.delayed = c.placement == "delayed"
        self.root = RootDirectory(c.root) if c.root else None
        self.binding: dict[socket.socket, tuple[str, int]] = {}  # accepted: the client
        self.failover: Failover | None = None  # (set up with the sockets)
        self.pair: ActiveSide | StandbySide | None = None  # Fig. 12 (likewise)
        self.requests.update(table=lambda req: {"entries": self.entries()},
                             handoff=self._no_partner)  # (an active of a pair hands off)

    def _no_partner(self, req: dict) -> dict:
        raise ValueError(f"{self.node} hands sessions only to a standby of its own (a "
                         f"nas-switch with standby: {self.node}), and has none")

    # ---- kernel set-up -----------------------------------------------------------------------
    def setup(self) -> None:
        c = self.cluster
        fresh = read_kernel_entries(self.table.nft) is None
        self.table.setup()
        if fresh:
            internal = ", ".join([c.control_ip, *(d.ip for d in c.devices.values())])
            cmds = []
            for p in c.client_ports:
                cmds += [
                    # check 21: internal ports of the VIP and the cluster's own addresses
                    f"insert rule netdev {TABLE} in_{p} ip daddr {c.vip} udp dport "
                    f"{{ {TCH_UDP_PORT}, {XAP_UDP_PORT}, {CLUSTER_UDP_PORT} }} counter drop "
                    f"comment \"internal\"",
                    f"insert rule netdev {TABLE} in_{p} ip daddr {{ {internal} }} counter "
                    f"drop comment \"internal\"",
                ]
                # cluster-internal traffic never leaves by a client port (the bridge floods a
                # frame whose MAC it does not know, e.g. to a device whose link is down)
                cmds += [f"add chain netdev {TABLE} out_{p} {{ type filter hook egress device "
                         f"\"{p}\" priority 0; policy accept; }}",
                         f"add rule netdev {TABLE} out_{p} ip saddr {{ {internal} }} ip daddr "
                         f"{{ {internal} }} counter drop comment \"internal_out\""]
                cmds.append(f"add rule netdev {TABLE} in_{p} ip daddr {c.vip} udp dport "
                            f"{ECHO_PORT} counter drop comment \"place\"")
                if not self.delayed:  # a SYN with no entry: placed here (seen on AF_PACKET)
                    cmds.append(f"add rule netdev {TABLE} in_{p} ip daddr {c.vip} tcp dport "
                                f"{c.vport} tcp flags & (syn | ack) == syn counter drop "
                                f"comment \"place\"")
            # a claim on a flow's packet (TCP option 253) is for the switch, never a client
            cmds += [f"insert rule netdev {TABLE} in_{d.switch_port} ip saddr {c.vip} tcp option "
                     f"{XAP_TCP_OPTION_KIND} exists counter drop comment \"xap\""
                     for d in c.devices.values()]
            cmds += [f"add table inet {GUARD}",
                     f"add chain inet {GUARD} input {{ type filter hook input priority 0; }}"]
            if self.delayed:  # TCH replies are the process's, never the kernel's
                cmds.append(f"add rule inet {GUARD} input ip daddr {c.control_ip} tcp sport "
                            f"{c.vport} drop")
            else:  # the VIP on br0 answers ARP; TCP to it is never the switch kernel's
                cmds.append(f"add rule inet {GUARD} input ip daddr {c.vip} counter drop")
            self.table.nft("\n".join(cmds))
        self.table.refresh()
        for handle, e in self.table.rules:  # a restarted process learns who holds what
            dev = next((d for d in self.devices.values() if d.port == e["out_port"]), None)
            if dev is not None and e["client_ip"] and e["client_port"] is not None:
                self.xap.placed(self._key(e), dev.name)
                self.handles[self._key(e)] = handle
        if self.delayed:
            self._setup_delayed()
        else:
            code = tcp_filter(dst_ip=c.vip, dport=c.vport, syn_only=True)
            for p in c.client_ports:
                s = packet_socket(p, code, stamps=True)
                self.watch(s, lambda s=s: self._on_first(s, socket.IPPROTO_TCP))
        for p in c.client_ports:  # the UDP service is placed by policy in either mode
            s = packet_socket(p, udp_filter(dst_ip=c.vip, dport=ECHO_PORT), stamps=True)
            self.watch(s, lambda s=s: self._on_first(s, socket.IPPROTO_UDP))
        self.tx = {d.port: packet_socket(d.port) for d in self.devices.values()}
        # the ends of connections (FIN both ways, or a RST): their entries go
        ends = tcp_filter(dst_ip=c.vip, dport=c.vport, any_flags=FIN | RST)
        for p in c.client_ports:
            s = packet_socket(p, ends, stamps=True)
            self.watch(s, lambda s=s: self.on_end(s, from_client=True))
        ends = tcp_filter(src_ip=c.vip, sport=c.vport, any_flags=FIN | RST)
        claims = tcp_filter(src_ip=c.vip, sport=c.vport, first_option=XAP_TCP_OPTION_KIND)
        for d in self.devices.values():
            s = packet_socket(d.port, ends, stamps=True)
            self.watch(s, lambda s=s: self.on_end(s, from_client=False))
            s = packet_socket(d.port, claims)
            self.watch(s, lambda s=s, d=d: self._on_claim(s, d))
        self.failover = Failover(self) if c.failover else None
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.udp.bind((c.control_ip, XAP_UDP_PORT))
        self.udp.setblocking(False)
        self.watch(self.udp, lambda: self.on_xap(self.udp))
        if c.pair is not None:
            self.pair = StandbySide(self) if c.pair.standby else ActiveSide(self)
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        Path(self.table.sock_path).unlink(missing_ok=True)
        srv.bind(self.table.sock_path)
        srv.listen(16)
        srv.setblocking(False)
        self.watch(srv, lambda: self._on_table_request(srv))

    def _key(self, e: dict) -> xap.FlowKey:
        return xap.FlowKey(e["client_ip"], e["proto"] or 6, e["client_port"], e["vip"],
                           e["vport"] if e["vport"] is not None else self.cluster.vport)

    def _entry(self, key: xap.FlowKey, dev: xap.Device) -> dict:
        port, mac = (self.pair.route(key, dev) if isinstance(self.pair, ActiveSide)
                     else (dev.port, dev.mac))
        return {"vip": key.vip, "out_port": port, "client_ip": key.client_ip,
                "proto": key.proto, "client_port": key.client_port, "vport": key.vport,
                "dst_mac": mac}

    @property
    def serving(self) -> bool:
        """A standby places nothing until it takes over."""
        return not isinstance(self.pair, StandbySide) or self.pair.active

    # ---- placement (fast path) ----------------------------------------------------------------
    def _on_first(self, s: socket.socket, proto: int) -> None:
        """A new flow's first frame, dropped after the table: a TCP SYN, or a datagram to the
        UDP service (check 22), which has no end a switch could see: its entry stays until
        a device moves it or the lab goes."""
        vport, what = ((self.cluster.vport, "syn") if proto == socket.IPPROTO_TCP
                       else (ECHO_PORT, "udp"))
        for _ in range(64):
            try:
                frame, stamp = recv_stamped(s)
            except OSError:  # nothing more, or ENETDOWN once (the link went down)
                return
            if not self.serving:
                continue
            ihl = (frame[14] & 0xF) * 4
            client_ip = socket.inet_ntoa(frame[26:30])
            client_port = int.from_bytes(frame[14 + ihl:16 + ihl])
            key = xap.FlowKey(client_ip, proto, client_port, self.cluster.vip, vport)
            if self.failover is not None and proto == socket.IPPROTO_TCP:
                self.failover.on_syn(frame)
            if key in self.closing and self.closing[key][1] < stamp:
                del self.closing[key]  # a new connection on a lingering entry: it stays
            if self.xap.owner(key) is not None:
                # the entry exists: the kernel forwarded it; or our earlier frame is in flight
                self.counters[f"{what}_seen_with_entry"] += 1
                continue
            dev = self._choose()
            self._program(key, None, dev, why="placed")
            self.xap.placed(key, dev.name)
            self.counters[f"{what}_placed"] += 1
            try:
                self.tx[dev.port].send(bytes.fromhex(dev.mac.replace(":", "")) + frame[6:])
            except OSError:  # the device's link is down: the client's retransmitted SYN
                pass         # follows the entry

    def on_end(self, s: socket.socket, from_client: bool) -> None:
        """FIN from both sides or a RST: the entry goes ``LINGER`` s later (the last ACKs
        and retransmitted FINs still need it)."""
        for _ in range(64):
            try:
                frame, stamp = recv_stamped(s)
            except OSError:  # nothing more, or ENETDOWN once (the link went down)
                return
            ihl = (frame[14] & 0xF) * 4
            ip = socket.inet_ntoa(frame[26:30] if from_client else frame[30:34])
            port = int.from_bytes(frame[14 + ihl + (0 if from_client else 2):][:2])
            flags = frame[14 + ihl + 13]
            key = xap.FlowKey(ip, 6, port, self.cluster.vip, self.cluster.vport)
            if self.xap.owner(key) is None:
                continue
            seen = self.closing.setdefault(key, (set(), stamp))[0]
            who = "rst" if flags & RST else ("client" if from_client else "device")
            seen |= self.pair.paths.ends(key, who) if isinstance(self.pair, ActiveSide) else {who}
            if "rst" in seen or {"client", "device"} <= seen:
                self.at(time.monotonic() + LINGER, lambda key=key: self._expire(key))

    def _expire(self, key: xap.FlowKey) -> None:
        seen = self.closing.pop(key, None)
        dev = self.xap.owner(key)
        if seen is None or dev is None:
            return
        handle = self.handles.pop(key, None)
        if handle is not None:
            try:
                self.table.nft(f"delete rule netdev {TABLE} {CHAIN} handle {handle}")
            except SwitchdError:
                pass  # a `table` step removed it already
            self.table.log(op="remove", entry=self._entry(key, dev))
        self.xap.forget(key)
        if self.failover is not None:
            self.failover.forget(key)
        if isinstance(self.pair, ActiveSide):
            self.pair.on_table(key, None)
        elif isinstance(self.pair, StandbySide):  # (one that took over: a served session too)
            self.pair.unserve(key, dev)
        self.event("table", why="closed", client=f"{key.client_ip}:{key.client_port}",
                   old=dev.name, new=None)

    # ---- delayed binding (the switch as the first device) ---------------------------------------
    def _setup_delayed(self) -> None:
        c = self.cluster
        mac = iface_mac("br0")
        self.raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.giver = Giver(self, c.control_ip, "br0", mac, c.vip, c.vport, self.table.nft,
                           self._tch_send, self._given, self.arm)
        self.timed(self.giver.next_deadline, self.giver.on_timer)
        self.tch_rx = packet_socket("br0", tcp_filter(dst_ip=c.control_ip, port=c.vport))
        self.watch(self.tch_rx, lambda: self.read_segments(self.tch_rx, self._on_tch))
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((c.vip, c.vport))
        self.listener.listen(128)
        self.listener.setblocking(False)
        self.watch(self.listener, self._accept)
        self.idle_http = http.HttpServer(MemoryCatalog()).export()  # nothing read yet

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, peer = self.listener.accept()
            except OSError:  # none pending
                return
            sock.setblocking(False)
            self.binding[sock] = peer
            self.watch(sock, lambda sock=sock: self._peek(sock))
            self.at(time.monotonic() + BIND_TIMEOUT, lambda sock=sock: self._unbound(sock))

    def _peek(self, sock: socket.socket) -> None:
        """Read the first request without taking it (B2.3): its path picks the device."""
        peer = self.binding[sock]
        try:
            data = sock.recv(http.MAX_HEAD, socket.MSG_PEEK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        req = http.peek_request(data) if data else None
        if req is None:
            if not data or len(data) >= http.MAX_HEAD or data.endswith(b"\r\n\r\n"):
                self._unbound(sock)  # closed, or not a request we can place
            return
        owner = self.root.owner(req.path or "/") if self.root else None
        dev = self.devices.get(owner) or self._choose()
        self.unwatch(sock)
        del self.binding[sock]
        self.event("bind", client=f"{peer[0]}:{peer[1]}", path=req.path, device=dev.name)
        d = self.cluster.devices[dev.name]
        try:
            self.giver.give(sock, peer, Target(d.name, d.ip, d.mac),
                            f"delayed binding {req.path}", flushed=lambda: True,
                            export=lambda: self.idle_http, reprogram=self._reprogram)
        except NotEstablished:  # the client closed already: nothing to hand over
            self.counters["bind_failed"] += 1
            sock.close()
        self.arm()

    def _unbound(self, sock: socket.socket) -> None:
        """No request (in time): the switch closes what it accepted."""
        if self.binding.pop(sock, None) is not None:
            self.unwatch(sock)
            self.counters["bind_failed"] += 1
            sock.close()

    def _reprogram(self, gift: Gift) -> None:
        """The switch is the first device: it changes its own table, no XAP needed (with the
        ``tcp-option`` carrier the second device claimed the flow before its SET)."""
        if self.cluster.xap_carrier == "tcp-option":
            self.giver.switch_updated(gift)
            return
        key = xap.FlowKey(gift.client[0], 6, gift.client[1], self.cluster.vip,
                          self.cluster.vport)
        dev = self.devices[gift.to.name]
        self._program(key, None, dev, why="delayed")
        self.xap.placed(key, dev.name)
        self.giver.switch_updated(gift)

    def _given(self, gift: Gift, given: bool, back: socket.socket | None) -> None:
        self.counters["bound" if given else "bind_failed"] += 1
        if back is not None:  # the device did not take it: the switch serves no files
            back.close()

    def _on_tch(self, seg: Segment | None, now: float) -> None:
        if seg is not None:
            self.giver.on_segment(seg, now)

    def _tch_send(self, seg: Segment) -> None:
        send_segment(self.raw, seg)

    def _choose(self) -> xap.Device:
        devices = self.devices if self.failover is None else self.failover.live() or self.devices
        return self.placement.choose(devices, self.xap.entries().values())

    # ---- the kernel table ---------------------------------------------------------------------
    def _program(self, key: xap.FlowKey, old: xap.Device | None, new: xap.Device | None,
                 why: str) -> None:
        """Point the flow's entry at ``new`` (None: remove it): the new rule and the removal
        of the old in one nftables transaction (atomic: every frame sees one of the two).
        The new rule's handle comes back with it: the chain is never listed (that costs
        O(entries))."""
        t0 = time.monotonic()
        cmds = []
        if new is not None:
            entry = validate_entry(self._entry(key, new), self.table.ports)
            cmds.append(f"add rule netdev {TABLE} {CHAIN} {entry_rule(entry)}")
        if key in self.handles:
            cmds.append(f"delete rule netdev {TABLE} {CHAIN} handle {self.handles.pop(key)}")
        echoed = json.loads(self.table.nft("\n".join(cmds), echo=True) or "{}") if cmds else {}
        if new is not None:
            self.handles[key] = next(int(item["add"]["rule"]["handle"]) for item in
                                     echoed.get("nftables", []) if "rule" in item.get("add", {}))
            self.table.log(op="move" if old else "add", entry=entry)
        elif old is not None:
            self.table.log(op="remove", entry=self._entry(key, old))
            if isinstance(self.pair, StandbySide):
                self.pair.unserve(key, old)
        if self.failover is not None and new is not None:
            self.failover.on_table(key, new.name, time.monotonic())
        if isinstance(self.pair, ActiveSide):
            self.pair.on_table(key, new)
        self.event("table", why=why, client=f"{key.client_ip}:{key.client_port}",
                   old=old.name if old else None, new=new.name if new else None,
                   ms=round((time.monotonic() - t0) * 1000, 3),
                   **({"proto": "udp"} if key.proto == socket.IPPROTO_UDP else {}))

    # ---- XAP ----------------------------------------------------------------------------------
    def on_xap(self, sock: socket.socket) -> None:
        """XAP datagrams at the control address (or, a standby that took over, at the
        active's)."""
        for _ in range(64):
            try:
                data, (ip, port) = sock.recvfrom(65536)
            except OSError:  # nothing more, or ENETDOWN once (the link went down)
                return
            self.counters["xap_rx"] += 1
            self._run(self.xap.on_datagram(ip, port, data, time.monotonic()), sock)

    def _on_claim(self, s: socket.socket, dev: xap.Device) -> None:
        """XAP on a device's packet of the flow (TCP option 253, check 20): the device claims
        the flow. Only its own messages count -- the port tells who sent it; the nftables
        rule ``xap`` drops the packet after this socket saw it, so no client gets it."""
        for _ in range(64):
            try:
                frame = s.recv(65536)
            except OSError:  # nothing more, or ENETDOWN once (the link went down)
                return
            ihl = (frame[14] & 0xF) * 4
            tcp = 14 + ihl
            if len(frame) < tcp + 20:
                continue
            area = frame[tcp + 20:tcp + (frame[tcp + 12] >> 4) * 4]
            messages = [m for o in parse_xap_tcp_options(area) for m in o["messages"]]
            mine = [m for m in messages if m["nonce"] == dev.nonce]
            self.counters["xap_claims"] += 1
            self.counters["xap_claim_foreign"] += len(messages) - len(mine)
            self._run(self.xap.on_flow_options(socket.inet_ntoa(frame[30:34]), mine,
                                               time.monotonic()))

    def _run(self, actions, sock: socket.socket | None = None) -> None:
        """Carry out the XAP core's actions; acks leave by ``sock``, the socket the request
        came in at (the address it was sent to)."""
        for a in actions:
            if isinstance(a, xap.Program):
                try:
                    if a.serve:  # a session the active hands to this switch (claim 56)
                        self.pair.serve(a.key, a.new)
                    else:
                        self._program(a.key, a.old, a.new, why="mirror" if a.mirror else "xap")
                except SwitchdError as exc:
                    self.counters["program_failed"] += 1
                    self._run(self.xap.program_failed(a.token, str(exc), time.monotonic()),
                              sock)
                else:
                    self._run(self.xap.programmed(a.token, time.monotonic()), sock)
            elif isinstance(a, xap.SendDatagram):
                try:
                    (sock or self.udp).sendto(a.payload, (a.dst_ip, a.dst_port))
                except OSError:
                    pass  # the device is gone: it retransmits or times out

    def _on_table_request(self, srv: socket.socket) -> None:
        """The lab switch protocol (``table`` steps): one JSON line per connection."""
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(5)
            try:
                data = _recv_line(conn)
                try:
                    reply = self.table.handle(json.loads(data or b"{}"))
                except (SwitchdError, ValueError) as exc:
                    reply = {"ok": False, "error": str(exc)}
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except OSError:
                return

    # ---- reports ------------------------------------------------------------------------------
    def entries(self) -> list[dict]:
        return [{"client": f"{k.client_ip}:{k.client_port}", "proto": k.proto,
                 "vip": f"{k.vip}:{k.vport}", "device": owner.name}
                for k, owner in self.xap.entries().items()]

    def stats(self) -> dict:
        return {**self.counters, **self._kernel_counters(),
                **{f"xap_{k}": v for k, v in self.xap.stats.items()}}

    def _kernel_counters(self) -> dict[str, int]:
        """Frames the ingress chains dropped: ``internal`` (check 21) and ``place`` (SYNs
        the control process placed), from the rules' nftables counters."""
        out = {"dropped_internal": 0, "dropped_place": 0, "dropped_internal_out": 0}
        listing = json.loads(self.table.nft(f"list table netdev {TABLE}", json_out=True))
        for item in listing.get("nftables", []):
            rule = item.get("rule")
            name = f"dropped_{rule.get('comment')}" if rule else None
            if name in out:
                out[name] += sum(e["counter"]["packets"] for e in rule["expr"]
                                 if isinstance(e, dict) and "counter" in e)
        return out

    def report(self) -> dict:
        return {**super().report(), "entries": self.entries(), "stats": self.stats()}


def main(argv: list[str] | None = None) -> int:
    a = node_args(__doc__.splitlines()[0], argv)
    cluster = cluster_of(a.scenario, a.node.name)
    ipaddress.IPv4Address(cluster.vip)
    proc = NasSwitch(cluster, str(a.state), a.state.name)
    try:
        proc.setup()
    except SwitchdError as exc:
        print(f"nas switchd: {exc}", file=sys.stderr)
        return 1
    a.ready()
    proc.loop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
