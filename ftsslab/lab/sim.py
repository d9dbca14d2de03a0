"""The deterministic sim backend: in-process, virtual clock, no root.

Every node is a sans-IO core, made by its kind's ``KindSpec.sim(node, scenario)``: a
switch is a ``SwitchCore``, a host a ``HostCore`` that records what it receives (frames
it "sends" are the runner's ``send``), answers ARP and runs ``fetch`` steps' HTTP client
on a modelled TCP (``tcp.py``, ``fetch.py``) where veth runs a real one. Links carry frames with a
fixed latency on an event queue (``heapq`` ordered by (time, sequence)); time is
kept in integer nanoseconds, so the same scenario always gives the same frames,
times and events. Nothing happens between calls: ``advance(s)`` runs the queue up
to ``now + s`` -- frames still in flight are delivered only by a later ``advance``.

Each frame is captured once on its link, when it enters the link (src = the
endpoint it left, dst = the peer), labelled with the current step.

A link the scenario impairs (``Scenario.impaired_links``) puts each direction's frames
through an ``impair.Direction`` seeded from the scenario: a frame it loses is captured
(``impair="lost"``) and never delivered; a duplicate is captured as a frame of its own; a
corrupted frame as delivered (``impair`` names the bit). Such a frame is captured with the
time it entered, but only once its fate is settled -- after its delay and the rate's token
bucket (``impair.Shaper``; then the link latency) -- so ``frames()`` holds what has been
delivered or lost by now, as on veth.

A core is any object with ``on_frame(iface, frame, now) -> list[Transmit]``;
optional members the backend uses when present:

- ``set_port(iface, up)`` -- a link of the node went down/up;
- ``on_link(iface, up, now)`` -> list[Transmit] -- the same, for a model that acts on it
  (a process watching its links' carrier on veth);
- ``add(entry, now)`` / ``remove(entry, now)`` -> list[TableEvent], ``entries()``
  -- forwarding-table nodes (``table`` steps, ``TableHas``);
- ``on_kill(now)`` / ``on_restart(now)`` -> list[Transmit] (kinds with
  ``KindSpec.has_process``; with ``kill_stops_dataplane`` a killed node drops every
  frame until restarted -- not a switch, whose data plane on veth is the kernel's:
  killing its control process stops only table changes, and the table survives);
- ``next_deadline() -> float | None`` and ``on_timer(now) -> list[Transmit]`` for
  cores with timers (retransmissions and the like);
- ``node_events() -> list[dict]`` -- what a model logged, as a veth node process writes
  its events file (``logged`` expectations, merged into ``events()``);
- ``fetch(urls, timeout, now)`` / ``fetch_result(key)`` (hosts), and
  ``handoff(to, client_port, now)`` and ``set_health(health, now)`` -> list[Transmit]
  (kinds with ``hands_off``) for those steps.

A run never loops without end, nor ends in a traceback: a node whose timer keeps
firing at one virtual instant (``MAX_SPINS`` times with no frame for it in between),
more than ``MAX_FRAMES`` captured frames or ``MAX_EVENTS`` queue events, or a core
that raises end it with a ``BackendError`` naming the node or link (the CLI exits 3).
"""

from __future__ import annotations

import hashlib
import heapq
import ipaddress
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import frames, tcp
from .backend import Backend, BackendError, CapturedFrame, Event, ExecResult
from .fetch import TIMEOUT_STATUS, HttpFetch, Target, parse_urls
from .impair import GONE, LINK_DOWN, QUEUE_FULL, Copy, Direction, Shaper, direction_seed, note
from .kinds import KindSpec, get_kind, kinds
from .model import ForwardingEntry, Impairments, Link, Node, Scenario, max_frame
from .switch import Transmit
from .tcp import Tcb

__all__ = ["DEFAULT_LATENCY", "HostCore", "SimBackend", "node_ifaces"]

