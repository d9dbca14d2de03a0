# SPDX-License-Identifier: GPL-2.0-or-later
"""Seed 001's kinds: `i2o-host`, a host exporting the block devices behind its IOPs onto the
SAN (``nodes.I2oHostCore``), and `i2o-remote`, a remote server using them through the client
library (``nodes.I2oRemoteCore``) -- registered once: options, the `verb` steps they take,
checks against the links, sim model and veth driver (the node process ``i2od``).

Both are seed-003 endnodes whose QPs and memory follow from the scenario (``san_layout``): a
remote names its host, the host serves every remote that names it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ftsslab.lab.kinds import (
    KindSpec,
    NodeView,
    Option,
    OptionIssue,
    did_you_mean,
    option_schema,
    register_kind,
)
from ftsslab.lab.model import Endpoint, Node, Scenario
from ftsslab.lab.veth.drivers import NodeEnv, VethDriver
from ftsslab.san.node_config import config, parse_seconds

from .blockdev import BlockDevice, FileBlockDevice, MemoryBlockDevice
from .client import KEY_MODES
from .frames import FIRST_IOP_ID
from .nodes import DeviceFactory, HostSpec, I2oHostCore, I2oRemoteCore
from .san_layout import CLIENT, DEPTH, FRAME_MAX, PROCESS, host_layout, remote_layout

HOST, REMOTE = "i2o-host", "i2o-remote"
MAX_IOPS = 8
MAX_DEVICES = 8
MAX_DEVICE = 1 << 36  # 64 GiB (sparse)
_SIZE = re.compile(r"(\d+)\s*(B|KiB|MiB|GiB)?")
_UNITS = {None: 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def size_of(value: Any) -> int | None:
    """``4MiB``, ``512KiB``, ``1048576``: bytes (None: not a size)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _SIZE.fullmatch(str(value).strip())
    return int(m[1]) * _UNITS[m[2]] if m else None


def _iops(value: dict) -> OptionIssue | None:
    hint = ("p0: {devices: [4MiB, 4MiB]}, p1: {devices: [1GiB], private: true}, "
            "p2: {devices: [1MiB], allow: [r1]}")
    if not 1 <= len(value) <= MAX_IOPS:
        return OptionIssue("", f"1..{MAX_IOPS} IOPs, got {len(value)}", hint)
    advert = 16 + 4 + 32 + 4
    for name, iop in value.items():
        if not isinstance(name, str) or not name.replace("-", "").isalnum():
            return OptionIssue(f".{name}", f"bad IOP name {name!r}", "letters, digits, -")
        if not isinstance(iop, dict) or set(iop) - {"devices", "private", "allow"}:
            return OptionIssue(f".{name}", f"not an IOP: {iop!r}", hint)
        devices = iop.get("devices")
        if not isinstance(devices, list) or not 1 <= len(devices) <= MAX_DEVICES:
            return OptionIssue(f".{name}.devices", f"1..{MAX_DEVICES} devices, each a size",
                               hint)
        for i, d in enumerate(devices):
            n = size_of(d)
            if n is None or not 4096 <= n <= MAX_DEVICE or n % 4096:
                return OptionIssue(f".{name}.devices[{i}]", f"not a device size: {d!r}",
                                   "4KiB..64GiB, a multiple of 4 KiB, like 16MiB")
        if not isinstance(iop.get("private", False), bool):
            return OptionIssue(f".{name}.private", "expected true/false")
        allow = iop.get("allow", [])
        if not isinstance(allow, list) or not all(isinstance(r, str) for r in allow):
            return OptionIssue(f".{name}.allow", f"not a list of remotes: {allow!r}",
                               "allow: [r1, r2]: the i2o-remote nodes that may attach")
        advert += 4 + 16 * len(devices)
    if advert > FRAME_MAX:
        return OptionIssue("", f"the advertisement would be {advert} bytes",
                           f"fewer IOPs or devices: it is one {FRAME_MAX}-byte frame")
    return None


