"""``VethBackend``: the scenario on real namespaces, veth pairs and nftables.

- one namespace ``fl<id>-<node>`` per node; veth pairs are created directly in
  their two namespaces, so each side carries the scenario's own interface name
  (nothing is created in the root namespace);
- hosts: a real kernel stack (lo up, the endpoint's MAC/IPv4/MTU, IPv6 off,
  checksum offload off so captured checksums are real);
- switches: bridge ``br0`` (STP off, no ageing within a lab, no multicast
  snooping) for L2 learning, plus the forwarding table as nftables netdev
  ingress rules owned by the switch's control process ``switchd`` (see
  ``switchd.py``). The table lives in the kernel, so it survives a SIGKILL of
  switchd, and a restarted switchd rebuilds its view from it;
- capture of one end of every link (``capture.py``); ``send`` through one
  AF_PACKET socket per endpoint, opened once on a thread that entered the
  endpoint's namespace;
- everything is recorded in ``/run/ftsslab/<id>.json`` (``state.py``) before it
  is created; ``up`` failing or interrupted removes what exists, ``down`` is
  idempotent, and an atexit/SIGTERM guard tears the lab down if the owner exits.
"""

from __future__ import annotations

import atexit
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from ..backend import Backend, BackendError, CapturedFrame, Event, ExecResult
from ..model import ForwardingEntry, Scenario
from . import names
from .capture import Capture, close_sockets
from .control import control_request
from .drivers import VETH_DRIVERS
from .netns import (
    NetnsError,
    call_in_netns,
    checksum_offload_off,
    disable_ipv6,
    ip_batch,
    ip_batches,
    map_in_netns,
    pid_alive,
    proc_start_time,
    run,
    wait_running,
)
from .state import LabState, kill_and_wait, load, remove_lab
from .switchd import SwitchdError, entry_summary, read_kernel_entries, request, validate_entry

KINDS = ("host", "switch")
BRIDGE_OPTS = "stp_state 0 ageing_time 100000000 mcast_snooping 0 group_fwd_mask 0xfff8"
TIMEOUT_STATUS = 124   # like coreutils timeout(1)
_PKG_PARENT = str(Path(__file__).resolve().parents[3])


def check_support() -> None:
    """Raise BackendError unless this process can build namespaces (root, ip netns)."""
    if os.geteuid() != 0:
        raise BackendError("the veth backend needs root (network namespaces); try --backend sim")
    if shutil.which("ip") is None:
        raise BackendError("the veth backend needs iproute2 (`ip`)")
    try:
        run(["ip", "netns", "list"], timeout=10)
    except NetnsError as exc:
        raise BackendError(f"`ip netns` does not work here: {exc}") from exc