DEFAULT_LATENCY = 10e-6      # seconds a frame takes to cross a link
# Captured frames in one run (a forwarding loop floods forever): room for a `send` of the
# loader's largest count (1000000) flooded by a 4-port switch, 4 captured frames per copy.
MAX_FRAMES = 4_000_000
MAX_EVENTS = 40_000_000      # queue events in one run: ends runs no frame limit catches
TIME_EPS = 1e-9              # the virtual clock's resolution
FETCH_TICK = 0.001          # seconds a foreground fetch advances the clock by at a time
MAX_SPINS = 10_000           # timer firings of one node at one instant: it is stuck
_NS = 1_000_000_000


def node_ifaces(node: str, scenario: Scenario) -> list[tuple[str, str]]:
    """``(iface, mac)`` of ``node``'s link endpoints, in order of appearance."""
    out = []
    for link in scenario.links:
        for ep in (link.a, link.b):
            if ep.node == node:
                out.append((ep.iface, ep.mac))
    return out


@dataclass
class _Fetch:
    """One ``fetch`` of a host: ARP for the server, then a connection that GETs every URL."""

    target: Target
    http: HttpFetch
    iface: str
    port: int
    ends: float  # its timeout, virtual seconds
    tcb: Tcb | None = None
    mac: bytes | None = None  # the server's, once ARP resolved it
    arp_at: float = 0.0  # when the next ARP request goes out
    asked: bool = False  # the requests are written
    result: ExecResult | None = None


ARP_RETRY = 1.0  # seconds between a host's ARP requests (the kernel's retrans_time)
FETCH_PORTS = 49152  # the first client port of a host's fetches