def _seconds(v: Any) -> str | None:
    try:
        if not 0 <= parse_seconds(v) <= 1:
            raise ValueError
    except ValueError:
        return f"not a latency: {v!r} (like 200us: 0..1 s)"
    return None


_HOST_CHECK, _HOST_DEFAULTS = option_schema({
    "iops": Option(dict, required=True, check=_iops,
                   doc="p0: {devices: [4MiB, 4MiB]}: the IOPs on its bus, in slot order"),
    "block_size": Option(int, default=512, choices=(512, 4096), doc="the devices' block size"),
    "iop_latency": Option((str, int, float), default=0, check=_seconds,
                          doc="how long an IOP takes to start on what was posted, like 200us"),
})
def _nbd(v: dict) -> str | None:
    if not isinstance(v.get("iop"), str) or set(v) - {"iop", "device"} or \
            not isinstance(v.get("device", 0), int) or not 0 <= v.get("device", 0) < MAX_DEVICES:
        return f"not {{iop: NAME, device: INDEX}}: {v!r}"
    return None


_REMOTE_CHECK, _REMOTE_DEFAULTS = option_schema({
    "host": Option(str, required=True, doc="the i2o-host whose IOPs it uses"),
    "nbd": Option(dict, check=_nbd, doc="{iop: p1, device: 0}: veth: that disk exported to "
                  "NBD clients on <lab dir>/<node>.nbd (nbdkit)"),
})


def _needs_ip(view: NodeView) -> list[OptionIssue]:
    if any(p.ipv4 for p in view.ports.values()):
        return []
    return [OptionIssue("", f"an {view.kind} node needs an IPv4 address on its link",
                        "give its endpoint ipv4: 10.0.1.1/24")]


def _host_topology(view: NodeView, nodes: Mapping[str, NodeView]) -> list[OptionIssue]:
    issues = _needs_ip(view)
    remotes = tuple(n for n, v in nodes.items() if v.kind == REMOTE
                    and v.options.get("host") == view.name)
    for name, iop in view.options["iops"].items():
        for r in iop.get("allow", []):
            if r not in remotes:
                issues.append(OptionIssue(f"iops.{name}.allow", f"{r!r} is not an {REMOTE} "
                                          f"of {view.name}", did_you_mean(r, remotes)))
    return issues


def _remote_topology(view: NodeView, nodes: Mapping[str, NodeView]) -> list[OptionIssue]:
    host = nodes.get(view.options["host"])
    if host is None or host.kind != HOST:
        hosts = [n for n, v in nodes.items() if v.kind == HOST]
        return [OptionIssue("host", f"{view.options['host']!r} is not an {HOST} node",
                            did_you_mean(view.options["host"], tuple(hosts)))]
    issues = _needs_ip(view)
    nbd, iops = view.options.get("nbd"), host.options["iops"]
    if nbd is not None and nbd["iop"] not in iops:
        issues.append(OptionIssue("nbd.iop", f"{view.options['host']} has no IOP {nbd['iop']!r}",
                                  did_you_mean(nbd["iop"], tuple(iops))))
    elif nbd is not None and nbd.get("device", 0) >= len(iops[nbd["iop"]]["devices"]):
        issues.append(OptionIssue("nbd.device", f"{nbd['iop']} has "
                                  f"{len(iops[nbd['iop']]['devices'])} devices"))
    return issues


