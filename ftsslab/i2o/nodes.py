# SPDX-License-Identifier: GPL-2.0-or-later
"""Seed 001's lab nodes, sans-IO: ``I2oHostCore`` (a host exporting its IOPs onto the SAN) and
``I2oRemoteCore`` (a remote server using them). Each is a seed-003 endnode (``SanicCore``:
its RoCEv2 port, memory, keys and QPs) with an application on it -- the host driver module
with its SAN side (``san_port``), or the client library (``client``) -- and the verbs a
scenario's `verb` steps call. Both backends run them unchanged: the sim directly, veth
through ``i2od`` (sanicd's loop).

The host's IOPs sit on an in-process emulated bus (D1.4) in both backends, so the call traces
and the context values are the same in sim and veth (check 15): an IOP works on what was
posted at once, or ``iop_latency`` later (a timer), which keeps requests outstanding in the
callback table as a slower device would.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ftsslab.fast import i2o as fast
from ftsslab.lab.switch import Transmit
from ftsslab.san.node import SanicCore
from ftsslab.san.node_config import SanicConfig

from .blockdev import BlockDevice
from .bus import LocalBus
from .client import ABANDONED, FAILED, Done, RemoteClient
from .ddm import Ddm
from .frames import FIRST_IOP_ID
from .host import HostDriverModule
from .iop import Iop
from .san_layout import CLIENT, MAX_TRANSFER, PROCESS, Layout
from .san_port import HostSanMemory, HostSanPort, Service
from .trace import DigestTrace

DeviceFactory = Callable[[str, int, int], BlockDevice]  # (IOP, device index, bytes)


def _short(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _pattern(length: int, seed: int | None, byte: int | None) -> bytes:
    if byte is not None:
        return bytes([byte]) * length
    return random.Random(seed or 0).randbytes(length)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


@dataclass(frozen=True)
class HostSpec:
    # (name, device sizes, private, the remotes allowed to attach: None, all)
    iops: tuple[tuple[str, tuple[int, ...], bool, frozenset[str] | None], ...]
    remotes: tuple[str, ...]
    iop_latency: float


class I2oHostCore(SanicCore):
    def __init__(self, cfg: SanicConfig, spec: HostSpec, layout: Layout,
                 devices: DeviceFactory, now: float = 0.0) -> None:
        super().__init__(cfg, now)
        self.spec = spec
        memory = HostSanMemory(self, PROCESS, layout.data, layout.slots * MAX_TRANSFER)
        self.bus = LocalBus(memory)
        self.iop_slots: dict[str, int] = {}
        self.devices: dict[str, list[BlockDevice]] = {}
        for name, sizes, _, _ in spec.iops:
            devs = [devices(name, i, size) for i, size in enumerate(sizes)]
            self.devices[name] = devs
            self.iop_slots[name] = self.bus.attach(Iop(Ddm(devs, memory)))
        self.iop_ids = {name: FIRST_IOP_ID + i for i, (name, *_) in enumerate(spec.iops)}
        private = frozenset(self.iop_ids[n] for n, _, p, _ in spec.iops if p)
        allowed = {self.iop_ids[n]: a for n, _, _, a in spec.iops if a is not None}
        self.module = HostDriverModule(self.bus, private=private, allowed=allowed,
                                       trace=DigestTrace())
        self.module.initialise()
        services = [Service(r, p, self.iop_ids[p], f"{r}_{p}_msg", f"{r}_{p}_data",
                            self.qps[f"{r}_{p}_msg"].qp_num)
                    for r in spec.remotes for p, *_ in spec.iops]
        self.port = HostSanPort(self, self.module, layout, services, process=PROCESS,
                                service_bus=self._posted)
        self.app = self.port
        self._due: float | None = None
        self._device_snapshots: dict[str, bytes] = {}

    # ---- the IOPs at work ----------------------------------------------------------------
    def _posted(self) -> None:
        if self.spec.iop_latency <= 0:
            self._service()
        elif self._due is None:
            self._due = self.now + self.spec.iop_latency

    def _service(self) -> None:
        self.bus.service()
        self.port.serviced()
        self.port.act(self.module.lt.poll())

    def next_deadline(self) -> float | None:
        theirs = super().next_deadline()
        return self._due if theirs is None else theirs if self._due is None else \
            min(theirs, self._due)

    def on_timer(self, now: float) -> list[Transmit]:
        if self._due is not None and now >= self._due:
            self.now, self._due = now, None
            self._service()
        return super().on_timer(now)

    # ---- verbs ---------------------------------------------------------------------------
    def verb(self, args: Mapping[str, Any], now: float) -> list[Transmit]:
        self.now = now
        op = args["op"]
        if op == "kill_iop":
            self.bus.fail(self.iop_slots[args["iop"]])
            self._event("iop", iop=args["iop"], state="FAILED")
            self.port.act(self.module.lt.poll())
        elif op == "restart_iop":
            self.bus.restart(self.iop_slots[args["iop"]])
            self.port.act(self.module.lt.poll())
            self._event("iop", iop=args["iop"], state=self.bus.iop(
                self.iop_slots[args["iop"]]).state.name)
        elif op == "snapshot":
            self._snapshot(args["name"], args.get("since"))
        elif op == "device":
            dev = self.devices[args["iop"]][args.get("device", 0)]
            data = dev.read(args.get("offset", 0), args.get("length", dev.capacity))
            self._event("device", name=args.get("name", ""), iop=args["iop"],
                        bytes=len(data), sha256=_short(data))
        elif op == "trace":
            t = self.module.trace
            self._event("trace", events=t.count, digest=t.digest())
        elif op == "stats":
            self._event("stats", **self.host_stats())
        return self._flush()

    def _snapshot(self, name: str, since: str | None) -> None:
        image = b"".join(d.read(0, d.capacity) for devs in self.devices.values() for d in devs)
        self._device_snapshots[name] = image
        detail: dict[str, Any] = {"name": name, "sha256": _short(image)}
        if since is not None:
            before = self._device_snapshots.get(since, b"")
            detail["changed"] = sum(a != b for a, b in zip(image, before, strict=False)) + \
                abs(len(image) - len(before))
        self._event("snapshot", **detail)

    def host_stats(self) -> dict:
        m = self.module
        per_iop = {f"requests_{n}": self.bus.iop(s).ddm.requests
                   for n, s in self.iop_slots.items()}
        return {**self.port.counters, **per_iop, "callbacks_live": len(m.callbacks),
                "callbacks_stale": m.callbacks.stale, "unknown_connection":
                m.rt.unknown_connection, "malformed": m.rt.malformed,
                "connections": m.rt.connections}

    def stats(self) -> dict:
        return {**super().stats(), **self.host_stats()}


@dataclass(eq=False)
class _Run:
    """A counted `burst` or `verify` on one connection: its ops in flight and its figures."""

    kind: str
    name: str
    iop: str
    device: int
    count: int
    size: int
    depth: int
    op: str
    rng: random.Random
    blocks: list[int]
    started: float
    posted: int = 0
    done: int = 0
    errors: int = 0
    mismatches: int = 0
    latencies: list[float] = field(default_factory=list)
    writes: dict[int, tuple[int, bytes]] = field(default_factory=dict)  # op -> (offset, data)
    reads: dict[int, bytes] = field(default_factory=dict)  # op -> what it must read


class I2oRemoteCore(SanicCore):
    def __init__(self, cfg: SanicConfig, iops: dict[str, int], layout: Layout,
                 now: float = 0.0) -> None:
        super().__init__(cfg, now)
        self.client = RemoteClient(self, layout, iops, process=CLIENT, on_cm=self._cm_event)
        self.app = self.client
        self._names: dict[int, tuple[str, str]] = {}  # op id -> (its `name`, what it wrote)
        self._io_runs: list[_Run] = []
        self._run_of: dict[int, _Run] = {}
        self.on_done: dict[int, Callable[[Done], None]] = {}  # op id -> who else waits for it

    def _cm_event(self, msg: dict) -> None:
        if msg["kind"] == "advertised":
            listing = ";".join(f"{i['iop_id']}:" + ",".join(f"{d['tid']:#x}" for d in
                                                           i["devices"]) for i in msg["iops"])
            self._event("advertised", host=msg["host"], iops=len(msg["iops"]), list=listing)
            return
        status = fast.CM_STATUS_NAMES.get(msg["status"], str(msg["status"]))
        if msg["xfunction"] == fast.CM_CONNECT:
            self._event("connected", iop=msg["iop"], status=status, conn=msg["conn_id"])
        else:
            self._event("disconnected", iop=msg["iop"], status=status)

    # ---- verbs ---------------------------------------------------------------------------
    def verb(self, args: Mapping[str, Any], now: float) -> list[Transmit]:
        self.now = now
        op, c = args["op"], self.client
        try:
            if op == "hello":
                c.hello()
            elif op == "connect":
                c.connect(args["iop"])
            elif op == "disconnect":
                c.disconnect(args["iop"])
            elif op == "write":
                data = _pattern(args["length"], args.get("seed"), args.get("byte"))
                i = c.write(args["iop"], args.get("device", 0), args.get("offset", 0), data,
                            key=args.get("key", "region"),
                            write_through=args.get("write_through", False))
                self._names[i] = (args.get("name", ""), _short(data))
            elif op == "read":
                i = c.read(args["iop"], args.get("device", 0), args.get("offset", 0),
                           args["length"], key=args.get("key", "region"))
                self._names[i] = (args.get("name", ""), "")
            elif op == "flush":
                self._names[c.flush(args["iop"], args.get("device", 0))] = (
                    args.get("name", ""), "")
            elif op in ("burst", "verify"):
                self._start(op, args)
            elif op == "stats":
                self._event("stats", **c.counters, busy=c.busy)
        except KeyError as exc:  # no connection to that IOP (yet)
            self._event("verb", op=op, result="FAILED", error=f"not connected: {exc}")
        self._drain()
        return self._flush()

    def _start(self, kind: str, a: Mapping[str, Any]) -> None:
        size = a.get("size", 4096)
        iop, device = a["iop"], a.get("device", 0)
        capacity = next((d["capacity"] for d in self.client.advertised.iops.get(
            self.client.connections[iop].iop_id, ()) if d["tid"] == 0x010 + device), 0)
        region = min(a.get("region", capacity) or capacity, capacity)
        blocks = list(range(max(1, region // size)))
        rng = random.Random(a.get("seed", 1))
        rng.shuffle(blocks)
        run = _Run(kind, a.get("name", ""), iop, device, a["count"], size, a.get("depth", 1),
                   a.get("rw", "read"), rng, blocks, self.now)
        self._io_runs.append(run)
        self._pump(run)

    def _pump(self, run: _Run) -> None:
        while run.posted < run.count and run.posted - run.done < run.depth:
            offset = run.blocks[run.posted % len(run.blocks)] * run.size
            if run.kind == "verify":
                data = run.rng.randbytes(run.size)
                i = self.client.write(run.iop, run.device, offset, data)
                run.writes[i] = (offset, data)
            elif run.op == "write" or (run.op == "mixed" and run.rng.random() < 0.5):
                i = self.client.write(run.iop, run.device, offset, run.rng.randbytes(run.size))
            else:
                i = self.client.read(run.iop, run.device, offset, run.size)
            self._run_of[i] = run
            run.posted += 1

    # ---- what the client finished --------------------------------------------------------
    def _drain(self) -> None:
        super()._drain()
        while self.client.done:
            done, self.client.done = self.client.done, []
            for d in done:
                self._finished(d)

    def _finished(self, d: Done) -> None:
        if (waiting := self.on_done.pop(d.op_id, None)) is not None:
            waiting(d)
            return
        run = self._run_of.pop(d.op_id, None)
        if run is None:
            name, sha = self._names.pop(d.op_id, ("", ""))
            got = d.kind == "read" and d.req_status == 0
            self._event("io", name=name, op=d.kind, **self._status(d),
                        bytes=len(d.data) if got else 0, sha256=_short(d.data) if got else sha,
                        us=round((d.finished - d.started) * 1e6))
            return
        if d.req_status != 0:
            run.errors += 1
        if run.kind == "verify" and d.op_id in run.writes:
            offset, data = run.writes.pop(d.op_id)
            if d.req_status == 0:  # now read it back
                i = self.client.read(run.iop, run.device, offset, len(data))
                run.reads[i] = data
                self._run_of[i] = run
                return
        elif run.kind == "verify":
            want = run.reads.pop(d.op_id)
            run.mismatches += d.req_status == 0 and d.data != want
        run.latencies.append(d.finished - d.started)
        run.done += 1
        if run.done == run.count:
            self._io_runs.remove(run)
            seconds = self.now - run.started
            moved = run.count * run.size * (2 if run.kind == "verify" else 1)
            self._event("verified" if run.kind == "verify" else "burst", name=run.name,
                        iop=run.iop, count=run.count, errors=run.errors,
                        mismatches=run.mismatches, misroutes=self.client.counters["misroutes"],
                        seconds=round(seconds, 6),
                        iops=round(run.count / seconds) if seconds > 0 else 0,
                        mb_s=round(moved / seconds / 1e6, 3) if seconds > 0 else 0,
                        p50_us=round(_percentile(run.latencies, 0.5) * 1e6),
                        p99_us=round(_percentile(run.latencies, 0.99) * 1e6))
        else:
            self._pump(run)

    @staticmethod
    def _status(d: Done) -> dict:
        names = {**fast.I2O_REPLY_STATUS, FAILED: "FAILED", ABANDONED: "ABANDONED"}
        return {"status": names.get(d.req_status, str(d.req_status)),
                "dsc": fast.I2O_BSA_DSC.get(d.detailed_status, str(d.detailed_status))}

    def stats(self) -> dict:
        return {**super().stats(), **{f"i2o_{k}": v for k, v in self.client.counters.items()}}
