"""``steps:``: one loader per action key (``STEP_LOADERS``), run in file order.

The loader follows what the steps do (exec labels, killed processes, each switch's
table) so later steps and expectations are checked against the state at their point.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..fetch import parse_urls
from ..kinds import OptionIssue
from ..kinds import kinds as all_kinds
from ..model import (
    NO_IMPAIRMENTS,
    Check,
    Exec,
    Fetch,
    ForwardingEntry,
    Handoff,
    LinkState,
    NodeProcess,
    Send,
    SetHealth,
    SetImpairment,
    Step,
    TableOp,
    Verb,
    Wait,
)
from .context import Context
from .entries import entry
from .errors import line
from .expectations import load_expectations
from .impair import check_impairable, load_impairments
from .packets import check_frame, packet_expr
from .refs import endpoint_ref, link_ref, node_ref, switch_ref
from .safe_yaml import NULL, describe, find, plain
from .values import MAX_COUNT, Items, boolean, duration, integer, mapping, sequence, text

LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
LABEL_MAX = 64
SEND_KEYS = ("from", "packet", "count", "interval")
EXEC_KEYS = ("node", "cmd", "timeout", "background")
LINKSTATE_KEYS = ("link", "state")
TABLE_STEP_KEYS = ("switch", "add", "remove")
CHECK_KEYS = ("name", "expect")
WAIT_KEYS = ("until", "timeout")
IMPAIR_STEP_KEYS = ("link", "set", "clear")
HANDOFF_KEYS = ("from", "to", "client_port", "type")
HANDOFF_TYPES = ("full", "half-client", "half-cluster")
HEALTH_KEYS = ("node", "set")
HEALTH_STATES = ("ok", "degraded", "predicted-fail")
FETCH_KEYS = ("node", "url", "timeout", "background", "pipeline")
_URL_HINT = 'url: "http://10.0.0.100/a.bin", or a list of such URLs (one server)'
_ARGV_HINT = "a list like [ping, -c, \"1\", 10.0.0.2] or one string split like a shell would"


@dataclass(frozen=True)
class StepAt:
    """Where a step's action is written, and the step's label."""

    step: str        # "steps[3]": the label of a step without a valid `name:`
    where: str       # "steps[3].send"
    line: int
    label: str
    named: bool      # the step has its own `name:`

    def fields(self) -> dict[str, Any]:
        return {"where": self.where, "line": self.line, "label": self.label}


def load_steps(ctx: Context, node: Node | None) -> list[Step]:
    steps: list[Step] = []
    for i, item in enumerate(sequence(ctx, node, "steps", "steps")):
        step = load_step(ctx, item, f"steps[{i}]")
        if step is not None:
            steps.append(step)
    return steps


def load_step(ctx: Context, item: Node, path: str) -> Step | None:
    """A mapping with one action key (see ``STEP_LOADERS``) and an optional ``name``."""
    if not isinstance(item, MappingNode):
        ctx.err(path, item, f"expected a step, got {describe(item)}",
                "a mapping with one of: " + ", ".join(STEP_ACTIONS))
        return None
    m = mapping(ctx, item, path, STEP_ACTIONS + ("name",))
    assert m is not None
    actions = [k for k in m if k in STEP_ACTIONS]
    label = _label(ctx, m, path)
    if not actions:
        if m or not item.value:
            ctx.err(path, item, "a step needs an action", "one of: " + ", ".join(STEP_ACTIONS))
        return None
    if len(actions) > 1:
        ctx.err(path, m[actions[1]][0], f"one action per step, got {', '.join(actions)}",
                "split it into several steps")
        return None
    action = actions[0]
    at = StepAt(path, f"{path}.{action}", line(item) or 0, label, "name" in m)
    step = STEP_LOADERS[action](ctx, m[action][1], at)
    if isinstance(step, Exec | Fetch):
        ctx.exec_steps[label] = step
    return step


def _label(ctx: Context, m: Items, path: str) -> str:
    if "name" not in m:
        return path
    got = text(ctx, m["name"][1], f"{path}.name", "a step name")
    if got is None:
        return path
    return step_label(ctx, got, m["name"][1], f"{path}.name") or path


def step_label(ctx: Context, name: str, node: Node, path: str) -> str | None:
    """A step's name: well formed and unique."""
    if not LABEL_RE.fullmatch(name) or len(name) > LABEL_MAX:
        ctx.err(path, node, f"bad step name {name!r}",
                "letters, digits, '_', '.', '-' (no spaces), at most 64 characters")
        return None
    if name in ctx.labels:
        ctx.err(path, node, f"duplicate step name {name!r}",
                f"already used on line {line(ctx.labels[name])}")
        return None
    ctx.labels[name] = node
    return name


