"""Seed 003's kind: `sanic`, an endnode with its SANIC on a RoCEv2 port (``node.SanicCore``),
registered once -- options, the `verb` steps it takes, checks against the links, sim model and
veth driver (the node process ``sanicd``).

A node declares its memory (``frames`` of 4 KiB), its processes (each an address space: a
protection domain, D3.9) with their segments, and its QPs with their peers; the peer QP must
name this one back, and both get their QPNs from the order they are declared, so each side
knows the other's without an exchange (a subnet manager's job, which the seed leaves out).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ftsslab.fast.roce import RKEY_ACCESS_FLAGS
from ftsslab.lab.kinds import KindSpec, NodeView, Option, OptionIssue, option_schema, register_kind
from ftsslab.lab.model import Endpoint, Node, Scenario
from ftsslab.lab.veth.drivers import NodeEnv, VethDriver

from .memory import ESID_BITS
from .node import SanicCore
from .node_config import config, esid_of, parse_seconds
from .node_verbs import VERBS

MTUS = (256, 512, 1024, 2048, 4096)  # IBA path MTUs
MAX_FRAMES = 65536  # 256 MiB of physical memory
MAX_PAGES = 1 << 16  # pages of one segment (EA page field, 16 bits)
MAX_COUNT = 1_000_000  # work requests of one counted verb
ADDRESS = (0, (1 << 64) - 1)


def _name_map(value: dict, what: str, each) -> OptionIssue | None:
    for name, item in value.items():
        if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
            return OptionIssue(f".{name}", f"bad {what} name {name!r}", "letters, digits, _ -")
        if not isinstance(item, dict):
            return OptionIssue(f".{name}", f"expected a mapping for {what} {name}, got {item!r}")
        if (issue := each(name, item)) is not None:
            return issue
    return None


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _process(name: str, p: dict) -> OptionIssue | None:
    hint = "p1: {segments: {1: 16}} (ESID: pages, all mapped) or {1: {pages: 16, mapped: 4}}"
    for key in p:
        if key not in ("kernel", "segments"):
            return OptionIssue(f".{name}.{key}", f"unknown key {key!r}", hint)
    if not isinstance(p.get("kernel", False), bool):
        return OptionIssue(f".{name}.kernel", "expected true/false")
    segs = p.get("segments", {})
    if not isinstance(segs, dict) or not segs:
        return OptionIssue(f".{name}.segments", "a process needs at least one segment", hint)
    for key, seg in segs.items():
        esid = esid_of(key)
        if esid is None or not 0 <= esid < 1 << ESID_BITS:
            return OptionIssue(f".{name}.segments", f"not an ESID: {key!r}",
                               "an integer 0..2**36-1: the top 36 bits of an address")
        pages = seg if _int(seg) else seg.get("pages") if isinstance(seg, dict) else None
        mapped = seg.get("mapped", pages) if isinstance(seg, dict) else pages
        if not _int(pages) or not 1 <= pages <= MAX_PAGES or not _int(mapped) \
                or not 0 <= mapped <= pages:
            return OptionIssue(f".{name}.segments.{key}", f"not a segment: {seg!r}", hint)
    return None


QP_KEYS = ("process", "type", "peer", "max_outstanding", "timeout", "retry_cnt", "rnr_retry",
           "qkey", "recv_buffer", "recv_size", "receives", "rdma")


def _qp(name: str, q: dict) -> OptionIssue | None:
    hint = ("q1: {process: p1, peer: b.q1} (RC), {process: p1, type: ud, qkey: 0x1234} (UD), "
            "{process: p1, type: rd, qkey: 0x1234} (RD)")
    for key in q:
        if key not in QP_KEYS:
            return OptionIssue(f".{name}.{key}", f"unknown key {key!r}",
                               "one of: " + ", ".join(QP_KEYS))
    if not isinstance(q.get("process"), str):
        return OptionIssue(f".{name}", "a QP needs its `process`", hint)
    if q.get("type", "rc") not in ("rc", "ud", "rd"):
        return OptionIssue(f".{name}.type", f"{q['type']!r} is not a QP type", "rc, ud or rd")
    if not isinstance(q.get("rdma", True), bool):
        return OptionIssue(f".{name}.rdma", "expected true/false")
    if q.get("type", "rc") == "rc" and not isinstance(q.get("peer"), str):
        return OptionIssue(f".{name}", "an RC QP needs its `peer`: node.qp", hint)
    bounds = {"max_outstanding": (1, 128), "retry_cnt": (0, 7), "rnr_retry": (0, 7),
              "qkey": (0, 2**32 - 1), "recv_buffer": ADDRESS, "recv_size": (1, 1 << 20),
              "receives": (0, 1024)}
    for key, (lo, hi) in bounds.items():
        if key in q and (not _int(q[key]) or not lo <= q[key] <= hi):
            return OptionIssue(f".{name}.{key}", f"{q[key]!r} is out of range ({lo}..{hi})")
    if q.get("receives") and "recv_buffer" not in q:
        return OptionIssue(f".{name}.receives", "receives need a `recv_buffer` address")
    if "timeout" in q:
        try:
            if not 1e-4 <= parse_seconds(q["timeout"]) <= 10:
                raise ValueError
        except ValueError:
            return OptionIssue(f".{name}.timeout", f"not a timeout: {q['timeout']!r}",
                               "like 50ms: 0.1 ms..10 s")
    return None


_VALIDATE, _DEFAULTS = option_schema({
    "frames": Option(int, default=256, range=(1, MAX_FRAMES),
                     doc="physical memory in 4 KiB frames, 1..65536"),
    "mtu": Option(int, default=1024, choices=MTUS, doc="the path MTU of its QPs"),
    "rdma": Option(bool, default=True,
                   doc="false: an I/O adapter that refuses every incoming RDMA (L665)"),
    "fault_handler": Option(str, default="map", choices=("map", "refuse"),
                            doc="what the default error handler does with a page fault"),
    "processes": Option(dict, required=True, check=lambda v: _name_map(v, "process", _process),
                        doc="p1: {segments: {1: 16}}"),
    "qps": Option(dict, default={}, check=lambda v: _name_map(v, "QP", _qp),
                  doc="q1: {process: p1, peer: b.q1}"),
    "management": Option(dict, check=lambda v: _management(v),
                         doc="{process: p1, buffer: 0x10004000}: a GSI agent on QP1, its 17 "
                             "MADs of 256 bytes at buffer"),
})


def _management(v: dict) -> str | None:
    if set(v) != {"process", "buffer"} or not isinstance(v["process"], str) \
            or not _int(v["buffer"]):
        return f"not {{process: NAME, buffer: EA}}: {v!r}"
    return None


def _topology(view: NodeView, nodes: Mapping[str, NodeView]) -> list[OptionIssue]:
    issues = []
    if not any(p.ipv4 for p in view.ports.values()):
        issues.append(OptionIssue("", "a sanic node needs an IPv4 address on its link",
                                  "give its endpoint ipv4: 10.0.0.1/24"))
    procs = view.options.get("processes", {})
    mgmt = view.options.get("management")
    if mgmt is not None and mgmt["process"] not in procs:
        issues.append(OptionIssue("management.process", f"no process {mgmt['process']!r}",
                                  "one of: " + ", ".join(procs)))
    for qname, q in view.options.get("qps", {}).items():
        if q["process"] not in procs:
            issues.append(OptionIssue(f"qps.{qname}.process", f"no process {q['process']!r}",
                                      "one of: " + ", ".join(procs)))
        if q.get("type", "rc") != "rc":
            continue
        peer, _, remote = q["peer"].partition(".")
        remote = remote or qname
        other = nodes.get(peer)
        if other is None or other.kind != "sanic" or peer == view.name:
            issues.append(OptionIssue(f"qps.{qname}.peer", f"{peer!r} is not another sanic node",
                                      "peer: node.qp"))
            continue
        back = other.options.get("qps", {}).get(remote)
        if back is None or back.get("type", "rc") != "rc" or \
                back.get("peer", "").partition(".")[0] != view.name or \
                (back.get("peer").partition(".")[2] or remote) != qname:
            want = f"{{{remote}: {{peer: {view.name}.{qname}}}}}"
            issues.append(OptionIssue(f"qps.{qname}.peer", f"{peer}.{remote} does not name "
                                      f"{view.name}.{qname} back", f"give {peer} qps: {want}"))
    return issues


# ---- the verbs a `verb` step may call (``node.VERBS``) --------------------------------------

_addr = Option(int, range=ADDRESS, doc="an effective address, like 0x10000000")
_len = Option(int, range=(0, 1 << 31), doc="bytes")
_key = Option((str, int), doc="a key named by allocate_rkey here, or a key value")
_proc = Option(str, required=True, doc="the process (its address space) making the call")
_qp_opt = Option(str, required=True, doc="one of the node's QPs")
_count = Option(int, range=(1, MAX_COUNT), doc="1..1000000 work requests")
_wr = Option(int, range=(0, 2**32 - 1), doc="the work request id its completion names")


def _access(v: list) -> str | None:
    bad = [a for a in v if a not in RKEY_ACCESS_FLAGS]
    return f"not access rights: {bad}; one of {RKEY_ACCESS_FLAGS}" if bad else None


def _sg_list(v: list) -> str | None:
    for i, p in enumerate(v):
        if not isinstance(p, dict) or set(p) != {"address", "length"} or \
                not all(_int(x) and x >= 0 for x in p.values()):
            return f"part {i} is not {{address: EA, length: bytes}}: {p!r}"
    return None


_access_opt = Option(list, default=[], check=_access, doc="[REMOTE_WRITE, REMOTE_READ, ...]")
_remote = {"rkey": Option(int, range=(0, 2**32 - 1), doc="a key value (forged, stale...)"),
           "advert": Option(int, range=(-1024, 1024),
                            doc="the RKeyAdvert the QP received: 1 the first, -1 the newest"),
           "address": _addr, "offset": Option(int, range=(0, 1 << 40),
                                              doc="bytes from the advertised address")}
VERB_FIELDS: dict[str, dict[str, Option]] = {
    "allocate_rkey": {"process": _proc, "key": Option(str, required=True, doc="its name")},
    "bind_rkey": {"process": _proc, "key": _key, "address": _addr, "length": _len,
                  "access": _access_opt},
    "unbind_rkey": {"process": _proc, "key": _key},
    "deallocate_rkey": {"process": _proc, "key": _key},
    "advertise": {"qp": _qp_opt, "key": _key, "buffer": _addr, "wr_id": _wr},
    "post_send": {"qp": _qp_opt, "to": Option(str, doc="an RD QP's destination: node.qp"),
                  "qkey": Option(int, range=(0, 2**32 - 1)),
                  "opcode": Option(str, required=True, choices=(
        "send", "send_imm", "write", "write_imm", "read", "cas", "fetch_add", "bind", "delay")),
        "wr_id": _wr, "local": _addr, "length": _len, **_remote, "key": _key,
        "access": _access_opt, "imm": Option(int, range=(0, 2**32 - 1)),
        "compare": Option(int, range=(0, 2**64 - 1)), "swap": Option(int, range=(0, 2**64 - 1)),
        "add": Option(int, range=(0, 2**64 - 1)), "fence": Option(bool),
        "delay": Option((str, int, float), doc="like 50ms"), "count": _count,
        "depth": Option(int, range=(1, 256), doc="work requests of a count posted at once "
                        "(1: one after another, each timed)"),
        "sg_list": Option(list, range=(1, 16), check=lambda v: _sg_list(v),
                          doc="[{address: 0x10000000, length: 100}, ...]: 1..16 parts")},
    "increment": {"qp": _qp_opt, "by": Option(str, choices=("cas", "fetch_add")),
                  "count": Option(int, required=True, range=(1, MAX_COUNT)), "local": _addr,
                  "to": Option(str, doc="an RD QP's destination: node.qp"),
                  "wr_id": _wr, **_remote},
    "post_recv": {"qp": _qp_opt, "address": Option(int, required=True, range=ADDRESS),
                  "length": Option(int, required=True, range=(0, 1 << 31)), "wr_id": _wr,
                  "count": _count},
    "post_datagram": {"qp": _qp_opt, "to": Option(str, required=True, doc="node.qp"),
                      "local": _addr, "length": _len, "qkey": Option(int, range=(0, 2**32 - 1)),
                      "imm": Option(int, range=(0, 2**32 - 1)), "wr_id": _wr,
                      "count": _count},
    "map_page": {"process": _proc, "address": Option(int, required=True, range=ADDRESS)},
    "swap_out": {"process": _proc, "address": Option(int, required=True, range=ADDRESS)},
    "migrate": {"process": _proc, "address": Option(int, required=True, range=ADDRESS)},
    "add_segment": {"process": _proc, "esid": Option(int, required=True,
                                                     range=(0, (1 << ESID_BITS) - 1)),
                    "vsid": Option(int, range=(1, (1 << 36) - 1))},
    "delete_segment": {"process": _proc, "esid": Option(int, required=True,
                                                        range=(0, (1 << ESID_BITS) - 1))},
    "fill": {"process": _proc, "address": Option(int, required=True, range=ADDRESS),
             "length": Option(int, required=True, range=(1, 1 << 24)),
             "byte": Option(int, range=(0, 255)), "seed": Option(int, range=(0, 2**32)),
             "hex": Option(str)},
    "read": {"process": _proc, "address": Option(int, required=True, range=ADDRESS),
             "length": Option(int, required=True, range=(1, 256)), "name": Option(str)},
    "snapshot": {"name": Option(str, required=True), "since": Option(str)},
    "query_qp": {"qp": _qp_opt},
    "received": {"qp": _qp_opt},
    "stats": {},
    "discover": {"sweeps": Option(int, range=(1, 64)),
                 "timeout": Option((str, int, float), doc="a sweep's wait, like 50ms")},
    "fault_handler": {"action": Option(str, required=True, choices=("map", "refuse"))},
}
_VERB_CHECKS = {op: option_schema(fields)[0] for op, fields in VERB_FIELDS.items()}
assert set(VERB_FIELDS) == set(VERBS), "every verb has its fields, and only verbs do"
_NEEDS_KEY = ("bind_rkey", "unbind_rkey", "deallocate_rkey", "advertise")


def _verb(args: Mapping[str, Any], options: Mapping[str, Any],
          _nodes: Mapping[str, Mapping[str, Any]]) -> list[OptionIssue]:
    """A `verb` step's arguments (``op`` and the op's own), against the node's options."""
    op = args.get("op")
    if op not in _VERB_CHECKS:
        from ftsslab.lab.kinds import did_you_mean

        return [OptionIssue("op", f"unknown verb {op!r}", did_you_mean(str(op), tuple(VERBS)))]
    issues = _VERB_CHECKS[op]({k: v for k, v in args.items() if k != "op"})
    if op in _NEEDS_KEY and "key" not in args:
        issues.append(OptionIssue("", f"{op} needs the `key`", "key: k1"))
    if op == "post_send" and args.get("opcode") == "bind" and \
            not {"key", "address", "length"} <= set(args):
        issues.append(OptionIssue("", "a bind work request needs key, address and length"))
    if "process" in args and args["process"] not in options.get("processes", {}):
        issues.append(OptionIssue("process", f"no process {args['process']!r} on this node",
                                  "one of: " + ", ".join(options.get("processes", {}))))
    qps = options.get("qps", {})
    if "qp" in args and args["qp"] not in qps:
        issues.append(OptionIssue("qp", f"no QP {args['qp']!r} on this node",
                                  "one of: " + ", ".join(qps) or "none"))
    elif op in ("post_send", "increment") and "qp" in args:
        rd = qps[args["qp"]].get("type") == "rd"
        if rd and "to" not in args:
            issues.append(OptionIssue("", f"{args['qp']} is an RD QP: say where to, "
                                      "`to: node.qp`"))
        if not rd and "to" in args:
            issues.append(OptionIssue("to", f"{args['qp']} is connected: no `to`",
                                      "`to` is for RD QPs"))
    if "fill" == op and sum(k in args for k in ("byte", "seed", "hex")) > 1:
        issues.append(OptionIssue("", "fill takes one of byte, seed, hex"))
    return issues