# ---- verbs ----------------------------------------------------------------------------------
_iop = Option(str, required=True, doc="one of the host's IOPs")
_device = Option(int, range=(0, MAX_DEVICES - 1), doc="the device's index on the IOP")
_offset = Option(int, range=(0, MAX_DEVICE), doc="a byte offset on the device")
_name = Option(str, doc="a name for its event")
HOST_VERBS: dict[str, dict[str, Option]] = {
    "kill_iop": {"iop": _iop},
    "restart_iop": {"iop": _iop},
    "snapshot": {"name": Option(str, required=True), "since": Option(str)},
    "device": {"iop": _iop, "device": _device, "offset": _offset,
               "length": Option(int, range=(1, 1 << 30)), "name": _name},
    "trace": {},
    "stats": {},
}
_count = Option(int, required=True, range=(1, 1_000_000), doc="requests, 1..1000000")
_size = Option(int, range=(512, 128 << 10), doc="bytes per request, 512..128 KiB")
_depth = Option(int, range=(1, DEPTH), doc=f"requests outstanding at once, 1..{DEPTH}")
REMOTE_VERBS: dict[str, dict[str, Option]] = {
    "hello": {},
    "connect": {"iop": _iop},
    "disconnect": {"iop": _iop},
    "write": {"iop": _iop, "device": _device, "offset": _offset,
              "length": Option(int, required=True, range=(1, 64 << 20)),
              "seed": Option(int, range=(0, 2**32)), "byte": Option(int, range=(0, 255)),
              "key": Option(str, choices=KEY_MODES, doc="which RKey the data moves under"),
              "write_through": Option(bool), "name": _name},
    "read": {"iop": _iop, "device": _device, "offset": _offset,
             "length": Option(int, required=True, range=(1, 64 << 20)),
             "key": Option(str, choices=KEY_MODES, doc="which RKey the data moves under"),
             "name": _name},
    "flush": {"iop": _iop, "device": _device, "name": _name},
    "burst": {"iop": _iop, "device": _device, "count": _count, "size": _size, "depth": _depth,
              "rw": Option(str, choices=("read", "write", "mixed")),
              "seed": Option(int, range=(0, 2**32)), "region": Option(int, range=(1, MAX_DEVICE)),
              "name": _name},
    "verify": {"iop": _iop, "device": _device, "count": _count, "size": _size,
               "depth": _depth, "seed": Option(int, range=(0, 2**32)),
               "region": Option(int, range=(1, MAX_DEVICE)), "name": _name},
    "stats": {},
}
_HOST_VERB_CHECKS = {op: option_schema(f)[0] for op, f in HOST_VERBS.items()}
_REMOTE_VERB_CHECKS = {op: option_schema(f)[0] for op, f in REMOTE_VERBS.items()}


def _verb_issues(checks: dict, args: Mapping[str, Any], iops: Mapping[str, Any] | None
                 ) -> list[OptionIssue]:
    """A verb's arguments; its IOP against ``iops`` (None: the host is wrong, and its own
    error says so)."""
    op = args.get("op")
    if op not in checks:
        return [OptionIssue("op", f"unknown verb {op!r}", did_you_mean(str(op), tuple(checks)))]
    issues = checks[op]({k: v for k, v in args.items() if k != "op"})
    if iops is not None and "iop" in args and args["iop"] not in iops:
        issues.append(OptionIssue("iop", f"no IOP {args['iop']!r}",
                                  did_you_mean(str(args["iop"]), tuple(iops))))
    elif iops is not None and "device" in args and \
            args["device"] >= len(iops[args["iop"]]["devices"]):
        issues.append(OptionIssue("device", f"{args['iop']} has "
                                  f"{len(iops[args['iop']]['devices'])} devices"))
    if sum(k in args for k in ("seed", "byte")) > 1:
        issues.append(OptionIssue("", "write takes one of seed, byte"))
    return issues


def _host_verb(args: Mapping[str, Any], options: Mapping[str, Any],
               nodes: Mapping[str, Mapping[str, Any]]) -> list[OptionIssue]:
    return _verb_issues(_HOST_VERB_CHECKS, args, options["iops"])


def _remote_verb(args: Mapping[str, Any], options: Mapping[str, Any],
                 nodes: Mapping[str, Mapping[str, Any]]) -> list[OptionIssue]:
    return _verb_issues(_REMOTE_VERB_CHECKS, args, nodes.get(options["host"], {}).get("iops"))


# ---- both backends --------------------------------------------------------------------------
def _iop_names(host: Node) -> list[str]:
    return list(host.options["iops"])


def _remotes(host: str, scenario: Scenario) -> list[str]:
    return sorted(n.name for n in scenario.nodes
                  if n.kind == REMOTE and n.options["host"] == host)


