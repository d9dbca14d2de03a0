# SPDX-License-Identifier: GPL-2.0-or-later
"""A NAS device with ``tcp: user`` on veth: the device model the sim runs (``sim.NasDeviceSim``),
driven by the device's real frames over AF_PACKET and the monotonic clock.

Its TCP is ftsslab's own endpoint (``ftsslab.lab.tcp.Tcb``, with MSS, window scaling and
timestamps as a Linux client offers them), so a connection can be split by direction between
two devices -- a half-handoff (Figs. 7 and 8, D2.6), which one kernel socket cannot do.
Everything else the model does is what the sim twin does (check 30): HTTP, TCH messages on
UDP 4494, XAP to the switch, the same events, as frames this process reads and writes.

The namespace's kernel keeps out of it: the VIP is no address here and a ``prerouting`` rule
drops frames to it before routing (or the kernel would answer each with ICMP unreachable),
and an ``input`` rule drops UDP 4494 and the model's XAP port (the model's, not a socket's).
Only the device's own address is the kernel's (ARP, nothing else).
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import time

from ftsslab.fast.tch import TCH_UDP_PORT
from ftsslab.lab import frames, tcp
from ftsslab.lab.backend import BackendError

from . import xap
from .bpf import tcp_filter, udp_filter
from .cluster import cluster_of, nonce_path, read_nonces
from .device import wait_file
from .process import NasProcess, packet_socket
from .sim import XAP_PORT, NasDeviceSim

USER_GUARD = "ftsslab_user"  # the inet table of a tcp: user device's kernel-side drops
TCB_OPTIONS = {"options": True, "mss": 1460, "rto": 1.0, "delack": 0.04, "rcvbuf": 1 << 20,
               "sndbuf": 1 << 20, "time_wait": 30.0}
"""What ``rawtcp.RawTcp`` gives its TCBs on veth (RFC 6298's initial RTO, 1 MiB buffers)."""
ARP_WAIT = 10.0


class _EventLog:
    """The model's ``log``, written to the process's event file."""

    def __init__(self, proc: NasProcess) -> None:
        self.proc, self.now = proc, 0.0

    @property
    def events(self) -> list[dict]:
        return self.proc.events

    def event(self, kind: str, **detail) -> None:
        self.proc.event(kind, **detail)


class VethModel(NasDeviceSim):
    """The model with the veth driver's TCP: options on, and the client's segments decoded
    with theirs (MSS, window scale, timestamps)."""

    tcb_options = TCB_OPTIONS
    decode_client = staticmethod(tcp.decode)


class UserDevice(NasProcess):
    def __init__(self, scenario, node: str, lab_dir: str) -> None:
        super().__init__(node, lab_dir)
        try:
            self.model = VethModel(scenario.node(node), scenario)
        except BackendError as exc:
            raise SystemExit(f"nas device {node} (tcp: user): {exc}") from None
        self.model.log = _EventLog(self)
        self.cluster = cluster_of(scenario, node)
        self.me = self.cluster.devices[node]
        self.tx_dropped = 0
        self.requests.update(handoff=self._handoff,
                             sessions=lambda req: {"sessions": self.model.report()["sessions"]})

    def setup(self) -> None:
        c, me = self.cluster, self.me
        from ftsslab.lab.veth.switchd import Nft

        Nft()(f"add table inet {USER_GUARD}\n"
              f"add chain inet {USER_GUARD} pre {{ type filter hook prerouting priority -300; }}\n"
              f"add chain inet {USER_GUARD} input {{ type filter hook input priority 0; }}\n"
              f"flush chain inet {USER_GUARD} pre\nflush chain inet {USER_GUARD} input\n"
              f"add rule inet {USER_GUARD} pre ip daddr {c.vip} drop\n"
              f"add rule inet {USER_GUARD} input ip daddr {me.ip} udp dport "
              f"{{ {TCH_UDP_PORT}, {XAP_PORT} }} drop")
        nonces = read_nonces(wait_file(nonce_path(self.lab_dir, c.switch)))
        self.model.xap = xap.XapClient(nonces[self.node], c.control_ip,
                                       first_xid=secrets.randbits(16))
        self.tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self.tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.tx.bind((me.iface, 0))
        self.model.switch_mac = self._resolve(c.control_ip)
        self.rx = [packet_socket(me.iface, tcp_filter(dst_ip=c.vip, dport=c.vport)),
                   packet_socket(me.iface, udp_filter(dst_ip=me.ip))]
        for s in self.rx:
            self.watch(s, lambda s=s: self._readable(s))
        self.timed(self.model.next_deadline,
                   lambda now: self._send(self.model.on_timer(now)))

    def _resolve(self, ip: str) -> bytes:
        """The switch's MAC for its control address (the model sends XAP to it)."""
        arp = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
        try:
            arp.bind((self.me.iface, 0x0806))
            arp.settimeout(0.5)
            end = time.monotonic() + ARP_WAIT
            while time.monotonic() < end:
                arp.send(frames.arp_request(self.me.mac, self.me.ip, ip))
                with contextlib.suppress(TimeoutError):
                    while True:
                        got = frames.parse_arp(arp.recv(2048))
                        if got is not None and got.op == 2 and got.sender_ip == ip:
                            return got.sender_mac
        finally:
            arp.close()
        raise SystemExit(f"nas device {self.node}: no ARP answer from {ip}")

    def _readable(self, sock: socket.socket) -> None:
        for _ in range(256):
            try:
                frame = sock.recv(65536)
            except OSError:  # none left, or ENETDOWN once
                break
            self._send(self.model.on_frame(self.me.iface, frame, time.monotonic()))
        self.arm()

    def _send(self, out: list) -> None:
        for t in out:
            try:
                self.tx.send(t.frame)
            except OSError:  # a full queue: a loss TCP and the TCH retries recover
                self.tx_dropped += 1
        self.arm()

    def _handoff(self, req: dict) -> dict:
        port = req.get("client_port")
        client, out = self.model.handoff(str(req.get("to")), port, time.monotonic(),
                                         str(req.get("type", "full")))
        self._send(out)
        return {"client": client, "to": req.get("to")}

    def stats(self) -> dict:
        return {**self.model.report()["stats"], "tx_dropped": self.tx_dropped}

    def report(self) -> dict:
        return {**super().report(), "sessions": self.model.report()["sessions"],
                "stats": self.stats()}