def load_send(ctx: Context, vnode: Node, at: StepAt) -> Send | None:
    m = mapping(ctx, vnode, at.where, SEND_KEYS, required=("from", "packet"))
    if m is None:
        return None
    endpoint = endpoint_ref(ctx, m["from"][1], f"{at.where}.from") if "from" in m else None
    packet = None
    if "packet" in m:
        got = packet_expr(ctx, m["packet"][1], f"{at.where}.packet", pattern=False)
        if got is not None:
            packet, pkt = got
            check_frame(ctx, pkt, endpoint, m["packet"][1], f"{at.where}.packet")
    count = 1
    if "count" in m:
        count = integer(ctx, m["count"][1], f"{at.where}.count", 1, MAX_COUNT,
                        f"how many copies: 1 to {MAX_COUNT}") or 1
    interval = 0.0
    if "interval" in m:
        interval = duration(ctx, m["interval"][1], f"{at.where}.interval") or 0.0
    if endpoint is None or packet is None:
        return None
    return Send(**at.fields(), endpoint=endpoint, packet=packet, count=count, interval=interval)


def load_exec(ctx: Context, vnode: Node, at: StepAt) -> Exec | None:
    m = mapping(ctx, vnode, at.where, EXEC_KEYS, required=("node", "cmd"))
    if m is None:
        return None
    node = _node(ctx, m, at)
    argv = load_argv(ctx, m["cmd"][1], f"{at.where}.cmd") if "cmd" in m else None
    timeout, background = _run_options(ctx, m, at)
    if node is None or argv is None:
        return None
    return Exec(**at.fields(), node=node, argv=argv, timeout=timeout, background=background)


def _node(ctx: Context, m: dict, at: StepAt) -> str | None:
    """The step's ``node``, a node of the scenario (None, with the error, when it is not)."""
    if "node" not in m:
        return None
    got = text(ctx, m["node"][1], f"{at.where}.node", "a node name")
    return None if got is None else node_ref(ctx, got, m["node"][1], f"{at.where}.node")


def _run_options(ctx: Context, m: dict, at: StepAt) -> tuple[float, bool]:
    """``timeout`` (default 30 s) and ``background`` of a step that runs something."""
    timeout = 30.0
    if "timeout" in m:
        timeout = duration(ctx, m["timeout"][1], f"{at.where}.timeout", positive=True) or 30.0
    background = False
    if "background" in m:
        background = bool(boolean(ctx, m["background"][1], f"{at.where}.background"))
    return timeout, background


def load_fetch(ctx: Context, vnode: Node, at: StepAt) -> Fetch | None:
    """HTTP GETs from a host over one connection; its result is checked like an exec's."""
    m = mapping(ctx, vnode, at.where, FETCH_KEYS, required=("node", "url"))
    if m is None:
        return None
    node = _node(ctx, m, at)
    spec = ctx.kinds.get(node) if node is not None else None
    if spec is not None and not spec.ip_interfaces:
        ctx.err(f"{at.where}.node", m["node"][1], f"{node} is a {spec.name}, which has no "
                "address to fetch from", "fetch from a host")
        node = None
    urls = _urls(ctx, m["url"][1], f"{at.where}.url") if "url" in m else None
    timeout, background = _run_options(ctx, m, at)
    pipeline = "pipeline" in m and bool(boolean(ctx, m["pipeline"][1], f"{at.where}.pipeline"))
    if node is None or urls is None:
        return None
    return Fetch(**at.fields(), node=node, urls=urls, timeout=timeout, background=background,
                 pipeline=pipeline)


