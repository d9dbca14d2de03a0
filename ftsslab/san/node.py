"""A ``sanic`` node of the lab: one endnode with its SANIC (B3.2), sans-IO.

Frames and verbs in; frames, completions and events out; the clock passed in. The sim drives
it directly (``on_frame``/``on_timer``/``verb``), and on veth ``sanicd`` drives the same core
from a packet ring and the node's control socket. What the node is -- physical frames,
processes with their segments, QPs and their peers -- comes from the scenario
(``SanicConfig``); what it does comes from ``verb`` steps, each a verbs call as an application
on the node would make it (``VERBS``), and everything that happens is an event (``events``):
``completion`` for each work completion, ``advert`` for each RKeyAdvert received, ``fault``
for each page fault the default error handler saw, ``verb`` for a verb's synchronous result,
``memory`` for hashes and reads, ``burst`` and ``received`` for the counted runs,
``discovered`` when a management sweep ends.

One IPv4 port per node; its peers' addresses come from the scenario (as a subnet manager
would assign them). ARP is answered, so a kernel host on the fabric can reach it too. With the
``management`` option the node runs a GSI agent on QP1 (``discovery.ManagementAgent``), which
answers sweeps and, asked by a ``discover`` verb, makes one.
"""

from __future__ import annotations

import socket
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

from ftsslab.fast.roce import parse_rkey_advert
from ftsslab.lab import frames
from ftsslab.lab.switch import Transmit

from .discovery import ManagementAgent, Sweep
from .memory import PAGE_SHIFT, SEGMENT_SHIFT, Prot, Vmm, pieces
from .node_config import QpSpec, SanicConfig, guid_of
from .node_runs import Arrivals, Increment, Run
from .node_verbs import VERBS
from .packets import Packet, frame, packet
from .qp import PageFault, QpState, Wc, WcOpcode, WcStatus
from .rd import RdDest
from .verbs import CQ, PD, QP, SGE, Context, RecvWR, SendWR

SPORT = 49152  # the UDP source port of every SANIC here
APP_WR = 2  # wr_id >> 32 of an application's own work requests (1: the receive rings')


class App(Protocol):
    """An application on the node that owns some QPs' messages (seed 001's host driver
    module, its remotes): what a ring slot of one of ``qps`` receives goes to ``received``,
    the completion of a work request it posted (wr_id tagged ``APP_WR``) to ``completed``."""

    qps: frozenset[str]

    def received(self, qp: str, data: bytes) -> None: ...

    def completed(self, qp: str, wc: Wc) -> None: ...