@dataclass
class HostCore:
    """A host: records every frame that reaches one of its interfaces, answers ARP for its
    addresses, and runs the ``fetch`` step's client (``fetch.HttpFetch`` over ``tcp.Tcb``).

    ``ifaces`` holds (iface, mac, ipv4 with prefix or None), in link order."""

    name: str
    ifaces: list[tuple[str, str, str | None]] = field(default_factory=list)
    received: list[tuple[float, str, bytes]] = field(default_factory=list)
    fetches: list[_Fetch] = field(default_factory=list)
    arp: dict[str, bytes] = field(default_factory=dict)  # ip -> mac

    def on_frame(self, iface: str, frame: bytes, now: float) -> list[Transmit]:
        self.received.append((now, iface, bytes(frame)))
        me = self._me(iface)
        if me is None:
            return []
        if (arp := frames.parse_arp(frame)) is not None:
            return self._on_arp(iface, me, arp, now)
        packet = frames.ip_payload(frame)
        seg = tcp.decode(packet) if packet is not None else None
        if seg is None:
            return []
        out: list[Transmit] = []
        for f in self.fetches:
            if f.tcb is not None and f.iface == iface:
                out += self._drive(f, f.tcb.on_segment(seg, now), now)
        return out

    def fetch(self, urls: tuple[str, ...], timeout: float, now: float,
              pipeline: bool = False) -> tuple[int, list[Transmit]]:
        """Start a fetch: (its key for ``fetch_result``, the frames to send)."""
        target = parse_urls(urls)
        iface = next((i for i, _, ip in self.ifaces if ip and ipaddress.IPv4Address(target.host)
                      in ipaddress.IPv4Interface(ip).network), None)
        if iface is None:
            raise BackendError(f"{self.name} has no address on the subnet of {target.host} "
                               "(the sim's hosts have no routes)")
        f = _Fetch(target, HttpFetch(target, pipeline), iface, FETCH_PORTS + len(self.fetches),
                   now + timeout, arp_at=now)
        self.fetches.append(f)
        return len(self.fetches) - 1, self._proceed(f, now)

    def fetch_result(self, key: int) -> ExecResult | None:
        return self.fetches[key].result

    def next_deadline(self) -> float | None:
        times = [t for f in self.fetches for t in
                 ((f.tcb.next_deadline() if f.tcb else None),
                  None if f.result else f.ends, None if f.mac or f.result else f.arp_at)
                 if t is not None]
        return min(times, default=None)

    def on_timer(self, now: float) -> list[Transmit]:
        now += TIME_EPS  # the clock is integer ns: a deadline may be a rounding ahead
        out: list[Transmit] = []
        for f in self.fetches:
            if f.result is None and now >= f.ends:
                self._end(f, TIMEOUT_STATUS, "timed out")
                if f.tcb is not None:
                    out += self._drive(f, f.tcb.abort(), now)
            elif f.tcb is not None:
                out += self._drive(f, f.tcb.on_timer(now), now)
            elif f.result is None and now >= f.arp_at:
                out += self._proceed(f, now)
        return out

    # ---- internals ----------------------------------------------------------------------

    def _me(self, iface: str) -> tuple[str, str] | None:
        """(mac, ip) of ``iface`` when it has an address."""
        return next(((mac, ip.split("/")[0]) for i, mac, ip in self.ifaces
                     if i == iface and ip), None)

    def _on_arp(self, iface: str, me: tuple[str, str], arp: frames.Arp,
                now: float) -> list[Transmit]:
        if arp.target_ip != me[1] and arp.op == 1:
            return []
        self.arp[arp.sender_ip] = arp.sender_mac
        out = [Transmit(iface, frames.arp_reply(arp, me[0]))] if arp.op == 1 else []
        for f in self.fetches:
            if f.tcb is None and f.result is None and f.target.host in self.arp:
                out += self._proceed(f, now)
        return out

    def _proceed(self, f: _Fetch, now: float) -> list[Transmit]:
        """ARP until the server's MAC is known, then connect."""
        mac, ip = self._me(f.iface)
        f.mac = self.arp.get(f.target.host)
        if f.mac is None:
            f.arp_at = now + ARP_RETRY
            return [Transmit(f.iface, frames.arp_request(mac, ip, f.target.host))]
        iss = _isn(self.name, f.port)
        f.tcb, segs = Tcb.connect((ip, f.port), (f.target.host, f.target.port), iss, now)
        return self._drive(f, segs, now)

    def _drive(self, f: _Fetch, segs: list[tcp.TcpSegment], now: float) -> list[Transmit]:
        """Send ``segs``, then let the HTTP side read and write what it can."""
        out = list(segs)
        tcb = f.tcb
        if tcb.state is tcp.TcpState.ESTABLISHED and not f.asked:
            f.asked, requests = True, f.http.requests()
            n, more = tcb.write(requests, now)
            if n < len(requests):
                raise BackendError(f"{self.name}: a fetch's requests exceed the send buffer")
            out += more
        if tcb.received:
            f.http.feed(tcb.read())
            if nxt := f.http.due():
                out += tcb.write(nxt, now)[1]
        if tcb.peer_fin and not f.http.done:
            f.http.eof()
        if f.result is None and (f.http.done or tcb.reset):
            if f.http.error or not f.http.done:
                gave_up = tcb.history[-1][2] is tcp.TcpEvent.GIVE_UP
                self._end(f, 1, f.http.error or ("no answer from the server" if gave_up
                                                 else "the connection was reset"))
            else:
                self._end(f, 0, "")
            out += tcb.close(now)
        elif f.result is not None and tcb.peer_fin:
            out += tcb.close(now)
        mac = self._me(f.iface)[0]
        return [Transmit(f.iface, frames.ether(f.mac, mac, frames.ETH_P_IP, s.encode()))
                for s in out]

    def _end(self, f: _Fetch, status: int, error: str) -> None:
        stdout = "".join(line + "\n" for line in f.http.lines)
        urls = tuple(f"http://{f.target.host}:{f.target.port}{p}" for p in f.target.paths)
        f.result = ExecResult(("fetch", *urls), status, stdout, error + ("\n" if error else ""))