def _urls(ctx: Context, node: Node, path: str) -> tuple[str, ...] | None:
    items = node.value if isinstance(node, SequenceNode) else [node]
    urls = []
    for j, item in enumerate(items):
        got = text(ctx, item, f"{path}[{j}]" if isinstance(node, SequenceNode) else path,
                   "a URL")
        if got is None:
            return None
        urls.append(got)
    try:
        parse_urls(tuple(urls))
    except ValueError as exc:
        ctx.err(path, node, str(exc), _URL_HINT)
        return None
    return tuple(urls)


def load_argv(ctx: Context, node: Node, path: str) -> tuple[str, ...] | None:
    """A command: a list of words, or one string split like a shell would (none runs it)."""
    argv = _words(ctx, node, path)
    if argv is None:
        return None
    if not argv or not argv[0]:
        ctx.err(path, node, "the command is empty", _ARGV_HINT)
        return None
    if any("\0" in a for a in argv):
        ctx.err(path, node, "the command contains a NUL character", _ARGV_HINT)
        return None
    return tuple(argv)


def _words(ctx: Context, node: Node, path: str) -> list[str] | None:
    if isinstance(node, ScalarNode) and node.tag != NULL:
        try:
            return shlex.split(node.value)
        except ValueError as exc:
            ctx.err(path, node, f"cannot split the command: {exc}", _ARGV_HINT)
            return None
    if not isinstance(node, SequenceNode):
        ctx.err(path, node, f"expected a command, got {describe(node)}", _ARGV_HINT)
        return None
    words = []
    for j, part in enumerate(node.value):
        got = text(ctx, part, f"{path}[{j}]", "a word")
        if got is None:
            return None
        words.append(got)
    return words


def load_link(ctx: Context, vnode: Node, at: StepAt) -> LinkState | None:
    m = mapping(ctx, vnode, at.where, LINKSTATE_KEYS, required=("link", "state"))
    if m is None:
        return None
    link = link_ref(ctx, m["link"][1], f"{at.where}.link") if "link" in m else None
    up = None
    if "state" in m:
        got = text(ctx, m["state"][1], f"{at.where}.state", "up or down")
        if got is not None and got not in ("up", "down"):
            ctx.err(f"{at.where}.state", m["state"][1], f"unknown link state {got!r}",
                    "up or down")
        elif got is not None:
            up = got == "up"
    if link is None or up is None:
        return None
    return LinkState(**at.fields(), link=link, up=up)


def load_table(ctx: Context, vnode: Node, at: StepAt) -> TableOp | None:
    """Add or remove an entry, following the switch's table along the steps."""
    m = mapping(ctx, vnode, at.where, TABLE_STEP_KEYS, required=("switch",))
    if m is None:
        return None
    switch = switch_ref(ctx, m["switch"][1], f"{at.where}.switch") if "switch" in m else None
    ops = [k for k in ("add", "remove") if k in m]
    if len(ops) != 1:
        ctx.err(at.where, vnode, "a table step needs exactly one of add:, remove:"
                if not ops else "a table step takes add: or remove:, not both",
                "table: {switch: s1, add: {vip: 10.0.0.100, port: p2}}")
        return None
    op = ops[0]
    got = entry(ctx, m[op][1], f"{at.where}.{op}", switch)
    if switch is None or got is None:
        return None
    if switch in ctx.killed:
        ctx.err(at.where, vnode, f"{switch}'s process is killed at this point "
                f"({ctx.killed[switch]})", f"add `restart: {switch}` before this step")
    _apply(ctx, ctx.tables.setdefault(switch, []), op, got, m[op][1], f"{at.where}.{op}")
    return TableOp(**at.fields(), switch=switch, op=op, entry=got)  # type: ignore[arg-type]