def _layout(node: Node, scenario: Scenario):
    if node.kind == HOST:
        return host_layout(_remotes(node.name, scenario), _iop_names(node))
    return remote_layout(node.options["host"], node.name,
                         _iop_names(scenario.node(node.options["host"])))


def _sanic_options(node: Node, scenario: Scenario) -> dict:
    layout = _layout(node, scenario)
    return layout.sanic_options(PROCESS if node.kind == HOST else CLIENT,
                                kernel=node.kind == HOST)


def _san_config(node: Node, scenario: Scenario):
    ports, peers = [], {}
    for link in scenario.links:
        for ep in (link.a, link.b):
            if ep.node == node.name:
                ports.append((ep.iface, ep.mac, ep.ipv4))
            elif ep.ipv4 and scenario.node(ep.node).kind in (HOST, REMOTE) and \
                    ep.node not in peers:
                peers[ep.node] = (ep.ipv4.split("/")[0], ep.mac,
                                  _sanic_options(scenario.node(ep.node), scenario))
    return config(node.name, _sanic_options(node, scenario), ports, peers)


def host_core(node: Node, scenario: Scenario, devices: DeviceFactory,
              now: float = 0.0) -> I2oHostCore:
    o = node.options
    spec = HostSpec(tuple((name, tuple(size_of(d) for d in iop["devices"]),
                           iop.get("private", False),
                           frozenset(iop["allow"]) if "allow" in iop else None)
                          for name, iop in o["iops"].items()),
                    tuple(_remotes(node.name, scenario)), parse_seconds(o["iop_latency"]))
    return I2oHostCore(_san_config(node, scenario), spec, _layout(node, scenario), devices,
                       now)


def remote_core(node: Node, scenario: Scenario, now: float = 0.0) -> I2oRemoteCore:
    host = scenario.node(node.options["host"])
    iops = {name: FIRST_IOP_ID + i for i, name in enumerate(_iop_names(host))}
    return I2oRemoteCore(_san_config(node, scenario), iops, _layout(node, scenario), now)


def file_devices(lab_dir: str, node: str, block_size: int) -> DeviceFactory:
    """veth: each device a sparse file in the lab's directory, ``<node>-<iop>-d<i>.img``."""
    def make(iop: str, i: int, size: int) -> BlockDevice:
        return FileBlockDevice(Path(lab_dir) / f"{node}-{iop}-d{i}.img", size,
                               block_size=block_size)
    return make


def _sim_host(node: Node, scenario: Scenario) -> I2oHostCore:
    bs = node.options["block_size"]
    return host_core(node, scenario,
                     lambda iop, i, size: MemoryBlockDevice(size, block_size=bs))


def _sim_remote(node: Node, scenario: Scenario) -> I2oRemoteCore:
    return remote_core(node, scenario)


def _setup(node: Node, endpoints: list[Endpoint]) -> list[str]:
    return []  # the port is the node process's, as a sanic node's (``san.kinds``)


def _program(node: Node, env: NodeEnv) -> list[str]:
    return ["-m", "ftsslab.i2o.i2od", "--scenario", env.scenario_path, "--node", node.name,
            "--state", env.lab_dir]


register_kind(KindSpec(
    name=HOST, has_process=True, needs_kernel=False,
    validate_options=_HOST_CHECK, defaults=_HOST_DEFAULTS,
    summary="seed 001's host: IOPs with block devices on an emulated bus, exported onto the "
            "SAN by the I2O access module (direct call path, data by RDMA under RKeys)",
    sim=_sim_host, veth=VethDriver(_setup, _program, control=True), ip_interfaces=True,
    validate_topology=_host_topology, verbs=_host_verb))
register_kind(KindSpec(
    name=REMOTE, has_process=True, needs_kernel=False,
    validate_options=_REMOTE_CHECK, defaults=_REMOTE_DEFAULTS,
    summary="seed 001's remote server: the host's disks as block devices over I2O BSA "
            "on the SAN (`verb` steps; on veth an NBD export for real clients)",
    sim=_sim_remote, veth=VethDriver(_setup, _program, control=True), ip_interfaces=True,
    validate_topology=_remote_topology, verbs=_remote_verb))