# ---- both backends ---------------------------------------------------------------------------

def sanic_config(node: Node, scenario: Scenario):
    """The node's ``SanicConfig``: its port, and every other sanic node's address and QPs."""
    ports, peers = [], {}
    for link in scenario.links:
        for ep in (link.a, link.b):
            if ep.node == node.name:
                ports.append((ep.iface, ep.mac, ep.ipv4))
            elif ep.ipv4 and scenario.node(ep.node).kind == "sanic" and ep.node not in peers:
                peers[ep.node] = (ep.ipv4.split("/")[0], ep.mac,
                                  scenario.node(ep.node).options)
    return config(node.name, node.options, ports, peers)


def _sim(node: Node, scenario: Scenario) -> SanicCore:
    return SanicCore(sanic_config(node, scenario))


def _setup(node: Node, endpoints: list[Endpoint]) -> list[str]:
    # the port is the node process's (its own MAC and IP on a packet socket): the kernel's
    # stack has no address, so it never answers for it (no ICMP, no RST)
    return []


def _program(node: Node, env: NodeEnv) -> list[str]:
    return ["-m", "ftsslab.san.sanicd", "--scenario", env.scenario_path,
            "--node", node.name, "--state", env.lab_dir]


SANIC = register_kind(KindSpec(
    name="sanic",
    has_process=True,
    needs_kernel=False,
    validate_options=_VALIDATE,
    defaults=_DEFAULTS,
    summary="seed 003's endnode: a SANIC on a RoCEv2 port (UDP 4791), with processes, "
            "RKeys and RC/UD queue pairs driven by `verb` steps",
    sim=_sim,
    veth=VethDriver(_setup, _program, control=True),
    ip_interfaces=True,
    validate_topology=_topology,
    verbs=_verb,
))