def _apply(ctx: Context, table: list[ForwardingEntry], op: str, got: ForwardingEntry,
           node: Node, path: str) -> None:
    """Add or remove ``got``: an entry already there, or one never added, is an error."""
    if op == "add" and got in table:
        ctx.err(path, node, "the same entry is already in the table",
                "an earlier step adds it; remove it first or change a field")
    elif op == "add":
        table.append(got)
    elif got not in table:
        ctx.err(path, node, "no earlier step adds this entry",
                "tables start empty; the entry must match an added one key for key")
    else:
        table.remove(got)


def load_impair(ctx: Context, vnode: Node, at: StepAt) -> SetImpairment | None:
    """The link's impairments from here on: ``set`` replaces them all, ``clear: true`` ends them."""
    m = mapping(ctx, vnode, at.where, IMPAIR_STEP_KEYS, required=("link",))
    if m is None:
        return None
    link = link_ref(ctx, m["link"][1], f"{at.where}.link") if "link" in m else None
    ops = [k for k in ("set", "clear") if k in m]
    if len(ops) != 1:
        ctx.err(at.where, vnode, "an impair step needs exactly one of set:, clear:" if not ops
                else "an impair step takes set: or clear:, not both",
                'impair: {link: "h1:eth0 s1:p1", set: {loss: 5%}} or {link: ..., clear: true}')
        return None
    ends = (link.split()[0], link.split()[1]) if link else None
    impair = None
    if "set" in m:
        impair = load_impairments(ctx, m["set"][1], f"{at.where}.set", ends)
    elif (clear := boolean(ctx, m["clear"][1], f"{at.where}.clear")) is not None:
        if not clear:
            ctx.err(f"{at.where}.clear", m["clear"][1], "clear: false changes nothing",
                    "clear: true, or set: {...}")
        impair = NO_IMPAIRMENTS
    if link is None or impair is None or not check_impairable(ctx, ends, vnode, at.where):
        return None
    return SetImpairment(**at.fields(), link=link, impair=impair)


def load_kill(ctx: Context, vnode: Node, at: StepAt) -> NodeProcess | None:
    node = _process_node(ctx, vnode, at.where, "kill")
    if node is None:
        return None
    ctx.killed.setdefault(node, at.label)
    return NodeProcess(**at.fields(), node=node, action="kill")


def load_restart(ctx: Context, vnode: Node, at: StepAt) -> NodeProcess | None:
    node = _process_node(ctx, vnode, at.where, "restart")
    if node is None:
        return None
    ctx.killed.pop(node, None)
    return NodeProcess(**at.fields(), node=node, action="restart")


def _process_node(ctx: Context, vnode: Node, path: str, action: str) -> str | None:
    """A node whose kind has a process to kill or restart."""
    got = text(ctx, vnode, path, "a node name")
    if got is None:
        return None
    node = node_ref(ctx, got, vnode, path)
    if node is None:
        return None
    spec = ctx.kinds.get(node)
    if spec is not None and not spec.has_process:
        with_proc = [n for n, k in ctx.kinds.items() if k and k.has_process]
        kinds = [k.name for k in all_kinds() if k.has_process]
        ctx.err(path, vnode, f"{node} is a {spec.name}, which has no process to {action}",
                ("nodes with one: " + ", ".join(with_proc)) if with_proc
                else "kinds with a process: " + ", ".join(kinds))
        return None
    return node