class SanicCore:
    """The endnode: its VMM, SANIC (``verbs.Context``), processes and QPs."""

    def __init__(self, cfg: SanicConfig, now: float = 0.0) -> None:
        self.cfg, self.name = cfg, cfg.name
        self.mac = frames.mac_bytes(cfg.mac)
        self.now = now
        self.events: list[dict] = []
        self.counters = {"frames_in": 0, "frames_out": 0, "malformed": 0, "unroutable": 0}
        self.vmm = Vmm(cfg.frames)
        self.ctx = Context(self.vmm, cfg.name, mtu=cfg.mtu, rdma=cfg.rdma, handler=self._fault)
        self.cq = CQ(clock=lambda: self.now)  # one CQ for every QP: a completion names its QP
        self.pds: dict[str, PD] = {}
        self.procs = {p.name: p for p in cfg.processes}
        self.specs = {q.name: q for q in cfg.qps}
        for p in cfg.processes:
            table = self.vmm.process(p.pid)
            for esid, _pages, mapped in p.segments:
                self.vmm.add_segment(p.pid, esid)
                for page in range(mapped):
                    self.vmm.map_page(table.va((esid << SEGMENT_SHIFT) | page << PAGE_SHIFT))
            self.pds[p.name] = self.ctx.pd(p.pid, kernel=p.kernel)
        self.qps: dict[str, QP] = {}
        self.qp_names: dict[int, str] = {}
        self.rkeys: dict[str, int] = {}  # a key's name in the scenario -> its value
        self.adverts: dict[str, list[dict]] = {}
        self.arrivals: dict[str, Arrivals] = {}
        self.snapshots: dict[str, bytes] = {}
        self.neighbours = {p.ip: frames.mac_bytes(p.mac) for p in cfg.peers.values()}
        self.peer_names = {p.ip: n for n, p in cfg.peers.items()}
        self._runs: dict[str, deque[Run]] = {}
        self._increments: dict[int, Increment] = {}
        self._wr_ids: dict[str, int] = {}
        self._out: list[bytes] = []
        for q in cfg.qps:
            pd = self.pds[q.process]
            if q.type == "ud":
                qp = pd.open_ud_qp(self.cq, q.qkey)
            elif q.type == "rd":
                qp = pd.open_rd_qp(self.cq, q.qkey, rdma=q.rdma)
            else:
                qp = pd.open_qp(self.cq, max_outstanding=q.max_outstanding)
                peer = cfg.peers[q.peer]
                qp.connect(peer.ip, peer.qpns[q.remote], now, timeout=q.timeout,
                           retry_cnt=q.retry_cnt, rnr_retry=q.rnr_retry)
            assert qp.qp_num == q.qpn, "QPs are numbered in the order they are declared"
            self.qps[q.name] = qp
            self.qp_names[qp.qp_num] = q.name
            self.adverts[q.name] = []
            self.arrivals[q.name] = Arrivals()
            self._runs[q.name] = deque()
            for slot in range(q.receives):
                self._post_recv_slot(q, slot)
        self.agent: ManagementAgent | None = None
        self._discovering = False
        self.app: App | None = None
        if cfg.management is not None:  # QP1, the GSI: discovery over UD (check 22)
            process, buf = cfg.management
            self.agent = ManagementAgent(self.pds[process], buf, name=cfg.name,
                                         guid=guid_of(self.mac))
        rd = next((q for q in cfg.qps if q.type == "rd"), None)
        for peer, remote_eecn in cfg.eecs:  # (RD: reliability is the EE context's, B3.9)
            ip = cfg.peers[peer].ip
            self.ctx.open_eec(ip)
            assert rd is not None
            self.ctx.connect_eec(ip, remote_eecn, now, timeout=rd.timeout,
                                 retry_cnt=rd.retry_cnt, rnr_retry=rd.rnr_retry)

    # ---- the sim's core interface ------------------------------------------------------------
    def on_frame(self, iface: str, data: bytes, now: float) -> list[Transmit]:
        self.now = now
        if data[12:14] == b"\x08\x06":
            arp = frames.parse_arp(data)
            if arp is not None and (reply := frames.answer_arp(arp, self.cfg.ip, self.mac,
                                                               self.neighbours)):
                self._out.append(reply)
            return self._flush()
        if data[:6] != self.mac:
            return []
        self.counters["frames_in"] += 1
        got = packet(data)
        if got is None:
            self.counters["malformed"] += 1  # not ours to parse, cut short or a bad ICRC
            return self._flush()
        self._wire(self.ctx.receive(got, now, socket.inet_ntoa(data[26:30])))
        self._drain()
        return self._flush()

    def next_deadline(self) -> float | None:
        ours = self.agent.next_deadline() if self.agent is not None else None
        theirs = self.ctx.next_deadline()
        return theirs if ours is None else ours if theirs is None else min(ours, theirs)

    def on_timer(self, now: float) -> list[Transmit]:
        self.now = now
        self._wire(self.ctx.on_timer(now))
        self._drain()
        return self._flush()

    def node_events(self) -> list[dict]:
        return self.events

    def stats(self) -> dict:
        eecs = {f"eec_{self.peer_names.get(e.peer, e.peer)}_{k}": n
                for e in self.ctx.rd.eecs.values() for k, n in e.counters.items()
                if k in ("sent", "resent", "timeouts")}
        return {**self.counters, **{f"dropped_{k}": n for k, n in self.ctx.dropped.items()},
                "eecs": len(self.ctx.rd.eecs), **eecs}

    def verb(self, args: Mapping[str, Any], now: float) -> list[Transmit]:
        """One verbs call by an application on the node (a `verb` step)."""
        self.now = now
        try:
            VERBS[args["op"]](self, args)
        except (LookupError, ValueError) as exc:  # a key or advert not there (yet)
            self._event("verb", op=args["op"], result="FAILED", error=str(exc))
        self._drain()
        return self._flush()

    # ---- the wire ----------------------------------------------------------------------------
    def _wire(self, out: list[tuple[str, Packet]]) -> None:
        for peer, p in out:
            mac = self.neighbours.get(peer)
            if mac is None:
                self.counters["unroutable"] += 1
                continue
            self._out.append(frame(p, eth_dst=mac.hex(":"), eth_src=self.cfg.mac,
                                   ip_src=self.cfg.ip, ip_dst=peer, sport=SPORT))

    def _flush(self) -> list[Transmit]:
        out, self._out = self._out, []
        self.counters["frames_out"] += len(out)
        return [Transmit(self.cfg.iface, f) for f in out]

    def _event(self, kind: str, **detail: Any) -> None:
        self.events.append({"t": self.now, "node": self.name, "kind": kind, **detail})

    # ---- completions -------------------------------------------------------------------------
    def _drain(self) -> None:
        """Take every completion: log it or count it into its run, refill runs and rings;
        the management agent takes its own (it has its CQ)."""
        if self.agent is not None:
            self._wire(self.agent.poll(self.now))
            if self._discovering and self.agent.state is Sweep.DONE:
                self._discovering = False
                found = sorted(f.name for f in self.agent.found.values())
                self._event("discovered", found=len(found), names=",".join(found),
                            sweeps=self.agent.sweeps, **self.agent.counters)
        while wcs := self.cq.poll(64):
            for wc in wcs:
                self._completion(wc)
        for name, runs in self._runs.items():
            while runs and runs[0].posted == runs[0].count and runs[0].done == runs[0].count:
                self._finish(runs.popleft())
            if runs:
                self._pump(name, runs[0])

    def _completion(self, wc) -> None:
        name = self.qp_names.get(wc.qp_num, str(wc.qp_num))
        spec = self.specs[name]
        if wc.opcode in (WcOpcode.RECV, WcOpcode.RECV_RDMA_WITH_IMM):
            self._received(spec, wc)
            return
        if self.app is not None and wc.wr_id >> 32 == APP_WR:
            self.app.completed(name, wc)
            return
        inc = self._increments.pop(wc.wr_id, None)
        if inc is not None:
            self._increment_done(inc, wc)
            return
        run = next((r for r in self._runs[name]
                    if r.first_wr <= wc.wr_id < r.first_wr + r.count), None)
        if run is not None:
            run.completed(self.now, wc.status is WcStatus.SUCCESS, wc.status.value)
            return
        self._event("completion", qp=name, wr_id=wc.wr_id, status=wc.status.value,
                    opcode=wc.opcode.value, byte_len=wc.byte_len)

    def _received(self, spec: QpSpec, wc) -> None:
        arr = self.arrivals[spec.name]
        if wc.status is not WcStatus.SUCCESS:
            self._event("completion", qp=spec.name, wr_id=wc.wr_id, status=wc.status.value,
                        opcode=wc.opcode.value, byte_len=wc.byte_len)
            return
        arr.messages += 1
        if wc.imm is not None:
            if wc.imm in arr.seen:
                arr.duplicates += 1
            arr.seen.add(wc.imm)
            if wc.imm > arr.last_imm:
                arr.in_order += 1
                arr.last_imm = wc.imm
        if spec.recv_buffer is not None and wc.wr_id >> 32 == 1:  # a ring slot
            slot = wc.wr_id & 0xFFFFFFFF
            data = self.load(spec.process, spec.recv_buffer + slot * spec.recv_size,
                             min(wc.byte_len, spec.recv_size))
            if self.app is not None and spec.name in self.app.qps:
                self._post_recv_slot(spec, slot)
                self.app.received(spec.name, data)
                return
            advert = parse_rkey_advert(data) if data else None
            if advert is not None:
                self.adverts[spec.name].append(advert)
                self._event("advert", qp=spec.name, rkey=advert["rkey"], va=advert["va"],
                            length=advert["length"], advert_kind=advert["kind"])
            self._post_recv_slot(spec, slot)
        elif wc.imm is None:
            self._event("completion", qp=spec.name, wr_id=wc.wr_id, status=wc.status.value,
                        opcode=wc.opcode.value, byte_len=wc.byte_len)

    def _post_recv_slot(self, spec: QpSpec, slot: int) -> None:
        assert spec.recv_buffer is not None
        at = spec.recv_buffer + slot * spec.recv_size
        self._wire(self.qps[spec.name].post_recv(
            RecvWR(1 << 32 | slot, (SGE(at, spec.recv_size),))))

    def _fault(self, f: PageFault) -> None:
        """The SANIC's default error handler (B3.28, D3.8): MapLocalPage, or give up."""
        qp = self.qp_names.get(f.qp_num, str(f.qp_num))
        if self.cfg.fault_handler == "map":
            self.ctx.map_local_page(f.va)
            self._event("fault", qp=qp, va=f.va, rkey=f.rkey, resolved=True)
        else:
            self.ctx.keys.unresolvable.add(f.va >> PAGE_SHIFT)
            self._event("fault", qp=qp, va=f.va, rkey=f.rkey, resolved=False)

    # ---- counted runs ------------------------------------------------------------------------
    def _pump(self, name: str, run: Run) -> None:
        qp = self.qps[name]
        while run.posted < run.count and run.posted - run.done < run.depth:
            if qp.state is QpState.ERROR:  # the rest would only be flushed
                run.done += run.count - run.posted
                run.first_error = run.first_error or WcStatus.WR_FLUSH_ERR.value
                run.posted = run.count
                break
            if run.started is None:
                run.started = self.now
            run.last_post = self.now
            self._wire(self._post(name, run.make(run.posted), run.dest))
            run.posted += 1

    def _finish(self, run: Run) -> None:
        self._event("burst", qp=run.qp, wr_id=run.first_wr, count=run.count,
                    success=run.success, first_error=run.first_error, **run.timing(),
                    **({"successes": run.successes} if run.successes else {}))

    def _increment_done(self, inc: Increment, wc) -> None:
        run = inc.run
        if wc.status is not WcStatus.SUCCESS:
            run.done, run.first_error = run.count, wc.status.value
            self._finish(run)
            return
        old = int.from_bytes(self.load(self.specs[run.qp].process, inc.local, 8), "big")
        if inc.by == "fetch_add" or old == inc.guess:
            run.done += 1
            run.successes += 1
            inc.guess = old + 1
        else:
            inc.guess = old
        if run.done == run.count:
            run.success = run.count
            self._event("burst", qp=run.qp, wr_id=run.first_wr, count=run.count,
                        success=run.count, first_error=None, successes=run.successes,
                        attempts=inc.attempts)
            return
        self._issue(inc)

    def _issue(self, inc: Increment) -> None:
        wr = inc.run.make(inc.attempts)
        if inc.by == "cas":
            wr = SendWR(wr.wr_id, wr.opcode, wr.sg_list, wr.remote_addr, wr.rkey,
                        compare_add=inc.guess, swap=inc.guess + 1)
        inc.attempts += 1
        self._increments[wr.wr_id] = inc
        self._wire(self._post(inc.run.qp, wr, inc.run.dest))

    def _post(self, qp: str, wr: SendWR, dest: RdDest | None) -> list[tuple[str, Packet]]:
        """ibv_post_send on an RC QP; on an RD QP, to ``dest`` (its EE context's peer)."""
        if dest is not None:
            return self.qps[qp].post_rd(wr, dest, self.now)
        return self.qps[qp].post_send(wr, self.now)

    # ---- what an application does --------------------------------------------------------
    def post(self, qp: str, wr: SendWR) -> None:
        """ibv_post_send for the application (its ``wr_id`` tagged ``APP_WR``)."""
        self._wire(self.qps[qp].post_send(wr, self.now))

    def take_output(self) -> list[Transmit]:
        """After an application's own calls (not a verb step's): what they completed is
        taken, what they sent goes out."""
        self._drain()
        return self._flush()

    def reconnect(self, qp: str) -> None:
        """An RC QP in ERROR back to RTS with the same peer QP, its PSNs from 0 again (both
        ends do this, each when it learns the QP failed: the peer's application says so)."""
        q, spec = self.qps[qp], self.specs[qp]
        q.reset(self.now)
        q.connect(q.peer, self.cfg.peers[spec.peer].qpns[spec.remote], self.now,
                  timeout=spec.timeout, retry_cnt=spec.retry_cnt, rnr_retry=spec.rnr_retry)
        for slot in range(spec.receives):
            self._post_recv_slot(spec, slot)

    # ---- memory, as the process sees it ------------------------------------------------------
    def load(self, process: str, ea: int, n: int) -> bytes:
        """What the process loads from [ea, ea+n): through its own tables (the VMM's)."""
        table, mem = self.vmm.tables[self.procs[process].pid], self.vmm.memory
        return b"".join(mem.read(self.vmm.page_table.pa(table.va(at), Prot.READ), k)
                        for at, k in pieces(ea, n))

    def store(self, process: str, ea: int, data: bytes) -> None:
        table, mem = self.vmm.tables[self.procs[process].pid], self.vmm.memory
        done = 0
        for at, k in pieces(ea, len(data)):
            mem.write(self.vmm.page_table.pa(table.va(at), Prot.WRITE), data[done:done + k])
            done += k

    def _next_wr(self, qp: str, n: int = 1) -> int:
        first = self._wr_ids.get(qp, 1)
        self._wr_ids[qp] = first + n
        return first
