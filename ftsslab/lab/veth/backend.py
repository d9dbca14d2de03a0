"""``VethBackend``: the scenario on real namespaces, veth pairs and nftables.

- one namespace ``fl<id>-<node>`` per node; veth pairs are created directly in
  their two namespaces, so each side carries the scenario's own interface name
  (nothing is created in the root namespace);
- hosts: a real kernel stack (lo up, the endpoint's MAC/IPv4/MTU, IPv6 off,
  checksum offload off so captured checksums are real); every veth end has it off
  except on links whose two kinds say ``KindSpec.keeps_offload`` (their data plane and
  their user space never touch a frame that needs it: TSO/GSO stay on);
- switches: bridge ``br0`` (STP off, no ageing within a lab, no multicast
  snooping) for L2 learning, plus the forwarding table as nftables netdev
  ingress rules owned by the switch's control process ``switchd`` (see
  ``switchd.py``). The table lives in the kernel, so it survives a SIGKILL of
  switchd, and a restarted switchd rebuilds its view from it;
- capture of one end of every link (``capture.py``); ``send`` through one
  AF_PACKET socket per endpoint, opened once on a thread that entered the
  endpoint's namespace;
- a link the scenario impairs (``Scenario.impaired_links``) gets a namespace of its
  own in the middle, ``fl<id>-link-<n>``, joined to each end by a veth pair, where
  its shim process ``impaird`` forwards and impairs the frames (``rate``: a tbf
  qdisc there) and is the link's capture point;
- everything is recorded in ``/run/ftsslab/<id>.json`` (``state.py``) before it
  is created; ``up`` failing or interrupted removes what exists, ``down`` is
  idempotent, and an atexit/SIGTERM guard tears the lab down if the owner exits.
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..backend import Backend, BackendError, CapturedFrame, Event, ExecResult
from ..impair import bucket, direction_seed
from ..kinds import KindSpec, get_kind, kinds
from ..model import ForwardingEntry, Impairments, Link, Node, Scenario
from . import names
from .capture import Capture, close_sockets
from .control import control_path, control_request
from .drivers import NodeEnv
from .netns import (
    NetnsError,
    call_in_netns,
    disable_ipv6,
    ip_batch,
    ip_batches,
    map_in_netns,
    pid_alive,
    proc_start_time,
    run,
    set_checksum_offload,
    wait_running,
)
from .state import LabState, kill_and_wait, load, remove_lab
from .switchd import SwitchdError, entry_summary, read_kernel_entries, request, validate_entry

TIMEOUT_STATUS = 124   # like coreutils timeout(1)
SHIM_IFACES = ("a0", "b0")   # in a shim's namespace: the veths toward the link's a and b
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
                 ready_timeout: float = 15.0) -> None:
        self._capture_on = capture
        self._python = python or sys.executable
        self._ready_timeout = ready_timeout
        self.lab_id: str | None = None
        self.state: LabState | None = None
        self._capture: Capture | None = None
        self._procs: dict[str, subprocess.Popen] = {}
        self._shims: dict[str, subprocess.Popen] = {}   # names.shim_name -> its process
        self._scenario_nodes: dict[str, Node] = {}  # of the lab this process built
        self._scenario_links: dict[str, Link] = {}
        self._rates: dict[tuple[str, int], int] = {}    # (link, side) -> its tbf's rate
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
        if not _spec(rec["kind"]).has_table:
            raise BackendError(f"{node} is a {rec['kind']}, not a switch")
        return rec

    # ---- up / down ----------------------------------------------------------------------------
    def up(self, scenario: Scenario) -> None:
        if self.state is not None:
            raise BackendError("this backend already holds a lab; call down() first")
        check_support()
        for n in scenario.nodes:
            spec = get_kind(n.kind)
            if spec is None or spec.veth is None:
                supported = ", ".join(k.name for k in kinds() if k.veth is not None)
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
        kind = {n.name: n.kind for n in sc.nodes}
        for ep, other in ((ln.a, ln.b), (ln.b, ln.a)):
            if ep.iface in _spec(kind[ep.node]).veth.tap_ifaces:
                return other, ep
        return None

    def _offload_kept(self, sc: Scenario, shims: dict) -> set[tuple[str, str]]:
        """(node, iface) ends that keep checksum offload: plain veth links whose two kinds
        say ``keeps_offload`` (an impaired link's shim forwards in user space)."""
        kind = {n.name: _spec(n.kind) for n in sc.nodes}
        return {(ep.node, ep.iface) for ln in sc.links
                if ln.name not in shims and not self._tap_link(sc, ln)
                and kind[ln.a.node].keeps_offload and kind[ln.b.node].keeps_offload
                for ep in (ln.a, ln.b)}

    def _build(self, sc: Scenario) -> None:
        self.lab_id = lab_id = names.new_lab_id()
        st = LabState.new(lab_id, sc.name, sc.path)
        for n in sc.nodes:
            st.nodes[n.name] = {"ns": names.ns_name(lab_id, n.name), "kind": n.kind,
                                "ifaces": [], "taps": []}
        impaired = sc.impaired_links()
        for i, ln in enumerate(sc.links):
            tap = self._tap_link(sc, ln)
            if tap and ln.name in impaired:
                raise BackendError(f"link {ln.name}: a TAP link cannot be impaired")
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
            if ln.name in impaired:
                shim = names.shim_name(i)
                st.links[-1] |= {"shim": shim, "ns_shim": names.ns_name(lab_id, shim)}
        self.state = st
        os.makedirs(names.lab_dir(lab_id), mode=0o700, exist_ok=True)
        st.save()   # first: a crash from here on leaves something clean() finds

        nss = {n: rec["ns"] for n, rec in st.nodes.items()}
        shims = {rec["name"]: rec["ns_shim"] for rec in st.links if "shim" in rec}
        ip_batch([f"netns add {ns}" for ns in [*nss.values(), *shims.values()]])
        # IPv6 off before any interface exists: they inherit `default` (no ND/MLD at all)
        map_in_netns((ns, disable_ipv6, ()) for ns in [*nss.values(), *shims.values()])
        lines = []
        for ln in sc.links:
            a, b = ln.a, ln.b
            if ln.name in shims:   # a -- a0 [shim] b0 -- b
                lines += [f"link add {ep.iface} netns {nss[ep.node]} address {ep.mac} "
                          f"mtu {ln.mtu} type veth peer name {peer} netns {shims[ln.name]} "
                          f"mtu {ln.mtu}" for ep, peer in zip((a, b), SHIM_IFACES, strict=True)]
            elif not self._tap_link(sc, ln):
                lines.append(f"link add {a.iface} netns {nss[a.node]} address {a.mac} "
                             f"mtu {ln.mtu} type veth peer name {b.iface} netns {nss[b.node]} "
                             f"address {b.mac} mtu {ln.mtu}")
        ip_batch(lines)
        kept = self._offload_kept(sc, shims)
        veths = {nss[n]: [i for i in rec["ifaces"] if i not in rec["taps"] and (n, i) not in kept]
                 for n, rec in st.nodes.items()} | dict.fromkeys(shims.values(), SHIM_IFACES)
        map_in_netns((ns, set_checksum_offload, (tuple(ifaces), False))
                     for ns, ifaces in veths.items() if ifaces)
        batches: dict[str, list[str]] = {
            ns: [f"link set dev {i} up" for i in SHIM_IFACES] for ns in shims.values()}
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
        self._scenario_nodes = {n.name: n for n in sc.nodes}
        for n in sc.nodes:
            ns, ifaces = nss[n.name], st.nodes[n.name]["ifaces"]
            cmds = ["link set lo up", *taps[n.name],
                    *_spec(n.kind).veth.setup(n, endpoints[n.name])]
            cmds += [f"link set {i} up" for i in ifaces]
            batches[ns] = cmds
        ip_batches(batches)
        self._wait_links(list(st.nodes), tuple(shims.values()))
        self._scenario_links = {ln.name: ln for ln in sc.links}
        for rec in st.links:
            if "shim" in rec:
                self._start_shim(rec, sc)
        started = [n.name for n in sc.nodes if self._start_process(n.name)]
        self._wait_processes([*self._shims, *started])
        self._start_mono, self._start_real = time.monotonic(), time.time()
        if self._capture_on:
            cap = Capture(self._start_real)
            self._capture = cap
            for rec in st.links:
                if "shim" in rec:
                    cap.add_shim(rec["name"], self._shim_file(rec, "cap"), rec["a"], rec["b"])
                else:
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
        for p in [*self._procs.values(), *self._shims.values()]:
            _killpg(p)
        self.state.status = "down"
        remove_lab(self.lab_id, self.state)

    def _wait_links(self, nodes: list[str], shims: tuple[str, ...] = (), timeout: float = 5.0,
                    ) -> None:
        """Until the veths of ``nodes`` and of the shim namespaces ``shims`` are running."""
        assert self.state is not None
        veths = {n: tuple(i for i in self.state.nodes[n]["ifaces"]
                          if i not in self.state.nodes[n].get("taps", ())) for n in nodes}
        jobs = [(self.state.nodes[n]["ns"], wait_running, (veths[n], timeout))
                for n in nodes if veths[n]]
        jobs += [(ns, wait_running, (SHIM_IFACES, timeout)) for ns in shims]
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
    def _spawn(self, node: str, python_args: list[str], ns: str | None = None,
               ) -> subprocess.Popen:
        """Start ``python <python_args>`` inside the node's namespace (or ``ns``), stderr to
        <node>.err; ``node`` may name a link's shim."""
        assert self.state is not None and self.lab_id is not None
        ns = ns or self._ns(node)
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
            # -P: not the working directory first on sys.path, or ``-m ftsslab...`` run from
            # another checkout's root would import that checkout's code, not this one's
            p = subprocess.Popen([*enter, self._python, "-P", *python_args],
                                 stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=err, env=env,
                                 start_new_session=True, close_fds=True)
        self.state.processes[node] = {"pid": p.pid, "start": proc_start_time(p.pid)}
        self.state.save()
        return p

    def _start_process(self, node: str) -> bool:
        """Start the node's process, if its kind has one (it touches ``<node>.ready``)."""
        assert self.state is not None and self.lab_id is not None
        n = self._scenario_nodes.get(node)
        if n is None:
            raise BackendError(f"{node}: only the process that built the lab can start it")
        driver = _spec(n.kind).veth
        if driver.program is None:
            return False
        names.ready_path(self.lab_id, node).unlink(missing_ok=True)
        self._procs[node] = self._spawn(node, driver.program(n, self._env(node)))
        self._killed.discard(node)
        return True

    def _shim_file(self, rec: dict, ext: str) -> str:
        assert self.lab_id is not None
        return os.path.join(names.lab_dir(self.lab_id), f"{rec['shim']}.{ext}")

    def _start_shim(self, rec: dict, sc: Scenario) -> None:
        """Start the link's shim (``impaird``) with its impairments when the lab comes up."""
        assert self.lab_id is not None
        ln = self._scenario_links[rec["name"]]
        seed = sc.link_seed(ln)
        cfg = {"ifaces": list(SHIM_IFACES), "mtu": ln.mtu,
               "seeds": [direction_seed(seed, ln.name, ep.name) for ep in (ln.a, ln.b)],
               "impair": [asdict(i) for i in ln.impair],
               "ctl": control_path(names.lab_dir(self.lab_id), rec["shim"]),
               "cap": self._shim_file(rec, "cap"),
               "ready": str(names.ready_path(self.lab_id, rec["shim"]))}
        with open(self._shim_file(rec, "json"), "w") as f:
            json.dump(cfg, f)
        self._set_rates(rec, ln, ln.impair)
        self._shims[rec["shim"]] = self._spawn(
            rec["shim"], ["-S", "-m", "ftsslab.lab.veth.impaird", self._shim_file(rec, "json")],
            rec["ns_shim"])

    def _set_rates(self, rec: dict, ln: Link, impair: Impairments) -> None:
        """A tbf on the shim's veth each direction leaves by, for the directions with a rate."""
        for side, imp in enumerate(impair):
            dev = SHIM_IFACES[1 - side]
            tc = ["tc", "-n", rec["ns_shim"], "qdisc"]
            try:
                if imp.rate:
                    burst, limit = bucket(imp.rate, ln.mtu)
                    run([*tc, "replace", "dev", dev, "root", "tbf", "rate", f"{imp.rate}bit",
                         "burst", str(burst), "limit", str(limit)])
                elif self._rates.get((ln.name, side)):
                    run([*tc, "del", "dev", dev, "root"])
            except NetnsError as exc:
                raise BackendError(f"link {ln.name}: rate: {exc}") from exc
            self._rates[(ln.name, side)] = imp.rate

    def _shim_request(self, rec: dict, req: dict) -> dict:
        assert self.lab_id is not None
        try:
            reply = control_request(names.lab_dir(self.lab_id), rec["shim"], req)
        except (OSError, ValueError) as exc:
            raise BackendError(f"link {rec['name']}: its impairment shim does not answer "
                               f"({exc})") from exc
        if not reply.get("ok"):
            raise BackendError(f"link {rec['name']}: {reply.get('error', 'request failed')}")
        return reply

    def _env(self, node: str) -> NodeEnv:
        assert self.state is not None and self.lab_id is not None
        return NodeEnv(self.lab_id, names.lab_dir(self.lab_id),
                       os.path.abspath(self.state.scenario_path),
                       tuple(self.state.nodes[node]["ifaces"]))

    def _wait_processes(self, nodes: list[str]) -> None:
        """Until every node process touched its ready file; BackendError with the last
        stderr line of one that dies, or after ``ready_timeout``."""
        assert self.lab_id is not None
        deadline = time.monotonic() + self._ready_timeout
        waiting = list(nodes)
        while waiting:
            waiting = [n for n in waiting if not names.ready_path(self.lab_id, n).exists()]
            for node in waiting:
                p = self._procs.get(node) or self._shims[node]
                if p.poll() is not None:
                    err = Path(names.lab_dir(self.lab_id), f"{node}.err").read_text(
                        errors="replace")
                    tail = err.strip().splitlines()[-1:] or [f"exit {p.returncode}"]
                    what = self._node(node)["kind"] if node in self._procs else "impairment shim"
                    raise BackendError(f"{node} ({what}): process died: {tail[0]}")
            if waiting and time.monotonic() > deadline:
                raise BackendError(f"{', '.join(waiting)}: not ready after "
                                   f"{self._ready_timeout:g}s")
            if waiting:
                time.sleep(0.02)

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
        assert self.lab_id is not None
        # what a command may want to know of its lab: e.g. a directory of its own
        env = dict(os.environ, FTSSLAB_LAB=self.lab_id, FTSSLAB_NODE=node,
                   FTSSLAB_LAB_DIR=names.lab_dir(self.lab_id))
        try:
            if background:
                assert self.state is not None
                p = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True, env=env)
                self._bg.append(p)
                self.state.background.append({"pid": p.pid, "start": proc_start_time(p.pid),
                                              "node": node, "argv": list(argv)})
                self.state.save()
                return None
            p = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, start_new_session=True, env=env)
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
        if "shim" in rec and not up:   # what the shim still holds is lost, not sent
            self._shim_request(rec, {"op": "link", "up": False})
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
        if "shim" in rec and up:
            self._shim_request(rec, {"op": "link", "up": True})
        self._events.append(Event(self.now(), rec["name"], f"link-{state}",
                                  f"{rec['name']} {state}"))

    def impair(self, link: str, impair: Impairments) -> None:
        rec = self._link(link)
        if "shim" not in rec:
            raise BackendError(f"link {rec['name']} is not impaired by the scenario (only links "
                               "with impair: or an impair step can be)")
        ln = self._scenario_links.get(rec["name"])
        if ln is None:
            raise BackendError(f"link {rec['name']}: only the process that built the lab can "
                               "change its impairments")
        self._set_rates(rec, ln, impair)
        self._shim_request(rec, {"op": "set", "impair": [asdict(i) for i in impair]})
        self._events.append(Event(self.now(), rec["name"], "impair", ln.impair_text(impair)))

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
        driver = _spec(kind).veth
        if driver.program is None:
            raise BackendError(f"{node}: a {kind} has no process")
        if action not in ("kill", "restart"):
            raise BackendError(f"process: unknown action {action!r}")
        self._kill_process(node)  # SIGKILL whichever process the node runs
        self._killed.add(node)
        if action == "restart":
            self._start_process(node)
            self._wait_processes([node])
        name = driver.process_name(self._scenario_nodes[node], self._env(node)) \
            if node in self._scenario_nodes else "process"
        self._events.append(Event(self.now(), node, action,
                                  f"{name} pid {self.state.processes[node]['pid']}"))

    def handoff(self, node: str, to: str, client_port: int | None, htype: str = "full") -> None:
        assert self.lab_id is not None
        req = {"op": "handoff", "to": to, "client_port": client_port, "type": htype}
        try:
            reply = control_request(names.lab_dir(self.lab_id), node, req)
        except (OSError, ValueError) as exc:
            raise BackendError(f"{node}: its process does not answer ({exc})") from exc
        if not reply.get("ok"):
            raise BackendError(f"{node}: handoff to {to}: {reply.get('error', 'refused')}")
        self._events.append(Event(self.now(), node, "handoff", f"{reply['client']} -> {to}"))

    def verb(self, node: str, args: Mapping[str, Any]) -> None:
        assert self.lab_id is not None
        try:
            reply = control_request(names.lab_dir(self.lab_id), node,
                                    {"op": "verb", "args": dict(args)}, timeout=30.0)
        except (OSError, ValueError) as exc:
            raise BackendError(f"{node}: its process does not answer ({exc})") from exc
        if not reply.get("ok"):
            raise BackendError(f"{node}: verb {args.get('op')}: {reply.get('error', 'refused')}")
        self._events.append(Event(self.now(), node, "verb", str(args.get("op"))))

    def set_health(self, node: str, health: str) -> None:
        assert self.lab_id is not None
        try:
            reply = control_request(names.lab_dir(self.lab_id), node,
                                    {"op": "health", "health": health})
        except (OSError, ValueError) as exc:
            raise BackendError(f"{node}: its process does not answer ({exc})") from exc
        if not reply.get("ok"):
            raise BackendError(f"{node}: health {health}: {reply.get('error', 'refused')}")
        self._events.append(Event(self.now(), node, "health", health))

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
            if p.poll() is None and _spec(self._node(node)["kind"]).veth.control:
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
        assert self.state is not None
        for rec in self.state.links:
            p = self._shims.get(rec.get("shim", ""))
            if p is not None and p.poll() is not None:
                err = os.path.join(lab_dir, f"{rec['shim']}.err")
                tail = Path(err).read_text(errors="replace").strip().splitlines()[-1:]
                out.append(f"link {rec['name']}: its impairment shim exited (status "
                           f"{p.returncode}): {tail[0] if tail else 'no message'} (see {err})")
        for node, p in sorted(self._procs.items()):
            if node in self._killed:
                continue
            err = os.path.join(lab_dir, f"{node}.err")
            if p.poll() is not None:
                tail = Path(err).read_text(errors="replace").strip().splitlines()[-1:]
                out.append(f"{node}: its process exited (status {p.returncode}) with no kill "
                           f"step: {tail[0] if tail else 'no message'} (see {err})")
                continue
            if not _spec(self._node(node)["kind"]).veth.control:
                continue
            try:
                reply = control_request(lab_dir, node, {"op": "stats"})
            except (OSError, ValueError) as exc:
                out.append(f"{node}: its process does not answer its control socket ({exc})")
                continue
            if reply.get("internal_errors"):  # the file goes with the lab: say its last line
                tail = Path(err).read_text(errors="replace").strip().splitlines()[-1:]
                out.append(f"{node}: {reply['internal_errors']} internal error(s), a bug in "
                           f"its core: {tail[0] if tail else 'no traceback'} (see {err})")
        return out

    def events(self) -> list[Event]:
        """The backend's own events and those node processes log to ``<lab dir>/<node>.events``
        (JSON lines: ``t`` on CLOCK_MONOTONIC, ``kind``, more fields), in time order."""
        out = list(self._events)
        for node in self.state.nodes if self.lab_id and self.state else ():
            for rec in self.node_events(node):
                t, kind = float(rec.pop("t")) - self._start_mono, str(rec.pop("kind"))
                rec.pop("node", None)
                detail = " ".join(f"{k}={v}" for k, v in sorted(rec.items()) if v is not None)
                out.append(Event(t, node, kind, detail))
        return sorted(out, key=lambda e: e.time)

    def node_events(self, node: str) -> list[dict]:
        """All of them, from the node's events file (a report holds only the newest)."""
        if self.lab_id is None:
            return []
        try:
            lines = Path(names.lab_dir(self.lab_id), f"{node}.events").read_text(
                errors="replace").splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut short by a SIGKILL
            if isinstance(rec, dict) and isinstance(rec.get("t"), int | float) and "kind" in rec:
                out.append(rec)
        return out

    # ---- extras for the CLI and tests --------------------------------------------------------
    def namespace(self, node: str) -> str:
        return self._ns(node)

    def switchd_pid(self, node: str) -> int | None:
        assert self.state is not None
        rec = self.state.processes.get(node)
        return rec["pid"] if rec and self._switchd_alive(node) else None


def _spec(kind: str) -> KindSpec:
    spec = get_kind(kind)
    if spec is None or spec.veth is None:
        raise BackendError(f"kind {kind!r} has no veth driver")
    return spec


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