def _isn(host: str, port: int) -> int:
    """A deterministic initial sequence number, different for every connection."""
    return int.from_bytes(hashlib.blake2s(f"{host}:{port}".encode(), digest_size=4).digest(),
                          "big")


@dataclass
class _SimNode:
    node: Node
    spec: KindSpec
    core: Any
    alive: bool = True
    timer_ns: int | None = None   # the deadline currently queued
    spin_ns: int = -1             # the instant of the last timer firings ...
    spins: int = 0                # ... and how many, since a frame last arrived

    @property
    def has_process(self) -> bool:
        return self.spec.has_process

    @property
    def drops_all(self) -> bool:
        return not self.alive and self.spec.kill_stops_dataplane


class SimBackend(Backend):
    name = "sim"

    def __init__(self, latency: float = DEFAULT_LATENCY, max_frames: int = MAX_FRAMES,
                 max_events: int = MAX_EVENTS):
        if latency < 0:
            raise ValueError("latency must be >= 0")
        self._latency_ns = round(latency * _NS)
        self._max_frames = max_frames
        self._max_events = max_events
        self._scenario: Scenario | None = None
        self._reset()
        self._frames: list[CapturedFrame] = []
        self._late = False                  # a frame was captured after later ones
        self._events: list[Event] = []
        self._all_nodes: dict[str, _SimNode] = {}  # kept after down: their logged events
        self.stats: dict[str, int] = {}

    def _reset(self) -> None:
        self._nodes: dict[str, _SimNode] = {}
        self._links: dict[str, Link] = {}               # canonical name -> link
        self._link_up: dict[str, bool] = {}
        self._endpoints: dict[str, Link] = {}           # "h1:eth0" -> its link
        self._queue: list[tuple[int, int, str, tuple]] = []
        self._seq = 0
        self._now_ns = 0
        self._step = ""
        self._done = 0                                  # queue events processed
        self._timers: Counter[str] = Counter()          # node -> its timer firings
        # impaired link -> its directions (frames leaving a, leaving b) and their shapers
        self._impaired: dict[str, tuple[Direction, Direction]] = {}
        self._shapers: dict[tuple[str, int], Shaper] = {}

    # ---- lifecycle ---------------------------------------------------------------------

    def up(self, scenario: Scenario) -> None:
        if self._scenario is not None:
            raise BackendError("the sim lab is already up")
        self._reset()
        self._frames = []
        self._late = False
        self._events = []
        self.stats = dict.fromkeys(
            ("sent", "delivered", "dropped_link_down", "dropped_killed", "dropped_mtu",
             "dropped_no_link"), 0)
        try:
            for node in scenario.nodes:
                spec = get_kind(node.kind)
                if spec is None or spec.sim is None:
                    sim_kinds = ", ".join(k.name for k in kinds() if k.sim is not None)
                    raise BackendError(f"node {node.name}: kind {node.kind!r} has no sim model "
                                       f"(sim kinds: {sim_kinds})")
                self._nodes[node.name] = _SimNode(node, spec, spec.sim(node, scenario))
            for link in scenario.links:
                for ep in (link.a, link.b):
                    if ep.node not in self._nodes:
                        raise BackendError(f"link {link.name}: no node {ep.node!r}")
                    if ep.name in self._endpoints:
                        raise BackendError(f"endpoint {ep.name} is on two links")
                    self._endpoints[ep.name] = link
                self._links[link.name] = link
                self._link_up[link.name] = True
            for name in sorted(scenario.impaired_links()):
                link = self._links[name]
                seed = scenario.link_seed(link)
                self._impaired[name] = (
                    Direction(direction_seed(seed, name, link.a.name), link.impair[0]),
                    Direction(direction_seed(seed, name, link.b.name), link.impair[1]))
                self._set_shapers(link, link.impair)
        except BackendError:
            self._reset()
            raise
        except Exception as exc:
            self._reset()
            raise BackendError(f"sim: cannot build the lab: {exc}") from exc
        self._scenario = scenario
        self._all_nodes = dict(self._nodes)
        for sim in self._nodes.values():
            self._arm_timer(sim)

    def down(self) -> None:
        """Drop the topology; ``frames()`` and ``events()`` stay readable."""
        self._scenario = None
        self._reset()

    def _need_up(self) -> None:
        if self._scenario is None:
            raise BackendError("the sim lab is not up")

    # ---- time --------------------------------------------------------------------------

    def now(self) -> float:
        return self._now_ns / _NS

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise BackendError(f"cannot advance by a negative time ({seconds})")
        self._need_up()
        target = self._now_ns + round(seconds * _NS)
        queue = self._queue
        while queue and queue[0][0] <= target:
            due, _, kind, payload = heapq.heappop(queue)
            self._now_ns = due
            self._done += 1
            if self._done > self._max_events:
                busiest = "".join(f" (node {node}'s timer fired {n} times)"
                                  for node, n in self._timers.most_common(1))
                raise BackendError(f"more than {self._max_events} sim events in this run"
                                   f"{busiest}: the run would not end in reasonable time; "
                                   "shorten waits or raise intervals")
            if kind == "deliver":
                self._deliver(*payload)
            elif kind == "impaired":
                self._impaired_out(*payload)
            else:
                self._timer(*payload)
        self._now_ns = target

    def set_step(self, label: str) -> None:
        self._step = label

    def _push(self, due_ns: int, kind: str, payload: tuple) -> None:
        heapq.heappush(self._queue, (due_ns, self._seq, kind, payload))
        self._seq += 1

    # ---- frames ------------------------------------------------------------------------

    def send(self, endpoint: str, frame: bytes) -> None:
        self._need_up()
        link = self._endpoints.get(endpoint)
        if link is None:
            raise BackendError(f"no endpoint {endpoint!r}")
        data = bytes(frame)
        if len(data) < 14:
            raise BackendError(f"{endpoint}: a frame of {len(data)} bytes is shorter than an "
                               "Ethernet header")
        limit = max_frame(data, link.mtu)
        if len(data) > limit:
            raise BackendError(f"{endpoint}: a frame of {len(data)} bytes exceeds the link MTU "
                               f"{link.mtu} (at most {limit} bytes with the Ethernet header)")
        self.stats["sent"] += 1
        self._transmit(link, endpoint, data)

    def _transmit(self, link: Link, src: str, data: bytes) -> None:
        """``data`` enters ``link`` at ``src``: capture it and queue its arrival."""
        if not self._link_up[link.name]:
            self.stats["dropped_link_down"] += 1
            return
        if len(data) > max_frame(data, link.mtu):
            self.stats["dropped_mtu"] += 1
            return
        if len(self._frames) >= self._max_frames:
            busiest, n = Counter(f.link for f in self._frames).most_common(1)[0]
            raise BackendError(f"more than {self._max_frames} frames in this run ({n} on link "
                               f"{busiest}): a forwarding loop, or more traffic than the sim "
                               "keeps; send fewer frames")
        dst = link.other(src)
        directions = self._impaired.get(link.name)
        if directions is not None:
            side = 0 if src == link.a.name else 1
            for copy in directions[side].decide(data, self._now_ns):
                if copy.flags & GONE:
                    self._capture_late(link, side, copy, self._now_ns, self._step)
                else:
                    self._push(copy.due_ns, "impaired",
                               (link.name, side, copy, self._now_ns, self._step))
            return
        self._frames.append(CapturedFrame(self.now(), link.name, src, dst.name, data, self._step))
        self._push(self._now_ns + self._latency_ns, "deliver", (link.name, dst.node, dst.iface,
                                                                 data))

    def _impaired_out(self, name: str, side: int, copy: Copy, entered_ns: int,
                      step: str) -> None:
        """A copy leaves its delay: through the rate's bucket (if any) onto the wire."""
        link = self._links[name]
        leaves = self._now_ns
        if not self._link_up[name]:
            copy = copy._replace(flags=copy.flags | LINK_DOWN)
            self.stats["dropped_link_down"] += 1
        elif (shaper := self._shapers.get((name, side))) is not None:
            got = shaper.leave(self._now_ns, len(copy.data))
            if got is None:
                copy = copy._replace(flags=copy.flags | QUEUE_FULL)
            else:
                leaves = got
        self._capture_late(link, side, copy, entered_ns, step)
        if not copy.flags & GONE:
            dst = link.b if side == 0 else link.a
            self._push(leaves + self._latency_ns, "deliver", (name, dst.node, dst.iface,
                                                              copy.data))

    def _capture_late(self, link: Link, side: int, copy: Copy, entered_ns: int,
                      step: str) -> None:
        src, dst = (link.a, link.b) if side == 0 else (link.b, link.a)
        frame = CapturedFrame(entered_ns / _NS, link.name, src.name, dst.name, copy.data, step,
                              note(copy.flags, copy.bit))
        if self._frames and self._frames[-1].time > frame.time:
            self._late = True
        self._frames.append(frame)

    def _set_shapers(self, link: Link, impair: Impairments) -> None:
        for side, imp in enumerate(impair):
            shaper = self._shapers.get((link.name, side))
            if not imp.rate:
                self._shapers.pop((link.name, side), None)
            elif shaper is None:
                self._shapers[(link.name, side)] = Shaper(imp.rate, link.mtu)
            else:
                shaper.set_rate(imp.rate)

    def _deliver(self, link: str, node: str, iface: str, data: bytes) -> None:
        if not self._link_up[link]:
            self.stats["dropped_link_down"] += 1
            return
        sim = self._nodes[node]
        if sim.drops_all:
            self.stats["dropped_killed"] += 1
            return
        self.stats["delivered"] += 1
        sim.spins = 0  # new input: another timer at this instant is progress
        self._emit(sim, self._model(sim, "on_frame", iface, data, self.now()))

    def _emit(self, sim: _SimNode, actions: list[Transmit] | None) -> None:
        for action in actions or ():
            src = f"{sim.node.name}:{action.port}"
            link = self._endpoints.get(src)
            if link is None:
                self.stats["dropped_no_link"] += 1
                continue
            self._transmit(link, src, bytes(action.frame))
        self._arm_timer(sim)

    def _model(self, sim: _SimNode, method: str, *args: Any) -> Any:
        """``sim.core.<method>(*args)``; a model that raises ends the run, naming the node."""
        try:
            return getattr(sim.core, method)(*args)
        except Exception as exc:
            raise BackendError(f"node {sim.node.name}: its {sim.node.kind} model failed in "
                               f"{method}: {type(exc).__name__}: {exc}") from exc

    def _arm_timer(self, sim: _SimNode) -> None:
        if not hasattr(sim.core, "next_deadline"):
            return
        when = self._model(sim, "next_deadline")
        if when is None:
            return
        if not math.isfinite(when):
            raise BackendError(f"node {sim.node.name}: its {sim.node.kind} model asked for a "
                               f"timer at {when}")
        due = round(when * _NS)
        if due / _NS < when:  # (a deadline between two nanoseconds: the later one, so that
            due += 1          # the model's clock has reached it when it fires)
        due = max(self._now_ns, due)
        if sim.timer_ns is not None and sim.timer_ns <= due:
            return   # an earlier (or the same) wake-up is already queued
        sim.timer_ns = due
        self._push(due, "timer", (sim.node.name, due))

    def _timer(self, node: str, due: int) -> None:
        sim = self._nodes.get(node)
        if sim is None or sim.timer_ns != due:
            return   # superseded by an earlier one
        sim.timer_ns = None
        if sim.drops_all:
            return
        if sim.spin_ns != due:
            sim.spin_ns, sim.spins = due, 0
        sim.spins += 1
        if sim.spins > MAX_SPINS:
            raise BackendError(f"node {node}: its timer fired {MAX_SPINS} times at "
                               f"{self.now():.9f} s and virtual time did not move on: its "
                               f"{sim.node.kind} model is stuck (an option out of range?)")
        self._timers[node] += 1
        self._emit(sim, self._model(sim, "on_timer", self.now()))

    # ---- control -----------------------------------------------------------------------

    def exec(self, node: str, argv: tuple[str, ...], timeout: float,
             background: bool = False) -> ExecResult | None:
        raise BackendError(f"exec on {node} ({' '.join(argv)}) needs the veth backend "
                           "(a real kernel stack)")

    def fetch(self, node: str, urls: tuple[str, ...], timeout: float,
              background: bool = False, pipeline: bool = False) -> Callable[[], ExecResult]:
        """The host's modelled client (``HostCore.fetch``); a fetch in the foreground runs
        the clock until it is over (its timeout included)."""
        sim = self._node(node)
        if not hasattr(sim.core, "fetch"):
            raise BackendError(f"{node} ({sim.node.kind}) has no HTTP client: fetch from a host")
        key, out = sim.core.fetch(urls, timeout, self.now(), pipeline)
        self._emit(sim, out)
        while not background and sim.core.fetch_result(key) is None:
            self.advance(FETCH_TICK)

        def result() -> ExecResult:
            got = sim.core.fetch_result(key)
            return got or ExecResult(("fetch", *urls), TIMEOUT_STATUS, "",
                                     "still running when its result was checked\n")
        return result

    def handoff(self, node: str, to: str, client_port: int | None, htype: str = "full") -> None:
        sim = self._node(node)
        if not hasattr(sim.core, "handoff"):
            raise BackendError(f"{node} ({sim.node.kind}) does not hand connections off")
        if not sim.alive:
            raise BackendError(f"{node}: its process is not running (killed)")
        try:
            client, out = sim.core.handoff(to, client_port, self.now(), htype)
        except (LookupError, ValueError) as exc:
            raise BackendError(f"{node}: handoff to {to}: {exc}") from None
        self._emit(sim, out)
        self._events.append(Event(self.now(), node, "handoff", f"{client} -> {to}"))

    def verb(self, node: str, args: Mapping[str, Any]) -> None:
        sim = self._node(node)
        if not hasattr(sim.core, "verb"):
            raise BackendError(f"{node} ({sim.node.kind}) takes no verbs")
        if not sim.alive:
            raise BackendError(f"{node}: its process is not running (killed)")
        self._emit(sim, sim.core.verb(args, self.now()))
        self._events.append(Event(self.now(), node, "verb", str(args.get("op"))))

    def set_health(self, node: str, health: str) -> None:
        sim = self._node(node)
        if not hasattr(sim.core, "set_health"):
            raise BackendError(f"{node} ({sim.node.kind}) reports no health")
        if not sim.alive:
            raise BackendError(f"{node}: its process is not running (killed)")
        try:
            out = sim.core.set_health(health, self.now())
        except ValueError as exc:
            raise BackendError(f"{node}: health {health}: {exc}") from None
        self._emit(sim, out)
        self._events.append(Event(self.now(), node, "health", health))

    def _link(self, name: str) -> Link:
        link = self._links.get(name)
        if link is None:
            parts = name.split()
            link = self._links.get(" ".join(reversed(parts))) if len(parts) == 2 else None
        if link is None:
            raise BackendError(f"no link {name!r}")
        return link

    def set_link(self, link: str, up: bool) -> None:
        self._need_up()
        lk = self._link(link)
        self._link_up[lk.name] = bool(up)
        for ep in (lk.a, lk.b):
            sim = self._nodes[ep.node]
            if hasattr(sim.core, "set_port"):
                self._model(sim, "set_port", ep.iface, bool(up))
            if hasattr(sim.core, "on_link"):
                self._emit(sim, self._model(sim, "on_link", ep.iface, bool(up), self.now()))
        state = "up" if up else "down"
        self._events.append(Event(self.now(), lk.name, f"link-{state}", f"{lk.name} {state}"))

    def impair(self, link: str, impair: Impairments) -> None:
        self._need_up()
        lk = self._link(link)
        directions = self._impaired.get(lk.name)
        if directions is None:
            raise BackendError(f"link {lk.name} is not impaired by the scenario (only links "
                               "with impair: or an impair step can be)")
        for direction, imp in zip(directions, impair, strict=True):
            direction.params = imp
        self._set_shapers(lk, impair)
        self._events.append(Event(self.now(), lk.name, "impair", lk.impair_text(impair)))

    def _node(self, name: str) -> _SimNode:
        self._need_up()
        sim = self._nodes.get(name)
        if sim is None:
            raise BackendError(f"no node {name!r}")
        return sim

    def _table_core(self, switch: str) -> Any:
        sim = self._node(switch)
        if not hasattr(sim.core, "entries"):
            raise BackendError(f"{switch} ({sim.node.kind}) has no forwarding table")
        return sim

    def table(self, switch: str, op: str, entry: ForwardingEntry) -> None:
        sim = self._table_core(switch)
        if op not in ("add", "remove"):
            raise BackendError(f"unknown table operation {op!r} (add or remove)")
        if not sim.alive:
            raise BackendError(f"{switch}: its control process is not running (killed); "
                               "restart it first")
        try:
            changes = getattr(sim.core, op)(entry, self.now())
        except ValueError as exc:
            raise BackendError(str(exc)) from None
        for ch in changes:
            self._events.append(Event(self.now(), switch, ch.kind, ch.detail))

    def entries(self, switch: str) -> list[ForwardingEntry]:
        return list(self._table_core(switch).core.entries())

    def process(self, node: str, action: str) -> None:
        sim = self._node(node)
        if not sim.has_process:
            raise BackendError(f"{node} ({sim.node.kind}) has no process to {action}")
        if action not in ("kill", "restart"):
            raise BackendError(f"unknown process action {action!r} (kill or restart)")
        sim.alive = action == "restart"
        done = "killed" if action == "kill" else "restarted"
        self._events.append(Event(self.now(), node, action, f"{node}: process {done}"))
        hook = f"on_{action}"
        self._emit(sim, self._model(sim, hook, self.now()) if hasattr(sim.core, hook) else None)

    # ---- results -----------------------------------------------------------------------

    def frames(self) -> list[CapturedFrame]:
        # appended in (virtual) time order, but for frames of impaired links (stable sort)
        return sorted(self._frames, key=lambda f: f.time) if self._late else list(self._frames)

    def events(self) -> list[Event]:
        """The backend's events and those the node models logged (``node_events``), in
        time order, as the veth backend merges its nodes' events files."""
        out = list(self._events)
        for name, sim in self._all_nodes.items():
            if hasattr(sim.core, "node_events"):
                for rec in sim.core.node_events():
                    rec = dict(rec)
                    t, kind = rec.pop("t"), rec.pop("kind")
                    rec.pop("node", None)
                    detail = " ".join(f"{k}={v}" for k, v in sorted(rec.items()) if v is not None)
                    out.append(Event(t, name, kind, detail))
        return sorted(out, key=lambda e: e.time)

    def node_events(self, node: str) -> list[dict]:
        sim = self._all_nodes.get(node)
        if sim is not None and hasattr(sim.core, "node_events"):
            return sim.core.node_events()
        return super().node_events(node)

    def reports(self) -> dict[str, dict]:
        """Each live model's report: a killed node has none, as on veth, where the report
        is asked of the running process."""
        return {name: sim.core.report() for name, sim in self._nodes.items()
                if callable(getattr(sim.core, "report", None)) and sim.alive}