def load_handoff(ctx: Context, vnode: Node, at: StepAt) -> Handoff | None:
    """Move a live connection from one node to another of a kind that hands off."""
    hint = "handoff: {from: d1, to: d2}"
    m = mapping(ctx, vnode, at.where, HANDOFF_KEYS, required=("from", "to"))
    if m is None:
        return None
    ends = {}
    for key in ("from", "to"):
        if key not in m:
            continue
        got = text(ctx, m[key][1], f"{at.where}.{key}", "a node name")
        node = node_ref(ctx, got, m[key][1], f"{at.where}.{key}") if got is not None else None
        spec = ctx.kinds.get(node) if node is not None else None
        if node is not None and spec is not None and not spec.hands_off:
            ctx.err(f"{at.where}.{key}", m[key][1], f"{node} is a {spec.name}, which does not "
                    "hand connections off", hint)
            node = None
        ends[key] = node
    port = None
    if "client_port" in m:
        port = integer(ctx, m["client_port"][1], f"{at.where}.client_port", 1, 65535,
                       "the client's TCP port, 1..65535")
    htype = "full"
    if "type" in m:
        htype = text(ctx, m["type"][1], f"{at.where}.type", "a handoff type")
        if htype is not None and htype not in HANDOFF_TYPES:
            ctx.err(f"{at.where}.type", m["type"][1], f"not a handoff type: {htype!r}",
                    "type: " + " | ".join(HANDOFF_TYPES))
            htype = None
        if htype is None:
            return None
    src, dst = ends.get("from"), ends.get("to")
    if src is None or dst is None:
        return None
    if src == dst:
        ctx.err(f"{at.where}.to", m["to"][1], f"{src} cannot hand off to itself", hint)
        return None
    if src in ctx.killed:  # (a killed `to` is a test of the failure path: allowed)
        ctx.err(at.where, vnode, f"{src}'s process is killed at this point "
                f"({ctx.killed[src]})", f"add `restart: {src}` before this step")
    return Handoff(**at.fields(), node=src, to=dst, client_port=port, type=htype)


def load_health(ctx: Context, vnode: Node, at: StepAt) -> SetHealth | None:
    """What a device reports of itself from now on (claim 34, D2.18)."""
    hint = "health: {node: d1, set: predicted-fail}"
    m = mapping(ctx, vnode, at.where, HEALTH_KEYS, required=("node", "set"))
    if m is None or "node" not in m or "set" not in m:
        return None
    got = text(ctx, m["node"][1], f"{at.where}.node", "a node name")
    node = node_ref(ctx, got, m["node"][1], f"{at.where}.node") if got is not None else None
    spec = ctx.kinds.get(node) if node is not None else None
    if node is not None and spec is not None and not spec.hands_off:
        ctx.err(f"{at.where}.node", m["node"][1], f"{node} is a {spec.name}, which reports no "
                "health", hint)
        node = None
    state = text(ctx, m["set"][1], f"{at.where}.set", "a health state")
    if state is not None and state not in HEALTH_STATES:
        ctx.err(f"{at.where}.set", m["set"][1], f"{state!r} is not a health state",
                "one of: " + ", ".join(HEALTH_STATES))
        state = None
    if node is None or state is None:
        return None
    return SetHealth(**at.fields(), node=node, health=state)