class VethBackend(Backend):
    name = "veth"

    def __init__(self, capture: bool = True, python: str | None = None,
                 switchd_timeout: float = 15.0) -> None:
        self._capture_on = capture
        self._python = python or sys.executable
        self._switchd_timeout = switchd_timeout
        self.lab_id: str | None = None
        self.state: LabState | None = None
        self._capture: Capture | None = None
        self._procs: dict[str, subprocess.Popen] = {}
        self._scenario_nodes: dict[str, tuple] = {}  # node -> (Node, its endpoints)
        self._bg: list[subprocess.Popen] = []
        self._send_socks: dict[str, socket.socket] = {}
        self._events: list[Event] = []
        self._step = ""
        self._start_mono = time.monotonic()
        self._start_real = time.time()
        self._lock = threading.RLock()
        self._done = False
        self._owner = True
        self._guarded = False
        self._old_handlers: dict[int, object] = {}
        self._killed: set[str] = set()  # nodes whose process a step killed (not restarted)

    # ---- maps from the state record -----------------------------------------------------------
    def _node(self, node: str) -> dict:
        if self.state is None:
            raise BackendError("the lab is not up")
        try:
            return self.state.nodes[node]
        except KeyError:
            raise BackendError(f"no node {node!r} in lab {self.lab_id}") from None

    def _ns(self, node: str) -> str:
        return self._node(node)["ns"]

    def _link(self, link: str) -> dict:
        assert self.state is not None
        for rec in self.state.links:
            if link in (rec["name"], f"{rec['b']} {rec['a']}"):
                return rec
        raise BackendError(f"no link {link!r} in lab {self.lab_id}")

    def _endpoint(self, endpoint: str) -> tuple[str, str]:
        node, _, iface = endpoint.partition(":")
        rec = self._node(node)
        if iface not in rec.get("ifaces", []):
            raise BackendError(f"no endpoint {endpoint!r} in lab {self.lab_id}")
        return rec["ns"], iface

    def _switch(self, node: str) -> dict:
        rec = self._node(node)
        if rec["kind"] != "switch":
            raise BackendError(f"{node} is a {rec['kind']}, not a switch")
        return rec

    # ---- up / down ----------------------------------------------------------------------------
    def up(self, scenario: Scenario) -> None:
        if self.state is not None:
            raise BackendError("this backend already holds a lab; call down() first")
        check_support()
        for n in scenario.nodes:
            if n.kind not in KINDS and n.kind not in VETH_DRIVERS:
                supported = ", ".join([*KINDS, *VETH_DRIVERS])
                raise BackendError(f"node {n.name}: kind {n.kind!r} is not supported by the "
                                   f"veth backend (supported: {supported})")
        self._install_guard()
        try:
            self._build(scenario)
        except BaseException as exc:
            self.down()
            if isinstance(exc, (NetnsError, SwitchdError, OSError)):
                raise BackendError(f"lab up failed: {exc}") from exc
            raise

    def _tap_link(self, sc: Scenario, ln) -> tuple | None:
        """(host endpoint, driver endpoint) when the link is a driver's TAP, else None."""
        kinds = {n.name: n.kind for n in sc.nodes}
        for ep, other in ((ln.a, ln.b), (ln.b, ln.a)):
            driver = VETH_DRIVERS.get(kinds[ep.node])
            if driver is not None and ep.iface in driver.tap_ifaces:
                return other, ep
        return None

    def _build(self, sc: Scenario) -> None:
        self.lab_id = lab_id = names.new_lab_id()
        st = LabState.new(lab_id, sc.name, sc.path)
        for n in sc.nodes:
            st.nodes[n.name] = {"ns": names.ns_name(lab_id, n.name), "kind": n.kind,
                                "ifaces": [], "taps": []}
        for ln in sc.links:
            tap = self._tap_link(sc, ln)
            a, b = tap if tap else (ln.a, ln.b)   # a TAP is captured on its host side
            st.nodes[a.node]["ifaces"].append(a.iface)
            if tap:
                st.nodes[a.node]["taps"].append(a.iface)
            else:
                st.nodes[b.node]["ifaces"].append(b.iface)
            st.links.append({"name": ln.name, "a": a.name, "b": b.name,
                             "ns_a": st.nodes[a.node]["ns"], "if_a": a.iface,
                             "ns_b": st.nodes[b.node]["ns"], "if_b": b.iface,
                             "tap": bool(tap)})
        self.state = st
        os.makedirs(names.lab_dir(lab_id), mode=0o700, exist_ok=True)
        st.save()   # first: a crash from here on leaves something clean() finds

        nss = {n: rec["ns"] for n, rec in st.nodes.items()}
        ip_batch([f"netns add {ns}" for ns in nss.values()])
        # IPv6 off before any interface exists: they inherit `default` (no ND/MLD at all)
        map_in_netns((ns, disable_ipv6, ()) for ns in nss.values())
        lines = []
        for ln in sc.links:
            a, b = ln.a, ln.b
            if not self._tap_link(sc, ln):
                lines.append(f"link add {a.iface} netns {nss[a.node]} address {a.mac} "
                             f"mtu {ln.mtu} type veth peer name {b.iface} netns {nss[b.node]} "
                             f"address {b.mac} mtu {ln.mtu}")
        ip_batch(lines)
        veths = {n: [i for i in rec["ifaces"] if i not in rec["taps"]]
                 for n, rec in st.nodes.items()}
        map_in_netns((nss[n], checksum_offload_off, (tuple(ifaces),))
                     for n, ifaces in veths.items() if ifaces)
        batches: dict[str, list[str]] = {}
        addrs = {(ep.node, ep.iface): ep.ipv4 for ln in sc.links for ep in (ln.a, ln.b)}
        endpoints: dict[str, list] = {n.name: [] for n in sc.nodes}
        taps: dict[str, list[str]] = {n.name: [] for n in sc.nodes}
        for ln in sc.links:
            tap = self._tap_link(sc, ln)
            for ep in (ln.a, ln.b):
                if not (tap and ep == tap[1]):
                    endpoints[ep.node].append(ep)
            if tap:
                host = tap[0]
                taps[host.node] += [f"tuntap add dev {host.iface} mode tap",
                                    f"link set {host.iface} address {host.mac} mtu {ln.mtu}"]
        self._scenario_nodes = {n.name: (n, endpoints[n.name]) for n in sc.nodes}
        for n in sc.nodes:
            ns, ifaces = nss[n.name], st.nodes[n.name]["ifaces"]
            cmds = ["link set lo up", *taps[n.name]]
            if n.kind == "switch":
                cmds.append(f"link add br0 type bridge {BRIDGE_OPTS}")
                cmds += [f"link set {i} master br0" for i in ifaces]
                cmds.append("link set br0 up")
            elif n.kind in VETH_DRIVERS:
                cmds += VETH_DRIVERS[n.kind].setup(n, endpoints[n.name])
            else:
                cmds += [f"addr add {addrs[(n.name, i)]} dev {i}" for i in ifaces
                         if addrs.get((n.name, i))]
            cmds += [f"link set {i} up" for i in ifaces]
            batches[ns] = cmds
        ip_batches(batches)
        switches = [n.name for n in sc.nodes if n.kind == "switch"]
        for sw in switches:
            self._start_switchd(sw, wait=False)
        self._wait_links(list(st.nodes))
        for n in sc.nodes:
            if n.kind in VETH_DRIVERS:
                self._start_node(n.name)
        st.save()
        for sw in switches:
            self._wait_switchd(sw)
        self._start_mono, self._start_real = time.monotonic(), time.time()
        if self._capture_on:
            cap = Capture(self._start_real)
            self._capture = cap
            for rec in st.links:
                cap.add_link(rec["name"], rec["ns_a"], rec["if_a"], rec["a"], rec["b"])
            cap.start()
        st.status = "up"
        st.save()

    def down(self) -> None:
        with self._lock:
            if self._done or self.state is None:
                self._done = True
                self._remove_guard()
                return
            self._done = True
            blocked = _block_signals()
            try:
                self._teardown()
            finally:
                self._remove_guard()
                _unblock_signals(blocked)

    def _teardown(self) -> None:
        assert self.state is not None and self.lab_id is not None
        if self._capture is not None:
            self._capture.close()
            self._capture = None
        self._close_send_sockets()
        for p in self._bg:
            _killpg(p)
        for p in self._procs.values():
            _killpg(p)
        self.state.status = "down"
        remove_lab(self.lab_id, self.state)

    def _wait_links(self, nodes: list[str], timeout: float = 5.0) -> None:
        assert self.state is not None
        veths = {n: tuple(i for i in self.state.nodes[n]["ifaces"]
                          if i not in self.state.nodes[n].get("taps", ())) for n in nodes}
        jobs = [(self.state.nodes[n]["ns"], wait_running, (veths[n], timeout))
                for n in nodes if veths[n]]
        late = [i for res in map_in_netns(jobs) for i in res]
        if late:
            raise BackendError(f"interfaces not running after {timeout:g}s: {', '.join(late)}")
        time.sleep(0.005)   # the bridge hears of the carrier right after the flag flips

    def _close_send_sockets(self) -> None:
        close_sockets(list(self._send_socks.values()))
        self._send_socks.clear()

    # ---- attaching from another process (lab exec / lab down / lab ls) ------------------------
    @classmethod
    def attach(cls, lab_id: str) -> VethBackend:
        """A backend driving a lab another process brought up (no capture)."""
        st = load(lab_id)
        if st is None:
            raise BackendError(f"no lab {lab_id!r} (see `ftsslab lab ls`)")
        b = cls(capture=False)
        b.lab_id, b.state, b._owner = lab_id, st, False
        b._start_real = st.created
        b._start_mono = time.monotonic() - (time.time() - st.created)
        return b

    def detach(self) -> str:
        """Leave the lab running after this process exits (``lab up``); returns its id."""
        if self.state is None or self.lab_id is None:
            raise BackendError("the lab is not up")
        with self._lock:
            if self._capture is not None:
                self._capture.close()
                self._capture = None
            self._close_send_sockets()
            self.state.detached = True
            self.state.save()
            self._owner = False
            self._done = True
            self._remove_guard()
        return self.lab_id

    # ---- guard ------------------------------------------------------------------------------
    def _install_guard(self) -> None:
        if self._guarded:
            return
        self._guarded = True
        atexit.register(self._atexit)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGHUP):
                if signal.getsignal(sig) in (signal.SIG_DFL, None):
                    self._old_handlers[sig] = signal.SIG_DFL
                    signal.signal(sig, _raise_exit)

    def _remove_guard(self) -> None:
        if not self._guarded:
            return
        self._guarded = False
        atexit.unregister(self._atexit)
        if threading.current_thread() is threading.main_thread():
            for sig, old in self._old_handlers.items():
                if signal.getsignal(sig) is _raise_exit:
                    signal.signal(sig, old)
        self._old_handlers.clear()

    def _atexit(self) -> None:
        if self._owner:
            self.down()

    # ---- node processes (switchd, driver kinds) ----------------------------------------------
    def _spawn(self, node: str, python_args: list[str]) -> subprocess.Popen:
        """Start ``python <python_args>`` inside the node's namespace, stderr to <node>.err."""
        assert self.state is not None and self.lab_id is not None
        ns = self._ns(node)
        # nsenter --net is lighter than `ip netns exec` (no mount namespace, no sysfs remount;
        # node processes need neither)
        enter = (["nsenter", f"--net={names.NETNS_DIR}/{ns}"] if shutil.which("nsenter")
                 else ["ip", "netns", "exec", ns])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [_PKG_PARENT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        # recorded before it exists: a SIGKILL of this process from here on leaves a state
        # file that names it (``clean`` also finds it by the lab dir on its command line)
        self.state.processes[node] = {"pid": None, "start": None}
        self.state.save()
        with open(os.path.join(names.lab_dir(self.lab_id), f"{node}.err"), "ab") as err:
            p = subprocess.Popen([*enter, self._python, *python_args], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=err, env=env,
                                 start_new_session=True, close_fds=True)
        self._procs[node] = p
        self.state.processes[node] = {"pid": p.pid, "start": proc_start_time(p.pid)}
        self.state.save()
        self._killed.discard(node)
        return p

    def _wait_ready(self, node: str, what: str, ready: Callable[[], bool]) -> None:
        """Until ``ready()``; BackendError with the process's last stderr line if it dies."""
        assert self.lab_id is not None
        p = self._procs[node]
        deadline = time.monotonic() + self._switchd_timeout
        while not ready():
            if p.poll() is not None:
                err = Path(names.lab_dir(self.lab_id), f"{node}.err").read_text(errors="replace")
                tail = err.strip().splitlines()[-1:] or [f"exit {p.returncode}"]
                raise BackendError(f"{what}: process died: {tail[0]}")
            if time.monotonic() > deadline:
                raise BackendError(f"{what}: not ready after {self._switchd_timeout:g}s")
            time.sleep(0.02)

    def _start_switchd(self, node: str, wait: bool = True) -> None:
        assert self.state is not None and self.lab_id is not None
        rec = self._switch(node)
        sock = names.switchd_socket(self.lab_id, node)
        try:
            os.unlink(sock)
        except FileNotFoundError:
            pass
        # -S: switchd needs only the stdlib and ftsslab (PYTHONPATH)
        self._spawn(node, ["-S", "-m", "ftsslab.lab.veth.switchd", "--lab", self.lab_id,
                           "--node", node, "--ports", ",".join(rec["ifaces"]), "--socket", sock,
                           "--log", names.switchd_log(self.lab_id, node)])
        if wait:
            self.state.save()
            self._wait_switchd(node)

    def _start_node(self, node: str) -> None:
        """Start the node process of a driver kind and wait until its ports are open."""
        assert self.state is not None and self.lab_id is not None
        if node not in self._scenario_nodes:
            raise BackendError(f"{node}: only the process that built the lab can start it")
        n, _ = self._scenario_nodes[node]
        driver = VETH_DRIVERS[n.kind]
        ready = Path(names.lab_dir(self.lab_id), f"{node}.ready")  # the process touches it
        ready.unlink(missing_ok=True)
        self._spawn(node, ["-m", driver.module, *driver.args(
            n, os.path.abspath(self.state.scenario_path), names.lab_dir(self.lab_id))])
        self._wait_ready(node, f"{node} ({n.kind})", ready.exists)

    def _wait_switchd(self, node: str) -> None:
        assert self.lab_id is not None
        sock = names.switchd_socket(self.lab_id, node)

        def answers() -> bool:
            try:
                return bool(request(sock, {"op": "ping"}, timeout=2).get("ok"))
            except OSError:
                return False

        self._wait_ready(node, f"switch {node}: control process", answers)

    def _switchd_alive(self, node: str) -> bool:
        assert self.state is not None
        p = self._procs.get(node)
        if p is not None:
            return p.poll() is None
        rec = self.state.processes.get(node)
        return bool(rec) and pid_alive(rec["pid"], rec.get("start"))

    def _ask(self, node: str, req: dict) -> dict:
        assert self.lab_id is not None
        if not self._switchd_alive(node):
            raise BackendError(f"switch {node}: its control process is not running "
                               f"(killed; restart it first)")
        try:
            reply = request(names.switchd_socket(self.lab_id, node), req)
        except OSError as exc:
            raise BackendError(f"switch {node}: control process unreachable: {exc}") from exc
        if not reply.get("ok"):
            raise BackendError(f"switch {node}: {reply.get('error', 'request failed')}")
        return reply

    # ---- Backend ------------------------------------------------------------------------------
    def now(self) -> float:
        return time.monotonic() - self._start_mono

    def advance(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def set_step(self, label: str) -> None:
        self._step = label
        if self._capture is not None:
            self._capture.set_step(label)

    def send(self, endpoint: str, frame: bytes) -> None:
        ns, iface = self._endpoint(endpoint)
        sock = self._send_socks.get(endpoint)
        if sock is None:
            sock = call_in_netns(ns, _open_send_socket, iface)
            self._send_socks[endpoint] = sock
        try:
            sock.send(frame)
        except OSError as exc:
            if exc.errno in (errno.ENETDOWN, errno.ENXIO):
                return          # the link is down: it carries nothing
            raise BackendError(f"send on {endpoint}: {exc.strerror}") from exc

    def exec(self, node: str, argv: tuple[str, ...], timeout: float,
             background: bool = False) -> ExecResult | None:
        ns = self._ns(node)
        if not argv:
            raise BackendError("exec: empty command")
        full = ["ip", "netns", "exec", ns, *argv]
        try:
            if background:
                assert self.state is not None
                p = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
                self._bg.append(p)
                self.state.background.append({"pid": p.pid, "start": proc_start_time(p.pid),
                                              "node": node, "argv": list(argv)})
                self.state.save()
                return None
            p = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            raise BackendError(f"exec on {node}: {exc}") from exc
        try:
            out, err = p.communicate(timeout=timeout)
            status = p.returncode
        except subprocess.TimeoutExpired:
            _killpg(p)
            out, err = p.communicate()
            status = TIMEOUT_STATUS
            err += f"\nftsslab: timed out after {timeout:g}s\n".encode()
        except BaseException:
            _killpg(p)
            raise
        if status == 255 and b"Cannot open network namespace" in err:
            raise BackendError(f"exec on {node}: namespace {ns} is gone")
        return ExecResult(argv=tuple(argv), status=status,
                          stdout=out.decode(errors="replace"), stderr=err.decode(errors="replace"))

    def set_link(self, link: str, up: bool) -> None:
        rec = self._link(link)
        state = "up" if up else "down"
        # a TAP link has one netdev (the host side); the node process holds the other end
        ends = [(rec["ns_a"], rec["if_a"])] + ([] if rec.get("tap") else
                                               [(rec["ns_b"], rec["if_b"])])
        try:
            for ns, iface in ends:
                run(["ip", "-n", ns, "link", "set", iface, state])
            if up:   # carrier goes through linkwatch: wait until frames can pass
                late = [i for ns, iface in ends
                        for i in call_in_netns(ns, wait_running, (iface,), 5.0)]
                if late:
                    raise BackendError(f"link {rec['name']}: still not running after 5s")
                time.sleep(0.005)
        except NetnsError as exc:
            raise BackendError(f"link {rec['name']}: {exc}") from exc
        self._events.append(Event(self.now(), rec["name"], f"link-{state}",
                                  f"{rec['name']} {state}"))

    def table(self, switch: str, op: str, entry: ForwardingEntry) -> None:
        self._switch(switch)
        if op not in ("add", "remove"):
            raise BackendError(f"table: unknown op {op!r}")
        try:
            d = validate_entry(asdict(entry))
        except SwitchdError as exc:
            raise BackendError(f"switch {switch}: {exc}") from exc
        reply = self._ask(switch, {"op": op, "entry": d})
        t = reply["mono"] - self._start_mono
        self._events.append(Event(t, switch, f"table-{op}", entry_summary(d)))

    def entries(self, switch: str) -> list[ForwardingEntry]:
        rec = self._switch(switch)
        if self._switchd_alive(switch):
            dicts = self._ask(switch, {"op": "list"})["entries"]
        else:   # the control process is down: straight from the kernel
            dicts = [e for _, e in call_in_netns(rec["ns"], read_kernel_entries) or []]
        return [ForwardingEntry(**d) for d in dicts]

    def process(self, node: str, action: str) -> None:
        kind = self._node(node)["kind"]
        if kind != "switch" and kind not in VETH_DRIVERS:
            raise BackendError(f"{node}: a {kind} has no process")
        if action not in ("kill", "restart"):
            raise BackendError(f"process: unknown action {action!r}")
        self._kill_process(node)  # SIGKILL whichever process the node runs
        self._killed.add(node)
        if action == "restart":
            if kind == "switch":
                self._start_switchd(node)
            else:
                self._start_node(node)
                self.state.save()
        name = "switchd" if kind == "switch" else VETH_DRIVERS[kind].module.rsplit(".", 1)[-1]
        self._events.append(Event(self.now(), node, action,
                                  f"{name} pid {self.state.processes[node]['pid']}"))

    def _kill_process(self, node: str) -> None:
        assert self.state is not None
        p = self._procs.get(node)
        if p is not None:
            _killpg(p)
            return
        rec = self.state.processes.get(node)
        if rec and pid_alive(rec["pid"], rec.get("start")):
            kill_and_wait([rec["pid"]])

    def frames(self) -> list[CapturedFrame]:
        return self._capture.frames() if self._capture is not None else []

    def reports(self) -> dict[str, dict]:
        assert self.lab_id is not None
        out = {}
        for node, p in sorted(self._procs.items()):
            if p.poll() is None and self._node(node)["kind"] in VETH_DRIVERS:
                try:
                    reply = control_request(names.lab_dir(self.lab_id), node, {"op": "report"})
                except (OSError, ValueError):
                    continue
                if reply.get("ok"):
                    out[node] = reply["report"]
        return out

    def problems(self) -> list[str]:
        """Node processes that died on their own, or that report internal errors."""
        assert self.lab_id is not None
        out = []
        lab_dir = names.lab_dir(self.lab_id)
        for node, p in sorted(self._procs.items()):
            if node in self._killed:
                continue
            err = os.path.join(lab_dir, f"{node}.err")
            if p.poll() is not None:
                tail = Path(err).read_text(errors="replace").strip().splitlines()[-1:]
                out.append(f"{node}: its process exited (status {p.returncode}) with no kill "
                           f"step: {tail[0] if tail else 'no message'} (see {err})")
                continue
            if self._node(node)["kind"] not in VETH_DRIVERS:
                continue
            try:
                reply = control_request(lab_dir, node, {"op": "stats"})
            except (OSError, ValueError) as exc:
                out.append(f"{node}: its process does not answer its control socket ({exc})")
                continue
            if reply.get("internal_errors"):
                out.append(f"{node}: {reply['internal_errors']} internal error(s), a bug in "
                           f"its core: tracebacks in {err}")
        return out

    def events(self) -> list[Event]:
        return list(self._events)

    # ---- extras for the CLI and tests --------------------------------------------------------
    def namespace(self, node: str) -> str:
        return self._ns(node)

    def switchd_pid(self, node: str) -> int | None:
        assert self.state is not None
        rec = self.state.processes.get(node)
        return rec["pid"] if rec and self._switchd_alive(node) else None


def _open_send_socket(ifname: str) -> socket.socket:
    """Send-only packet socket (protocol 0: it is never handed received frames)."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        s.bind((ifname, 0))
    except BaseException:
        s.close()
        raise
    return s


def _killpg(p: subprocess.Popen) -> None:
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            try:
                p.kill()
            except ProcessLookupError:
                pass
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _raise_exit(signum, _frame) -> None:
    raise SystemExit(128 + signum)


def _block_signals() -> bool:
    if threading.current_thread() is not threading.main_thread():
        return False
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
    return True


def _unblock_signals(blocked: bool) -> None:
    if blocked:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
