"""Scenario files: YAML -> ``model.Scenario``, or ``ScenarioErrors`` listing every problem.

The file is only *composed* (``yaml.SafeLoader``): the loader walks the node tree
itself, so no YAML tag can construct anything and every value keeps its line.
Tags, aliases and multiple documents are refused before composing. Every check
runs even after earlier ones failed, so one run reports all errors, each with its
YAML path, line and a hint. See docs/scenarios.md for the format.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .kinds import KindSpec, NodeView, OptionIssue, Port, did_you_mean, get_kind, kind_names
from .kinds import kinds as all_kinds
from .model import (
    Absent,
    Check,
    CommandResult,
    Endpoint,
    Exec,
    Expectation,
    ForwardingEntry,
    Link,
    LinkState,
    NodeProcess,
    Received,
    Scenario,
    Send,
    Step,
    TableHas,
    TableOp,
    Wait,
    max_frame,
)
from .model import Node as ModelNode

MAX_BYTES = 1 << 20          # scenario files larger than this are refused
MAX_DEPTH = 64               # YAML nesting
MAX_ERRORS = 200             # beyond this, one "too many errors" line
MAX_DURATION = 3600.0        # seconds, for wait/interval/timeout
MAX_COUNT = 1_000_000

NAME_RE = re.compile(r"[a-z0-9-]+")
NODE_RE = re.compile(r"[a-z][a-z0-9]*")
NODE_MAX = 10
IFACE_RE = re.compile(r"[a-z][a-z0-9_-]*")
IFACE_MAX = 15
# Words `ip link` takes as its own keywords, exactly or (IP_ABBREVIATED) abbreviated:
# `a` is `address`, `b` `broadcast`. The veth backend names interfaces where a keyword
# may stand, so such a name fails at lab-up; `all` and `default` the kernel refuses.
IP_KEYWORDS = frozenset({
    "up", "down", "name", "index", "brd", "qlen", "mtu", "xdp", "xdpgeneric", "xdpdrv",
    "xdpoffload", "netns", "multicast", "allmulticast", "promisc", "trailers", "arp",
    "carrier", "vf", "vrf", "group", "mode", "state", "protodown", "dev", "parentdev",
    "gso_max_size", "gso_max_segs", "gro_max_size", "gso_ipv4_max_size", "gro_ipv4_max_size",
    "all", "default"})
IP_ABBREVIATED = ("link", "address", "broadcast", "txqueuelen", "txqlen", "master", "nomaster",
                  "dynamic", "type", "alias", "numtxqueues", "numrxqueues", "addrgenmode",
                  "link-netnsid", "help")
LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
LABEL_MAX = 64
MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
DURATION_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ms|s)\s*")

TOP_KEYS = ("name", "description", "backend", "nodes", "links", "steps", "expect")
BACKENDS = ("auto", "veth", "sim")
LINK_KEYS = ("endpoints", "mtu")
ENDPOINT_KEYS = ("node", "interface", "mac", "ipv4")
STEP_ACTIONS = ("send", "exec", "link", "table", "kill", "restart", "wait", "check")
SEND_KEYS = ("from", "packet", "count", "interval")
EXEC_KEYS = ("node", "cmd", "timeout", "background")
LINKSTATE_KEYS = ("link", "state")
TABLE_STEP_KEYS = ("switch", "add", "remove")
CHECK_KEYS = ("name", "expect")
ENTRY_KEYS = ("vip", "port", "client_ip", "proto", "client_port", "vport", "dst_mac")
EXPECT_KINDS = ("received", "absent", "command", "table")
RECEIVED_KEYS = ("node", "match", "iface", "count", "min", "max")
ABSENT_KEYS = ("link", "match")
COMMAND_KEYS = ("step", "status", "contains")
TABLE_EXPECT_KEYS = ("switch", "has", "lacks")
PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1}
PORT_PROTOCOLS = (6, 17)

_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_SC = SafeConstructor()
# libyaml's parser when present (same events and marks, ~10x faster); both are safe: only
# events and nodes are built, never objects.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# ---- errors -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ScenarioError:
    path: str            # YAML path: "steps[3].send.packet" ("" for the file as a whole)
    line: int | None     # 1-based
    message: str
    hint: str = ""
    file: str = ""

    def __str__(self) -> str:
        """One line: ``file:line: path: message (hint: ...)``."""
        out = self.file or "<string>"
        if self.line:
            out += f":{self.line}"
        out += ": "
        if self.path:
            out += f"{self.path}: "
        out += self.message
        if self.hint:
            out += f" (hint: {self.hint})"
        return " ".join(out.splitlines())

    def as_dict(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "path": self.path,
                "message": self.message, "hint": self.hint}


class ScenarioErrors(Exception):
    """Everything wrong with one scenario file, in line order; ``str()`` is one line each."""

    def __init__(self, errors: Iterable[ScenarioError]):
        self.errors: list[ScenarioError] = sorted(errors, key=lambda e: e.line or 0)
        super().__init__("\n".join(str(e) for e in self.errors))

    def lines(self) -> list[str]:
        return [str(e) for e in self.errors]

    def __str__(self) -> str:
        return "\n".join(self.lines())


# ---- public API ---------------------------------------------------------------------------

def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file."""
    name = str(path)
    try:
        p = Path(path)
        size = p.stat().st_size
        if size > MAX_BYTES:
            raise ScenarioErrors([ScenarioError(
                "", None, f"file is {size} bytes, more than the 1 MiB limit",
                "split the scenario or generate it", name)])
        data = p.read_bytes()
    except OSError as exc:
        raise ScenarioErrors([ScenarioError(
            "", None, f"cannot read the file: {exc.strerror or exc}", "check the path", name)
        ]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ScenarioErrors([ScenarioError(
            "", line, "the file is not UTF-8 text", "save it as UTF-8", name)]) from None
    return load_scenario_text(text, name)


def load_scenario_text(text: str, path: str = "<string>") -> Scenario:
    """Validate scenario text; ``path`` names it in messages and in ``Scenario.path``."""
    if not isinstance(text, str):
        raise ScenarioErrors([ScenarioError("", None, "scenario text must be a str", "", path)])
    loader = _Loader(path)
    try:
        scenario = loader.load(text)
    except RecursionError:
        loader.err("", None, "the document is nested too deeply", "flatten it")
        scenario = None
    except Exception as exc:  # a loader bug must still come out as a scenario error
        loader.err("", None, f"internal error in the scenario loader: {type(exc).__name__}: "
                   f"{exc}", "please report this with the file")
        scenario = None
    if loader.errors or scenario is None:
        raise ScenarioErrors(loader.report())
    return scenario


# ---- the loader ---------------------------------------------------------------------------

def _line(node: Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


def _describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if node.tag == _NULL:
        return "nothing (null)"
    text = node.value if len(node.value) <= 40 else node.value[:37] + "..."
    return repr(text) if node.tag == "tag:yaml.org,2002:str" else text


class _Loader:
    def __init__(self, file: str):
        self.file = file
        self.errors: list[ScenarioError] = []
        # what the checks below build up
        self.kinds: dict[str, KindSpec | None] = {}    # node -> spec (None: unknown kind)
        self.node_order: list[str] = []
        self.ifaces: dict[str, list[str]] = {}          # node -> its interfaces in order
        self.links_by_pair: dict[frozenset, str] = {}    # {ep, ep} -> Link.name
        self.endpoints: set[str] = set()
        self.labels: dict[str, Node] = {}
        self.exec_steps: dict[str, Exec] = {}           # label -> step
        self.mtu: dict[str, int] = {}                   # endpoint -> link MTU
        self.link_where: dict[str, tuple[str, int | None]] = {}  # Link.name -> path, line
        self.tables: dict[str, list[ForwardingEntry]] = {}  # switch -> entries along the steps
        self.killed: dict[str, str] = {}                # node -> label of the step that killed it
        self.checked: dict[str, tuple[MappingNode, frozenset[str]]] = {}  # node with valid
        #                                               options -> its mapping, keys given
        self.unlinked: set[str] = set()                 # nodes named in a link that failed

    # -- reporting --
    def err(self, path: str, where: Node | int | None, message: str, hint: str = "") -> None:
        line = where if isinstance(where, int) or where is None else _line(where)
        self.errors.append(ScenarioError(path, line, message, hint, self.file))

    def report(self) -> list[ScenarioError]:
        if len(self.errors) <= MAX_ERRORS:
            return self.errors
        extra = len(self.errors) - MAX_ERRORS
        return self.errors[:MAX_ERRORS] + [ScenarioError(
            "", None, f"{extra} more errors not shown", "fix the ones above first", self.file)]

    # -- YAML ---------------------------------------------------------------------------
    def compose(self, text: str) -> Node | None:
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            line = text[: exc.start].count("\n") + 1
            self.err("", line, "the text holds a character that cannot be UTF-8 encoded",
                     "remove the lone surrogate")
            return None
        if size > MAX_BYTES:
            self.err("", None, f"file is {size} bytes, more than the 1 MiB limit",
                     "split the scenario or generate it")
            return None
        if not text.strip():
            self.err("", None, "the file is empty", "start with `name:` and `nodes:`")
            return None
        try:
            depth = docs = 0
            for ev in yaml.parse(text, Loader=_YAML_LOADER):
                line = ev.start_mark.line + 1
                if isinstance(ev, yaml.DocumentStartEvent):
                    docs += 1
                    if docs == 2:
                        self.err("", line, "more than one YAML document",
                                 "a scenario file holds one document; remove the second `---`")
                elif isinstance(ev, yaml.AliasEvent):
                    self.err("", line, f"YAML alias *{ev.anchor} is not allowed",
                             "write the value out; anchors and aliases are not supported")
                elif isinstance(ev, yaml.CollectionStartEvent):
                    depth += 1
                    if depth > MAX_DEPTH:
                        self.err("", line, "the document is nested too deeply", "flatten it")
                        return None
                elif isinstance(ev, yaml.CollectionEndEvent):
                    depth -= 1
                tag = getattr(ev, "tag", None)
                if tag is not None and isinstance(ev, yaml.NodeEvent):
                    self.err("", line, f"YAML tag {tag} is not allowed",
                             "scenario files use plain YAML values; quote the text instead")
                if len(self.errors) > MAX_ERRORS:
                    return None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            context = getattr(exc, "context", None)
            msg = f"YAML syntax error: {problem}" + (f" ({context})" if context else "")
            line = mark.line + 1 if mark else None
            if isinstance(exc, yaml.reader.ReaderError):
                char = exc.character
                code = char if isinstance(char, int) else ord(char[:1] or "\0")
                msg = f"YAML syntax error: {exc.reason} (character #x{code:04x})"
                line = text[: exc.position].count("\n") + 1
            self.err("", line, msg,
                     "check indentation, colons and quotes around this line")
            return None
        if self.errors:
            return None
        try:
            root = yaml.compose(text, Loader=_YAML_LOADER)
        except yaml.YAMLError as exc:  # pragma: no cover - the parse above saw it first
            self.err("", None, f"YAML error: {str(exc).splitlines()[0]}", "check the syntax")
            return None
        if root is None or (isinstance(root, ScalarNode) and root.tag == _NULL):
            self.err("", None, "the file is empty", "start with `name:` and `nodes:`")
            return None
        if not isinstance(root, MappingNode):
            self.err("", root, f"the top level must be a mapping, not {_describe(root)}",
                     "start with `name:` and `nodes:`")
            return None
        return root

    # -- typed access to nodes -------------------------------------------------------------
    def mapping(self, node: Node | None, path: str, allowed: tuple[str, ...],
                required: tuple[str, ...] = (), what: str = "a mapping",
                ) -> dict[str, tuple[Node, Node]] | None:
        if node is None:
            return None
        if not isinstance(node, MappingNode):
            self.err(path, node, f"expected {what}, got {_describe(node)}",
                     "keys: " + ", ".join(allowed))
            return None
        out: dict[str, tuple[Node, Node]] = {}
        for knode, vnode in node.value:
            if not isinstance(knode, ScalarNode) or knode.tag == _NULL:
                self.err(path, knode, f"a key must be a plain word, got {_describe(knode)}",
                         "keys: " + ", ".join(allowed))
                continue
            key = knode.value
            kpath = f"{path}.{key}" if path else key
            if key in out:
                self.err(kpath, knode, f"duplicate key {key!r}",
                         f"{key!r} is already given on line {_line(out[key][0])}")
                continue
            if key not in allowed:
                self.err(kpath, knode, f"unknown key {key!r}", did_you_mean(key, allowed))
                continue
            out[key] = (knode, vnode)
        for key in required:
            if key not in out:
                self.err(path, node, f"missing required key {key!r}",
                         f"add `{key}:`" if path else f"add `{key}:` at the top level")
        return out

    def text(self, node: Node, path: str, what: str = "a string") -> str | None:
        """Any non-null scalar, as written (so 02:00:.. or 1 stay text)."""
        if isinstance(node, ScalarNode) and node.tag != _NULL:
            return node.value
        self.err(path, node, f"expected {what}, got {_describe(node)}", f"write {what} here")
        return None

    def integer(self, node: Node, path: str, lo: int, hi: int, what: str = "") -> int | None:
        hint = what or f"an integer from {lo} to {hi}"
        if not (isinstance(node, ScalarNode) and node.tag == _INT):
            self.err(path, node, f"expected an integer, got {_describe(node)}", hint)
            return None
        try:
            value = _SC.construct_yaml_int(node)
        except (ValueError, TypeError):
            self.err(path, node, f"not an integer: {node.value!r}", hint)
            return None
        if not lo <= value <= hi:
            self.err(path, node, f"{value} is out of range ({lo}..{hi})", hint)
            return None
        return value

    def boolean(self, node: Node, path: str) -> bool | None:
        if isinstance(node, ScalarNode) and node.tag == _BOOL:
            return bool(_SC.construct_yaml_bool(node))
        self.err(path, node, f"expected true or false, got {_describe(node)}", "true or false")
        return None

    def duration(self, node: Node, path: str, lo: float = 0.0, positive: bool = False,
                 ) -> float | None:
        hint = "seconds: a number like 0.5, or text like \"200ms\" or \"2s\""
        value: float | None = None
        if isinstance(node, ScalarNode) and node.tag in (_INT, _FLOAT):
            try:
                value = float(_SC.construct_yaml_float(node) if node.tag == _FLOAT
                              else _SC.construct_yaml_int(node))
            except (ValueError, TypeError, OverflowError):
                value = None
        elif isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:str":
            m = DURATION_RE.fullmatch(node.value)
            if m:
                value = float(m.group(1)) / (1000.0 if m.group(2) == "ms" else 1.0)
        if value is None or math.isnan(value):
            self.err(path, node, f"expected a duration, got {_describe(node)}", hint)
            return None
        if value < lo or (positive and value <= 0):
            self.err(path, node, f"duration must be {'> 0' if positive else '>= 0'}, got "
                     f"{node.value}", hint)
            return None
        if value > MAX_DURATION:
            self.err(path, node, f"duration {node.value} is longer than an hour",
                     "durations are in seconds; write \"200ms\" for milliseconds")
            return None
        return value

    def sequence(self, node: Node | None, path: str, what: str) -> list[Node]:
        if node is None:
            return []
        if isinstance(node, ScalarNode) and node.tag == _NULL:
            return []
        if not isinstance(node, SequenceNode):
            self.err(path, node, f"expected a list of {what}, got {_describe(node)}",
                     f"write `- ...` items, one per {what.rstrip('s')}")
            return []
        return list(node.value)

    # -- values ---------------------------------------------------------------------------
    def mac(self, node: Node, path: str, unicast: bool = True) -> str | None:
        text = self.text(node, path, "a MAC address")
        if text is None:
            return None
        mac = text.strip().lower().replace("-", ":")
        if not MAC_RE.fullmatch(mac):
            self.err(path, node, f"not a MAC address: {text!r}",
                     'six hex bytes like "02:00:00:00:00:01" (quote it)')
            return None
        if unicast and int(mac[:2], 16) & 1:
            self.err(path, node, f"{mac} is a multicast address", "interface MACs are unicast; "
                     "use a locally administered one like 02:..")
            return None
        if unicast and mac == "00:00:00:00:00:00":
            self.err(path, node, "the all-zero MAC is not allowed", 'e.g. "02:00:00:00:00:01"')
            return None
        return mac

    def ipv4_addr(self, node: Node, path: str) -> str | None:
        text = self.text(node, path, "an IPv4 address")
        if text is None:
            return None
        try:
            return str(ipaddress.IPv4Address(text.strip()))
        except ValueError:
            hint = "no prefix here" if "/" in text else "dotted quad like 10.0.0.100"
            self.err(path, node, f"not an IPv4 address: {text!r}", hint)
            return None

    def ipv4_iface(self, node: Node, path: str) -> str | None:
        text = self.text(node, path, "an IPv4 address with prefix")
        if text is None:
            return None
        text = text.strip()
        if "/" not in text:
            self.err(path, node, f"{text!r} has no prefix length", f"write {text}/24 or similar")
            return None
        try:
            iface = ipaddress.IPv4Interface(text)
        except ValueError:
            self.err(path, node, f"not an IPv4 address/prefix: {text!r}", "like 10.0.0.1/24")
            return None
        net = iface.network
        if net.prefixlen < 31 and iface.ip in (net.network_address, net.broadcast_address):
            self.err(path, node, f"{text} is the network or broadcast address of {net}",
                     "pick a host address inside the subnet")
            return None
        if iface.ip.is_loopback or iface.ip.is_multicast or iface.ip.is_unspecified:
            self.err(path, node, f"{iface.ip} cannot be an interface address",
                     "use a private unicast address like 10.0.0.1/24")
            return None
        return str(iface)

    def node_name(self, text: str, node: Node, path: str, known: bool = True) -> str | None:
        """Check a reference to a node (``known``: it must exist)."""
        if known:
            if text in self.kinds:
                return text
            hint = did_you_mean(text, self.node_order) if self.node_order else "define it in nodes:"
            self.err(path, node, f"unknown node {text!r}", hint)
            return None
        if not NODE_RE.fullmatch(text) or len(text) > NODE_MAX:
            self.err(path, node, f"bad node name {text!r}",
                     f"a lower-case letter, then letters/digits, at most {NODE_MAX} characters "
                     "(it names namespaces and interfaces)")
            return None
        return text

    def iface_name(self, text: str, node: Node, path: str) -> bool:
        if len(text) > IFACE_MAX or not IFACE_RE.fullmatch(text):
            self.err(path, node, f"bad interface name {text!r}",
                     f"a lower-case letter, then letters/digits/'_'/'-', at most {IFACE_MAX} "
                     "characters (Linux interface names)")
            return False
        word = text if text in IP_KEYWORDS else next(
            (k for k in IP_ABBREVIATED if k.startswith(text)), None)
        if word is not None:
            self.err(path, node, f"interface name {text!r} reads as the `ip link` keyword "
                     f"{word!r}", f"the veth backend cannot create it; e.g. {text}0")
            return False
        return True

    def endpoint_text(self, text: str, node: Node, path: str) -> tuple[str, str] | None:
        """"h1:eth0" -> ("h1", "eth0") (syntax only)."""
        parts = text.strip().split(":")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            self.err(path, node, f"bad endpoint {text!r}", 'write "node:interface", e.g. h1:eth0')
            return None
        name, iface = parts
        ok_n = self.node_name(name, node, path, known=False) is not None
        ok_i = self.iface_name(iface, node, path)
        return (name, iface) if ok_n and ok_i else None

    def link_ref(self, node: Node, path: str) -> str | None:
        text = self.text(node, path, 'a link "a:if b:if"')
        if text is None:
            return None
        parts = text.split()
        if len(parts) != 2:
            self.err(path, node, f"bad link {text!r}", 'two endpoints, e.g. "h1:eth0 s1:p1"')
            return None
        name = self.links_by_pair.get(frozenset(parts))
        if name is None:
            known = sorted(self.links_by_pair.values())
            canon = " ".join(parts)
            hint = did_you_mean(canon, known) if known else "the scenario has no links"
            self.err(path, node, f"no link {text!r}", hint)
        return name

    def endpoint_ref(self, node: Node, path: str) -> str | None:
        text = self.text(node, path, 'an endpoint "node:interface"')
        if text is None:
            return None
        text = text.strip()
        if text in self.endpoints:
            return text
        name = text.split(":")[0]
        if name in self.ifaces and self.ifaces[name]:
            hint = f"{name} has " + ", ".join(f"{name}:{i}" for i in self.ifaces[name])
        else:
            hint = did_you_mean(text, sorted(self.endpoints)) if self.endpoints else \
                "no links define endpoints"
        self.err(path, node, f"no endpoint {text!r}", hint)
        return None

    def packet_expr(self, node: Node, path: str, pattern: bool) -> tuple[str, Any] | None:
        """Check a packet expression (``pattern``: a match pattern); (text, parsed) or None."""
        text = self.text(node, path, "a packet pattern" if pattern else "a packet expression")
        if text is None:
            return None
        if "\n" in text.strip():  # a block scalar: one expression over several lines
            text = " ".join(part.strip() for part in text.splitlines() if part.strip())
        text = text.strip()
        ok, result = _parse_expr(text, pattern)
        if ok:
            return text, result
        msg, hint = result
        example = 'UDP(dport=7)' if pattern else \
            'Ether(dst="02:00:00:00:02:01")/IP(dst="10.0.0.2")/UDP(dport=7)/b"x"'
        self.err(path, node, msg, hint or f"e.g. {example}")
        return None

    # -- the scenario ---------------------------------------------------------------------
    def load(self, text: str) -> Scenario | None:
        root = self.compose(text)
        if root is None:
            return None
        top = self.mapping(root, "", TOP_KEYS, required=("name", "nodes"))
        assert top is not None
        name = ""
        if "name" in top:
            vnode = top["name"][1]
            got = self.text(vnode, "name")
            if got is not None:
                if not NAME_RE.fullmatch(got) or len(got) > 63:
                    self.err("name", vnode, f"bad scenario name {got!r}",
                             "lower-case letters, digits and '-', at most 63 characters")
                name = got
        description = ""
        if "description" in top:
            description = self.text(top["description"][1], "description") or ""
        backend = "auto"
        backend_node = None
        if "backend" in top:
            backend_node = top["backend"][1]
            got = self.text(backend_node, "backend")
            if got is not None and got not in BACKENDS:
                self.err("backend", backend_node, f"unknown backend {got!r}",
                         did_you_mean(got, BACKENDS))
            elif got is not None:
                backend = got
        nodes = self.load_nodes(top["nodes"][1] if "nodes" in top else None)
        links = self.load_links(top["links"][1] if "links" in top else None)
        self.check_topology(nodes, links)
        steps = self.load_steps(top["steps"][1] if "steps" in top else None)
        expectations = self.load_expectations(
            top["expect"][1] if "expect" in top else None, "expect", None)
        self.check_loops(links)
        needs_kernel = any(isinstance(s, Exec) for s in steps) or any(
            isinstance(e, CommandResult) for e in expectations)
        kernel_kinds = sorted({n.kind for n in nodes if (k := get_kind(n.kind)) and k.needs_kernel})
        if backend == "sim" and (needs_kernel or kernel_kinds):
            why = "exec steps/command expectations need" if needs_kernel else \
                f"node kind {kernel_kinds[0]!r} needs"
            self.err("backend", backend_node, f"backend sim cannot run this scenario: {why} "
                     "a real kernel stack", "use backend: veth (or auto)")
        if self.errors:
            return None
        return Scenario(name=name, path=self.file, description=description,
                        nodes=tuple(nodes), links=tuple(links), steps=tuple(steps),
                        expectations=tuple(expectations), backend=backend)  # type: ignore[arg-type]

    # nodes ---------------------------------------------------------------------------
    def load_nodes(self, node: Node | None) -> list[ModelNode]:
        if node is None:
            return []
        if isinstance(node, MappingNode) and not node.value:
            self.err("nodes", node, "no nodes", "nodes: {h1: {kind: host}}")
            return []
        if not isinstance(node, MappingNode):
            self.err("nodes", node, f"expected a mapping of node names, got {_describe(node)}",
                     "nodes: {h1: {kind: host}}")
            return []
        out: list[ModelNode] = []
        for knode, vnode in node.value:
            if not isinstance(knode, ScalarNode) or knode.tag == _NULL:
                self.err("nodes", knode, f"a node name must be a word, got {_describe(knode)}",
                         "e.g. h1")
                continue
            name = knode.value
            path = f"nodes.{name}"
            if name in self.kinds:
                self.err(path, knode, f"duplicate node {name!r}", "node names are unique")
                continue
            valid = self.node_name(name, knode, path, known=False) is not None
            self.kinds[name] = None
            self.node_order.append(name)
            self.ifaces[name] = []
            if not isinstance(vnode, MappingNode):
                self.err(path, vnode, f"expected a mapping with `kind:`, got {_describe(vnode)}",
                         f"{name}: {{kind: host}}  (kinds: {', '.join(kind_names())})")
                continue
            items: dict[str, tuple[Node, Node]] = {}
            for k, v in vnode.value:
                if not isinstance(k, ScalarNode) or k.tag == _NULL:
                    self.err(path, k, f"a key must be a plain word, got {_describe(k)}",
                             "kind: and the kind's options")
                    continue
                if k.value in items:
                    self.err(f"{path}.{k.value}", k, f"duplicate key {k.value!r}",
                             f"already given on line {_line(items[k.value][0])}")
                    continue
                items[k.value] = (k, v)
            if "kind" not in items:
                self.err(path, vnode, "missing required key 'kind'",
                         f"kinds: {', '.join(kind_names())}")
                continue
            knode = items["kind"][1]
            kind = knode.value if isinstance(knode, ScalarNode) and knode.tag != _NULL else None
            if kind is None:
                self.err(f"{path}.kind", knode, f"expected a node kind, got {_describe(knode)}",
                         f"kinds: {', '.join(kind_names())}")
                continue
            spec = get_kind(kind)
            if spec is None:
                self.err(f"{path}.kind", items["kind"][1], f"unknown node kind {kind!r}",
                         did_you_mean(kind, kind_names()))
                continue
            self.kinds[name] = spec
            options = {k: _plain(v) for k, (_, v) in items.items() if k != "kind"}
            try:
                issues = list(spec.validate_options(options))
            except Exception as exc:  # a kind's validator must not crash the loader
                issues = [OptionIssue("", f"kind {kind!r} cannot check its options: {exc}", "")]
            self.option_issues(name, vnode, issues)
            if valid:
                out.append(ModelNode(name=name, kind=kind, options={**spec.defaults, **options}))
                if not issues:
                    self.checked[name] = (vnode, frozenset(options))
        return out

    def option_issues(self, name: str, vnode: MappingNode, issues: list[OptionIssue]) -> None:
        for issue in issues:
            where = _find(vnode, issue.key) or vnode
            path = f"nodes.{name}.{issue.key}" if issue.key else f"nodes.{name}"
            self.err(path, where, issue.message, issue.hint)

    def check_topology(self, nodes: list[ModelNode], links: list[Link]) -> None:
        """Each kind's ``validate_topology``, among the nodes whose options are valid."""
        kinds = {n.name: n.kind for n in nodes}
        ports: dict[str, dict[str, Port]] = {n.name: {} for n in nodes}
        for link in links:
            for ep, peer in ((link.a, link.b), (link.b, link.a)):
                if ep.node in ports and peer.node in kinds:
                    ports[ep.node][ep.iface] = Port(ep.iface, ep.mac, link.mtu, peer.node,
                                                    kinds[peer.node], peer.iface)
        views = {n.name: NodeView(n.name, n.kind, n.options, self.checked[n.name][1],
                                  ports[n.name]) for n in nodes if n.name in self.checked}
        for name, (vnode, _) in self.checked.items():
            spec = self.kinds[name]
            if spec is None or spec.validate_topology is None or name in self.unlinked:
                continue
            try:
                issues = list(spec.validate_topology(views[name], views))
            except Exception as exc:  # a kind's validator must not crash the loader
                issues = [OptionIssue("", f"kind {spec.name!r} cannot check its links: {exc}")]
            self.option_issues(name, vnode, issues)

    # links ---------------------------------------------------------------------------
    def load_links(self, node: Node | None) -> list[Link]:
        items = self.sequence(node, "links", "links")
        raw: list[tuple[str, Node, list[dict[str, Any]], int | None]] = []  # path, node, eps, mtu
        for i, item in enumerate(items):
            path = f"links[{i}]"
            eps: list[dict[str, Any]] = []
            mtu: int | None = None  # not given: the kinds' default, else 1500
            if isinstance(item, ScalarNode) and item.tag != _NULL:
                parts = item.value.split()
                if len(parts) != 2:
                    self.err(path, item, f"bad link {item.value!r}",
                             'brief form: "h1:eth0 s1:p1" (two endpoints, one space)')
                    continue
                for part in parts:
                    ep = self.endpoint_text(part, item, path)
                    eps.append({"ep": ep, "node": item, "path": path,
                                "name": part.split(":")[0]})
            elif isinstance(item, MappingNode):
                m = self.mapping(item, path, LINK_KEYS, required=("endpoints",))
                if m is None:
                    continue
                if "mtu" in m:
                    mtu = self.integer(m["mtu"][1], f"{path}.mtu", 68, 65535,
                                       "an MTU from 68 to 65535") or 1500
                if "endpoints" not in m:
                    continue
                enode = m["endpoints"][1]
                epath = f"{path}.endpoints"
                elist = self.sequence(enode, epath, "endpoints")
                if len(elist) != 2:
                    if isinstance(enode, SequenceNode) or (
                            isinstance(enode, ScalarNode) and enode.tag == _NULL):
                        self.err(epath, enode, f"a link has exactly 2 endpoints, got {len(elist)}",
                                 "endpoints: [h1:eth0, s1:p1]")
                    continue
                for j, e in enumerate(elist):
                    eps.append(self.load_endpoint(e, f"{epath}[{j}]"))
            else:
                self.err(path, item, f"expected a link, got {_describe(item)}",
                         'brief form "h1:eth0 s1:p1" or a mapping with endpoints:')
                continue
            raw.append((path, item, eps, mtu))

        # references, uniqueness, addresses
        given_macs: dict[str, str] = {}
        addrs: dict[str, str] = {}
        for path, item, eps, _ in raw:
            for ep in eps:
                if ep["ep"] is None:
                    continue
                node_name, iface = ep["ep"]
                epath, enode = ep["path"], ep["node"]
                full = f"{node_name}:{iface}"
                if node_name not in self.kinds:
                    self.node_name(node_name, ep.get("name_node", enode),
                                   ep.get("name_path", epath))
                    ep["bad"] = True
                    continue
                spec = self.kinds[node_name]
                if full in self.endpoints:
                    self.err(epath, enode, f"endpoint {full} is used by two links",
                             "each interface connects to one link; use another interface name")
                    ep["bad"] = True
                    continue
                self.endpoints.add(full)
                self.ifaces[node_name].append(iface)
                if spec is not None and iface in spec.reserved_ifaces:
                    self.err(epath, enode, f"interface name {iface!r} is reserved on a "
                             f"{spec.name}", "pick another name, e.g. eth1 or p3")
                if len(self.ifaces[node_name]) > 255:
                    self.err(epath, enode, f"node {node_name} has more than 255 interfaces",
                             "split it")
                mac = ep.get("mac")
                if mac is not None:
                    if mac in given_macs:
                        self.err(ep["mac_path"], ep["mac_node"], f"MAC {mac} is also "
                                 f"{given_macs[mac]}'s", "MACs are unique; leave it out to "
                                 "have one derived")
                    else:
                        given_macs[mac] = full
                ip = ep.get("ipv4")
                if ip is not None:
                    if spec is not None and not spec.ip_interfaces:
                        self.err(ep["ipv4_path"], ep["ipv4_node"], f"a {spec.name} interface "
                                 "has no IPv4 address", "addresses go on host interfaces")
                    addr = ip.split("/")[0]
                    if addr in addrs:
                        self.err(ep["ipv4_path"], ep["ipv4_node"],
                                 f"address {addr} is also {addrs[addr]}'s", "addresses are unique")
                    else:
                        addrs[addr] = full
            good = [ep for ep in eps if ep["ep"] is not None]
            if len(good) == 2 and good[0]["ep"][0] == good[1]["ep"][0]:
                self.err(path, item, f"link connects node {good[0]['ep'][0]} to itself",
                         "connect two different nodes")

        # derive MACs (order of appearance: node index in nodes:, interface index per node)
        used = set(given_macs)
        counters: dict[str, int] = {}
        links: list[Link] = []
        for lpath, litem, eps, mtu in raw:
            if mtu is None:
                mtu = self.default_mtu(eps)
            done: list[Endpoint] = []
            for ep in eps:
                if ep["ep"] is None:
                    continue
                node_name, iface = ep["ep"]
                if ep.get("bad"):
                    continue
                counters[node_name] = counters.get(node_name, 0) + 1
                mac = ep.get("mac")
                if mac is None:
                    mac = _derive_mac(self.node_order.index(node_name) + 1,
                                      counters[node_name], used)
                    used.add(mac)
                done.append(Endpoint(node=node_name, iface=iface, mac=mac, ipv4=ep.get("ipv4")))
            if len(eps) == 2 and all(ep["ep"] is not None for ep in eps):
                pair = frozenset(f"{n}:{i}" for n, i in (eps[0]["ep"], eps[1]["ep"]))
                lname = " ".join(f"{n}:{i}" for n, i in (eps[0]["ep"], eps[1]["ep"]))
                if len(pair) == 2:
                    self.links_by_pair.setdefault(pair, lname)
                    self.link_where.setdefault(lname, (lpath, _line(litem)))
                for ep in pair:
                    self.mtu[ep] = mtu
            if len(done) == 2:
                links.append(Link(a=done[0], b=done[1], mtu=mtu))
            else:  # its nodes miss a port: their options are not checked against the links
                self.unlinked.update(ep["name"] for ep in eps if ep.get("name"))
        return links

    def default_mtu(self, eps: list[dict[str, Any]]) -> int:
        """1500, or the kinds' own default when both ends' kinds set one (FCoE: 2500)."""
        wanted = [getattr(self.kinds.get(ep["ep"][0]), "link_mtu", None) if ep["ep"] else None
                  for ep in eps]
        return min(wanted) if len(wanted) == 2 and None not in wanted else 1500

    def load_endpoint(self, node: Node, path: str) -> dict[str, Any]:
        out: dict[str, Any] = {"ep": None, "node": node, "path": path}
        if isinstance(node, ScalarNode) and node.tag != _NULL:
            out["ep"] = self.endpoint_text(node.value, node, path)
            return out
        m = self.mapping(node, path, ENDPOINT_KEYS, required=("node", "interface"),
                         what="an endpoint mapping or \"node:interface\"")
        if m is None:
            return out
        name = iface = None
        if "node" in m:
            got = self.text(m["node"][1], f"{path}.node", "a node name")
            if got is not None:
                name = self.node_name(got, m["node"][1], f"{path}.node", known=False)
            out["name_node"], out["name_path"] = m["node"][1], f"{path}.node"
        if "interface" in m:
            got = self.text(m["interface"][1], f"{path}.interface", "an interface name")
            if got is not None and self.iface_name(got, m["interface"][1], f"{path}.interface"):
                iface = got
        out["name"] = name
        if name and iface:
            out["ep"] = (name, iface)
        if "mac" in m:
            out["mac_path"], out["mac_node"] = f"{path}.mac", m["mac"][1]
            out["mac"] = self.mac(m["mac"][1], f"{path}.mac")
        if "ipv4" in m:
            out["ipv4_path"], out["ipv4_node"] = f"{path}.ipv4", m["ipv4"][1]
            out["ipv4"] = self.ipv4_iface(m["ipv4"][1], f"{path}.ipv4")
        return out

    def check_loops(self, links: list[Link]) -> None:
        """Links among forwarding nodes (switches) must form a forest: there is no STP."""
        parent: dict[str, str] = {}

        def find(x: str) -> str:
            while parent.setdefault(x, x) != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for link in links:
            ka, kb = self.kinds.get(link.a.node), self.kinds.get(link.b.node)
            if not (ka and kb and ka.forwards and kb.forwards):
                continue
            ra, rb = find(link.a.node), find(link.b.node)
            if ra == rb:
                lpath, lline = self.link_where.get(link.name, ("links", None))
                self.err(lpath, lline, f"link {link.name} closes a loop between forwarding "
                         "nodes", "there is no STP: broadcasts would circle forever; remove a "
                         "link")
            else:
                parent[ra] = rb

    # steps ---------------------------------------------------------------------------
    def load_steps(self, node: Node | None) -> list[Step]:
        steps: list[Step] = []
        for i, item in enumerate(self.sequence(node, "steps", "steps")):
            step = self.load_step(item, f"steps[{i}]")
            if step is not None:
                steps.append(step)
        return steps

    def load_step(self, item: Node, path: str) -> Step | None:
        if not isinstance(item, MappingNode):
            self.err(path, item, f"expected a step, got {_describe(item)}",
                     "a mapping with one of: " + ", ".join(STEP_ACTIONS))
            return None
        m = self.mapping(item, path, STEP_ACTIONS + ("name",))
        assert m is not None
        actions = [k for k in m if k in STEP_ACTIONS]
        label = path
        if "name" in m:
            got = self.text(m["name"][1], f"{path}.name", "a step name")
            if got is not None:
                label = self.step_label(got, m["name"][1], f"{path}.name") or path
        if not actions:
            if m or not item.value:
                self.err(path, item, "a step needs an action",
                         "one of: " + ", ".join(STEP_ACTIONS))
            return None
        if len(actions) > 1:
            self.err(path, m[actions[1]][0], f"one action per step, got {', '.join(actions)}",
                     "split it into several steps")
            return None
        action = actions[0]
        knode, vnode = m[action]
        apath = f"{path}.{action}"
        line = _line(item) or 0
        base = {"where": apath, "line": line}
        if action == "check":
            cm = self.mapping(vnode, apath, CHECK_KEYS, required=("expect",))
            if cm is None:
                return None
            if "name" in cm:
                got = self.text(cm["name"][1], f"{apath}.name", "a check name")
                if got is not None:
                    if "name" in m and label != path and got != label:
                        self.err(f"{apath}.name", cm["name"][1], f"the step is already named "
                                 f"{label!r}", "give one name")
                    elif "name" not in m:
                        label = self.step_label(got, cm["name"][1], f"{apath}.name") or path
            if "expect" not in cm:
                return None
            enode = cm["expect"][1]
            exps = self.load_expectations(enode, f"{apath}.expect", label)
            if not exps and isinstance(enode, SequenceNode) and not enode.value:
                self.err(f"{apath}.expect", enode, "a check needs at least one expectation",
                         "- received: {node: h2, match: 'UDP()'}")
            return Check(**base, label=label, expectations=tuple(exps))
        step = self.load_action(action, vnode, apath, base, label)
        if isinstance(step, Exec):
            self.exec_steps[label] = step
        return step

    def step_label(self, text: str, node: Node, path: str) -> str | None:
        if not LABEL_RE.fullmatch(text) or len(text) > LABEL_MAX:
            self.err(path, node, f"bad step name {text!r}",
                     "letters, digits, '_', '.', '-' (no spaces), at most 64 characters")
            return None
        if text in self.labels:
            self.err(path, node, f"duplicate step name {text!r}",
                     f"already used on line {_line(self.labels[text])}")
            return None
        self.labels[text] = node
        return text

    def load_action(self, action: str, vnode: Node, apath: str, base: dict, label: str,
                    ) -> Step | None:
        if action == "send":
            m = self.mapping(vnode, apath, SEND_KEYS, required=("from", "packet"))
            if m is None:
                return None
            endpoint = self.endpoint_ref(m["from"][1], f"{apath}.from") if "from" in m else None
            packet = None
            if "packet" in m:
                got = self.packet_expr(m["packet"][1], f"{apath}.packet", pattern=False)
                if got is not None:
                    packet, pkt = got
                    self.check_frame(pkt, endpoint, m["packet"][1], f"{apath}.packet")
            count = 1
            if "count" in m:
                count = self.integer(m["count"][1], f"{apath}.count", 1, MAX_COUNT,
                                     f"how many copies: 1 to {MAX_COUNT}") or 1
            interval = 0.0
            if "interval" in m:
                interval = self.duration(m["interval"][1], f"{apath}.interval") or 0.0
            if endpoint is None or packet is None:
                return None
            return Send(**base, label=label, endpoint=endpoint, packet=packet, count=count,
                        interval=interval)
        if action == "exec":
            m = self.mapping(vnode, apath, EXEC_KEYS, required=("node", "cmd"))
            if m is None:
                return None
            node = None
            if "node" in m:
                got = self.text(m["node"][1], f"{apath}.node", "a node name")
                if got is not None:
                    node = self.node_name(got, m["node"][1], f"{apath}.node")
            argv = self.argv(m["cmd"][1], f"{apath}.cmd") if "cmd" in m else None
            timeout = 30.0
            if "timeout" in m:
                timeout = self.duration(m["timeout"][1], f"{apath}.timeout", positive=True) or 30.0
            background = False
            if "background" in m:
                background = bool(self.boolean(m["background"][1], f"{apath}.background"))
            if node is None or argv is None:
                return None
            return Exec(**base, label=label, node=node, argv=argv, timeout=timeout,
                        background=background)
        if action == "link":
            m = self.mapping(vnode, apath, LINKSTATE_KEYS, required=("link", "state"))
            if m is None:
                return None
            link = self.link_ref(m["link"][1], f"{apath}.link") if "link" in m else None
            up = None
            if "state" in m:
                got = self.text(m["state"][1], f"{apath}.state", "up or down")
                if got is not None and got not in ("up", "down"):
                    self.err(f"{apath}.state", m["state"][1], f"unknown link state {got!r}",
                             "up or down")
                elif got is not None:
                    up = got == "up"
            if link is None or up is None:
                return None
            return LinkState(**base, label=label, link=link, up=up)
        if action == "table":
            m = self.mapping(vnode, apath, TABLE_STEP_KEYS, required=("switch",))
            if m is None:
                return None
            switch = self.switch_ref(m["switch"][1], f"{apath}.switch") if "switch" in m else None
            ops = [k for k in ("add", "remove") if k in m]
            if len(ops) != 1:
                self.err(apath, vnode, "a table step needs exactly one of add:, remove:"
                         if not ops else "a table step takes add: or remove:, not both",
                         "table: {switch: s1, add: {vip: 10.0.0.100, port: p2}}")
                return None
            op = ops[0]
            entry = self.entry(m[op][1], f"{apath}.{op}", switch)
            if switch is None or entry is None:
                return None
            if switch in self.killed:
                self.err(apath, vnode, f"{switch}'s process is killed at this point "
                         f"({self.killed[switch]})", f"add `restart: {switch}` before this step")
            table = self.tables.setdefault(switch, [])
            if op == "add" and entry in table:
                self.err(f"{apath}.add", m[op][1], "the same entry is already in the table",
                         "an earlier step adds it; remove it first or change a field")
            elif op == "add":
                table.append(entry)
            elif entry not in table:
                self.err(f"{apath}.remove", m[op][1], "no earlier step adds this entry",
                         "tables start empty; the entry must match an added one key for key")
            else:
                table.remove(entry)
            return TableOp(**base, label=label, switch=switch, op=op, entry=entry)  # type: ignore
        if action in ("kill", "restart"):
            got = self.text(vnode, apath, "a node name")
            if got is None:
                return None
            node = self.node_name(got, vnode, apath)
            if node is None:
                return None
            spec = self.kinds.get(node)
            if spec is not None and not spec.has_process:
                with_proc = [n for n, k in self.kinds.items() if k and k.has_process]
                kinds = [k.name for k in all_kinds() if k.has_process]
                self.err(apath, vnode, f"{node} is a {spec.name}, which has no process to "
                         f"{action}", ("nodes with one: " + ", ".join(with_proc)) if with_proc
                         else "kinds with a process: " + ", ".join(kinds))
                return None
            if action == "kill":
                self.killed.setdefault(node, label)
            else:
                self.killed.pop(node, None)
            return NodeProcess(**base, label=label, node=node, action=action)  # type: ignore
        if action == "wait":
            seconds = self.duration(vnode, apath)
            if seconds is None:
                return None
            return Wait(**base, label=label, seconds=seconds)
        raise AssertionError(action)  # pragma: no cover

    def argv(self, node: Node, path: str) -> tuple[str, ...] | None:
        hint = "a list like [ping, -c, \"1\", 10.0.0.2] or one string split like a shell would"
        if isinstance(node, ScalarNode) and node.tag != _NULL:
            try:
                argv = shlex.split(node.value)
            except ValueError as exc:
                self.err(path, node, f"cannot split the command: {exc}", hint)
                return None
        elif isinstance(node, SequenceNode):
            argv = []
            for j, part in enumerate(node.value):
                got = self.text(part, f"{path}[{j}]", "a word")
                if got is None:
                    return None
                argv.append(got)
        else:
            self.err(path, node, f"expected a command, got {_describe(node)}", hint)
            return None
        if not argv or not argv[0]:
            self.err(path, node, "the command is empty", hint)
            return None
        if any("\0" in a for a in argv):
            self.err(path, node, "the command contains a NUL character", hint)
            return None
        return tuple(argv)

    def switch_ref(self, node: Node, path: str) -> str | None:
        got = self.text(node, path, "a switch name")
        if got is None:
            return None
        name = self.node_name(got, node, path)
        if name is None:
            return None
        spec = self.kinds.get(name)
        if spec is not None and not spec.has_table:
            tables = [n for n, k in self.kinds.items() if k and k.has_table]
            self.err(path, node, f"{name} is a {spec.name}, not a switch (only switches have a "
                     "forwarding table)", ("switches: " + ", ".join(tables)) if tables
                     else "add a node with kind: switch")
            return None
        return name

    def match(self, m: dict[str, tuple[Node, Node]], kpath: str) -> str | None:
        if "match" not in m:
            return None
        got = self.packet_expr(m["match"][1], f"{kpath}.match", pattern=True)
        return got[0] if got is not None else None

    def check_frame(self, pkt: Any, endpoint: str | None, node: Node, path: str) -> None:
        from scapy.layers.l2 import Dot3, Ether

        if not isinstance(pkt, Ether | Dot3):
            self.err(path, node, f"the frame starts with {type(pkt).__name__}, not Ether",
                     'frames go on Ethernet links: start with Ether(dst="...")/...')
            return
        data = bytes(pkt)
        mtu = self.mtu.get(endpoint or "", 1500)
        if len(data) > max_frame(data, mtu):
            self.err(path, node, f"the frame is {len(data)} bytes, more than the link MTU {mtu} "
                     f"+ {max_frame(data, mtu) - mtu} header bytes",
                     "make it smaller or raise the link's mtu:")

    def entry(self, node: Node, path: str, switch: str | None) -> ForwardingEntry | None:
        m = self.mapping(node, path, ENTRY_KEYS, required=("vip", "port"),
                         what="a forwarding entry")
        if m is None:
            return None
        vals: dict[str, Any] = {}
        ok = True

        def get(key: str, fn) -> None:
            nonlocal ok
            if key in m:
                value = fn(m[key][1], f"{path}.{key}")
                if value is None:
                    ok = False
                vals[key] = value

        get("vip", self.ipv4_addr)
        get("client_ip", self.ipv4_addr)
        get("dst_mac", lambda n, p: self.mac(n, p, unicast=False))
        get("client_port", lambda n, p: self.integer(n, p, 0, 65535, "a port from 0 to 65535"))
        get("vport", lambda n, p: self.integer(n, p, 0, 65535, "a port from 0 to 65535"))
        get("proto", self.proto)
        if "port" in m:
            pnode = m["port"][1]
            got = self.text(pnode, f"{path}.port", "a switch interface")
            if got is None:
                ok = False
            elif switch is not None and got not in self.ifaces.get(switch, []):
                have = self.ifaces.get(switch, [])
                self.err(f"{path}.port", pnode, f"{switch} has no port {got!r}",
                         did_you_mean(got, have) if have else f"{switch} has no links")
                ok = False
            vals["port"] = got
        proto = vals.get("proto")
        if proto is not None and proto not in PORT_PROTOCOLS:
            for key in ("client_port", "vport"):
                if key in m:
                    self.err(f"{path}.{key}", m[key][1], f"protocol {proto} has no ports",
                             "ports match with proto tcp or udp (or no proto)")
                    ok = False
        if not ok or "vip" not in m or "port" not in m:
            return None
        return ForwardingEntry(vip=vals["vip"], out_port=vals["port"],
                               client_ip=vals.get("client_ip"), proto=proto,
                               client_port=vals.get("client_port"), vport=vals.get("vport"),
                               dst_mac=vals.get("dst_mac"))

    def proto(self, node: Node, path: str) -> int | None:
        if isinstance(node, ScalarNode) and node.tag == _INT:
            return self.integer(node, path, 0, 255, "tcp, udp, icmp or an IP protocol number")
        got = self.text(node, path, "a protocol")
        if got is None:
            return None
        if got.lower() in PROTOCOLS:
            return PROTOCOLS[got.lower()]
        self.err(path, node, f"unknown protocol {got!r}",
                 did_you_mean(got.lower(), tuple(PROTOCOLS)) + " (or a number 0..255)")
        return None

    # expectations ----------------------------------------------------------------------
    def load_expectations(self, node: Node | None, path: str, check: str | None,
                          ) -> list[Expectation]:
        out: list[Expectation] = []
        for i, item in enumerate(self.sequence(node, path, "expectations")):
            exp = self.load_expectation(item, f"{path}[{i}]", check)
            if exp is not None:
                out.append(exp)
        return out

    def load_expectation(self, item: Node, path: str, check: str | None) -> Expectation | None:
        if not isinstance(item, MappingNode):
            self.err(path, item, f"expected an expectation, got {_describe(item)}",
                     "a mapping with one of: " + ", ".join(EXPECT_KINDS))
            return None
        m = self.mapping(item, path, EXPECT_KINDS)
        assert m is not None
        if len(m) != 1:
            if m or not item.value:
                self.err(path, item, "an expectation needs exactly one of: "
                         + ", ".join(EXPECT_KINDS), "split it into several items")
            return None
        (kind, (_, vnode)), = m.items()
        kpath = f"{path}.{kind}"
        base = {"where": kpath, "line": _line(item) or 0}
        if kind == "received":
            m = self.mapping(vnode, kpath, RECEIVED_KEYS, required=("node", "match"))
            if m is None:
                return None
            node = None
            if "node" in m:
                got = self.text(m["node"][1], f"{kpath}.node", "a node name")
                if got is not None:
                    node = self.node_name(got, m["node"][1], f"{kpath}.node")
            match = self.match(m, kpath)
            iface = None
            if "iface" in m:
                iface = self.text(m["iface"][1], f"{kpath}.iface", "an interface name")
                if iface is not None and node is not None and iface not in self.ifaces[node]:
                    have = self.ifaces[node]
                    self.err(f"{kpath}.iface", m["iface"][1], f"{node} has no interface "
                             f"{iface!r}", did_you_mean(iface, have) if have else
                             f"{node} has no links")
                    iface = None
                    node = None
            counts: dict[str, int | None] = {}
            for key in ("count", "min", "max"):
                if key in m:
                    counts[key] = self.integer(m[key][1], f"{kpath}.{key}", 0, MAX_COUNT,
                                               f"a number of frames, 0 to {MAX_COUNT}")
            if "count" in counts and ("min" in counts or "max" in counts):
                self.err(f"{kpath}.count", m["count"][1], "count is exact; it does not go with "
                         "min/max", "use count: N, or min:/max:")
                return None
            lo, hi = counts.get("min"), counts.get("max")
            if lo is not None and hi is not None and lo > hi:
                self.err(f"{kpath}.min", m["min"][1], f"min {lo} is more than max {hi}",
                         "swap them")
                return None
            if "count" not in counts and "min" not in counts:
                counts["min"] = 0 if "max" in counts else 1  # bare `received:` means "some"
            if node is None or match is None or any(
                    v is None for k, v in counts.items() if k in m):
                return None
            return Received(**base, node=node, match=match, iface=iface,
                            count=counts.get("count"), min=counts.get("min"),
                            max=counts.get("max"))
        if kind == "absent":
            m = self.mapping(vnode, kpath, ABSENT_KEYS, required=("link", "match"))
            if m is None:
                return None
            link = self.link_ref(m["link"][1], f"{kpath}.link") if "link" in m else None
            match = self.match(m, kpath)
            if link is None or match is None:
                return None
            return Absent(**base, link=link, match=match)
        if kind == "command":
            m = self.mapping(vnode, kpath, COMMAND_KEYS, required=("step",))
            if m is None:
                return None
            step = None
            if "step" in m:
                snode = m["step"][1]
                got = self.text(snode, f"{kpath}.step", "an exec step name")
                ex = self.exec_steps.get(got or "")
                if got is None:
                    pass
                elif ex is None:
                    have = sorted(self.exec_steps)
                    why = "no earlier exec step" if check is not None else "no exec step"
                    self.err(f"{kpath}.step", snode, f"{why} is named {got!r}",
                             did_you_mean(got, have) if have else
                             "name the exec step with `name:` and refer to it here")
                elif ex.background:
                    self.err(f"{kpath}.step", snode, f"step {got!r} runs in the background; "
                             "it has no result to check", "drop `background: true`")
                else:
                    step = got
            status: int | None = 0
            if "status" in m:
                snode = m["status"][1]
                if isinstance(snode, ScalarNode) and snode.tag == _NULL:
                    status = None
                else:
                    status = self.integer(snode, f"{kpath}.status", 0, 255,
                                          "an exit status 0..255, or null for any")
                    if status is None:
                        return None
            contains = None
            if "contains" in m:
                contains = self.text(m["contains"][1], f"{kpath}.contains", "text")
                if contains is None:
                    return None
            if step is None:
                return None
            return CommandResult(**base, step=step, status=status, contains=contains)
        if kind == "table":
            m = self.mapping(vnode, kpath, TABLE_EXPECT_KEYS, required=("switch",))
            if m is None:
                return None
            switch = self.switch_ref(m["switch"][1], f"{kpath}.switch") if "switch" in m else None
            ops = [k for k in ("has", "lacks") if k in m]
            if len(ops) != 1:
                self.err(kpath, vnode, "a table expectation needs exactly one of has:, lacks:",
                         "table: {switch: s1, has: {vip: 10.0.0.100, port: p2}}")
                return None
            entry = self.entry(m[ops[0]][1], f"{kpath}.{ops[0]}", switch)
            if switch is None or entry is None:
                return None
            return TableHas(**base, switch=switch, entry=entry, present=ops[0] == "has")
        raise AssertionError(kind)  # pragma: no cover


# ---- helpers ------------------------------------------------------------------------------

@functools.lru_cache(maxsize=512)
def _parse_expr(text: str, pattern: bool) -> tuple[bool, Any]:
    """(True, packet or pattern) or (False, (message, hint)); cached: files repeat expressions."""
    from ftsslab.expr import ExprError, parse_packet, parse_pattern

    try:
        return True, (parse_pattern(text) if pattern else parse_packet(text))
    except ExprError as exc:
        return False, _split_hint(str(exc))
    except Exception as exc:  # anything else Scapy or ast may raise on odd input
        return False, (f"cannot parse: {type(exc).__name__}: {exc}"[:200],
                       "see docs/scenarios.md (packets and patterns)")


def _split_hint(message: str) -> tuple[str, str]:
    """Move ftsslab.expr's "(see `ftsslab layers`)" into the hint."""
    m = re.search(r"\s*\((see [^)]*)\)", message)
    if not m:
        return message, ""
    return (message[: m.start()] + message[m.end():]).strip(), m.group(1)


def _derive_mac(node_index: int, iface_index: int, used: set[str]) -> str:
    """02:00:<node index, 2 bytes>:<interface index>:<n>, n the first free value from 0."""
    hi, lo = (node_index >> 8) & 0xFF, node_index & 0xFF
    for last in range(256):
        mac = f"02:00:{hi:02x}:{lo:02x}:{iface_index & 0xFF:02x}:{last:02x}"
        if mac not in used:
            return mac
    # every variant taken by given MACs: walk the locally administered space
    n = 0
    while True:  # pragma: no cover - needs 256 clashing given MACs
        mac = "02:01:" + ":".join(f"{(n >> s) & 0xFF:02x}" for s in (24, 16, 8, 0))
        if mac not in used:
            return mac
        n += 1


def _plain(node: Node) -> Any:
    """A node as plain Python (for kind options); tags were refused before composing."""
    if isinstance(node, MappingNode):
        return {(k.value if isinstance(k, ScalarNode) else repr(_plain(k))): _plain(v)
                for k, v in node.value}
    if isinstance(node, SequenceNode):
        return [_plain(v) for v in node.value]
    try:
        if node.tag == _INT:
            return _SC.construct_yaml_int(node)
        if node.tag == _FLOAT:
            return _SC.construct_yaml_float(node)
        if node.tag == _BOOL:
            return _SC.construct_yaml_bool(node)
        if node.tag == _NULL:
            return None
    except (ValueError, TypeError):
        pass
    return node.value


def _find(node: Node, key: str) -> Node | None:
    """The node at ``key`` ("a.b[2]") below ``node``, as deep as it goes."""
    found = None
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", key):
        if part.startswith("[") and isinstance(node, SequenceNode):
            idx = int(part[1:-1])
            if idx >= len(node.value):
                break
            node = node.value[idx]
        elif isinstance(node, MappingNode):
            nxt = next(((k, v) for k, v in node.value
                        if isinstance(k, ScalarNode) and k.value == part), None)
            if nxt is None:
                break
            found = nxt[0]
            node = nxt[1]
            continue
        else:
            break
        found = node
    return found