def load_verb(ctx: Context, vnode: Node, at: StepAt) -> Verb | None:
    """A call by an application on a node whose kind takes verbs (``KindSpec.verbs``)."""
    hint = "verb: {node: b, op: bind_rkey, process: p1, key: k1, address: 0x10000000, ...}"
    if not isinstance(vnode, MappingNode):
        ctx.err(at.where, vnode, f"expected a mapping, got {describe(vnode)}", hint)
        return None
    args = plain(vnode)
    got = args.pop("node", None)
    if not isinstance(got, str) or "op" not in args:
        ctx.err(at.where, vnode, "a verb needs its `node` and `op`", hint)
        return None
    node = node_ref(ctx, got, find(vnode, "node") or vnode, f"{at.where}.node")
    spec = ctx.kinds.get(node) if node is not None else None
    if node is None or spec is None:
        return None
    if spec.verbs is None:
        takes = [k.name for k in all_kinds() if k.verbs is not None]
        ctx.err(f"{at.where}.node", find(vnode, "node") or vnode,
                f"{node} is a {spec.name}, which takes no verbs",
                "kinds that do: " + ", ".join(takes))
        return None
    options = ctx.options.get(node)
    if options is None:  # its options are wrong: their errors say so
        return None
    try:
        issues = spec.verbs(args, options, ctx.options)
    except Exception as exc:  # a kind's validator must not crash the loader
        issues = [OptionIssue("", f"kind {spec.name!r} cannot check this verb: {exc}")]
    for issue in issues:
        ctx.err(f"{at.where}.{issue.key}".rstrip("."), find(vnode, issue.key) or vnode,
                issue.message, issue.hint)
    if node in ctx.killed:
        ctx.err(at.where, vnode, f"{node}'s process is killed at this point "
                f"({ctx.killed[node]})", f"add `restart: {node}` before this step")
    return None if issues else Verb(**at.fields(), node=node, args=args)


def load_wait(ctx: Context, vnode: Node, at: StepAt) -> Wait | None:
    """``wait: 0.2``, or ``wait: {until: [expectations], timeout: 30}``: until they hold."""
    if not isinstance(vnode, MappingNode):
        seconds = duration(ctx, vnode, at.where)
        return None if seconds is None else Wait(**at.fields(), seconds=seconds)
    m = mapping(ctx, vnode, at.where, WAIT_KEYS, required=WAIT_KEYS)
    if m is None or "until" not in m or "timeout" not in m:
        return None
    seconds = duration(ctx, m["timeout"][1], f"{at.where}.timeout", positive=True)
    unode = m["until"][1]
    until = load_expectations(ctx, unode, f"{at.where}.until", at.label)
    if not until:
        if isinstance(unode, SequenceNode) and not unode.value:
            ctx.err(f"{at.where}.until", unode, "nothing to wait for",
                    "until: [{logged: {node: s1, event: table, with: {why: closed}, count: 2}}]")
        return None
    return None if seconds is None else Wait(**at.fields(), seconds=seconds, until=tuple(until))


def load_check(ctx: Context, vnode: Node, at: StepAt) -> Check | None:
    """Expectations at this point of the timeline; the check may name the step."""
    cm = mapping(ctx, vnode, at.where, CHECK_KEYS, required=("expect",))
    if cm is None:
        return None
    label = at.label
    if "name" in cm:
        label = _check_label(ctx, cm["name"][1], at)
    if "expect" not in cm:
        return None
    enode = cm["expect"][1]
    exps = load_expectations(ctx, enode, f"{at.where}.expect", label)
    if not exps and isinstance(enode, SequenceNode) and not enode.value:
        ctx.err(f"{at.where}.expect", enode, "a check needs at least one expectation",
                "- received: {node: h2, match: 'UDP()'}")
    return Check(where=at.where, line=at.line, label=label, expectations=tuple(exps))


def _check_label(ctx: Context, node: Node, at: StepAt) -> str:
    """The check's `name:` labels the step, unless the step has a (different) name."""
    path = f"{at.where}.name"
    got = text(ctx, node, path, "a check name")
    if got is None:
        return at.label
    if at.named and at.label != at.step and got != at.label:
        ctx.err(path, node, f"the step is already named {at.label!r}", "give one name")
    elif not at.named:
        return step_label(ctx, got, node, path) or at.step
    return at.label


StepLoader = Callable[[Context, Node, StepAt], Step | None]
STEP_LOADERS: dict[str, StepLoader] = {
    "send": load_send, "exec": load_exec, "link": load_link, "table": load_table,
    "kill": load_kill, "restart": load_restart, "wait": load_wait, "check": load_check,
    "impair": load_impair, "handoff": load_handoff, "fetch": load_fetch, "health": load_health,
    "verb": load_verb,
}
STEP_ACTIONS = tuple(STEP_LOADERS)
