"""Expectations (top-level ``expect:`` and ``check`` steps): one loader per key."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode

from ..kinds import did_you_mean
from ..model import Absent, CommandResult, Exec, Expectation, Logged, Received, TableHas
from .context import Context
from .entries import entry
from .errors import line
from .packets import match
from .refs import link_ref, node_ref, switch_ref
from .safe_yaml import NULL, describe, plain
from .values import MAX_COUNT, Items, integer, mapping, sequence, text

RECEIVED_KEYS = ("node", "match", "iface", "count", "min", "max")
ABSENT_KEYS = ("link", "match")
COMMAND_KEYS = ("step", "status", "contains")
TABLE_EXPECT_KEYS = ("switch", "has", "lacks")
LOGGED_KEYS = ("node", "event", "with", "count", "min", "max")


@dataclass(frozen=True)
class ExpectAt:
    """Where an expectation is written, and the label of its ``check`` step (None: the end)."""

    where: str       # "expect[2].received"
    line: int
    check: str | None

    def fields(self) -> dict[str, Any]:
        return {"where": self.where, "line": self.line}


def load_expectations(ctx: Context, node: Node | None, path: str, check: str | None,
                      ) -> list[Expectation]:
    out: list[Expectation] = []
    for i, item in enumerate(sequence(ctx, node, path, "expectations")):
        exp = load_expectation(ctx, item, f"{path}[{i}]", check)
        if exp is not None:
            out.append(exp)
    return out


def load_expectation(ctx: Context, item: Node, path: str, check: str | None,
                     ) -> Expectation | None:
    """A mapping with exactly one key of ``EXPECTATION_LOADERS``."""
    if not isinstance(item, MappingNode):
        ctx.err(path, item, f"expected an expectation, got {describe(item)}",
                "a mapping with one of: " + ", ".join(EXPECT_KINDS))
        return None
    m = mapping(ctx, item, path, EXPECT_KINDS)
    assert m is not None
    if len(m) != 1:
        if m or not item.value:
            ctx.err(path, item, "an expectation needs exactly one of: " + ", ".join(EXPECT_KINDS),
                    "split it into several items")
        return None
    (kind, (_, vnode)), = m.items()
    at = ExpectAt(f"{path}.{kind}", line(item) or 0, check)
    return EXPECTATION_LOADERS[kind](ctx, vnode, at)


def load_received(ctx: Context, vnode: Node, at: ExpectAt) -> Received | None:
    """Frames that arrived at a node: ``count``, or ``min``/``max`` (none: at least one)."""
    m = mapping(ctx, vnode, at.where, RECEIVED_KEYS, required=("node", "match"))
    if m is None:
        return None
    node = None
    if "node" in m:
        got = text(ctx, m["node"][1], f"{at.where}.node", "a node name")
        if got is not None:
            node = node_ref(ctx, got, m["node"][1], f"{at.where}.node")
    pattern = match(ctx, m, at.where)
    iface = None
    if "iface" in m:
        iface = text(ctx, m["iface"][1], f"{at.where}.iface", "an interface name")
        if iface is not None and node is not None and not _has_iface(ctx, m, at, node, iface):
            iface = node = None
    counts = _counts(ctx, m, at.where)
    if counts is None or node is None or pattern is None or any(
            v is None for k, v in counts.items() if k in m):
        return None
    return Received(**at.fields(), node=node, match=pattern, iface=iface,
                    count=counts.get("count"), min=counts.get("min"), max=counts.get("max"))


def _has_iface(ctx: Context, m: Items, at: ExpectAt, node: str, iface: str) -> bool:
    have = ctx.ifaces[node]
    if iface in have:
        return True
    ctx.err(f"{at.where}.iface", m["iface"][1], f"{node} has no interface {iface!r}",
            did_you_mean(iface, have) if have else f"{node} has no links")
    return False


def _counts(ctx: Context, m: Items, path: str) -> dict[str, int | None] | None:
    """The given bounds (None where a value is bad); None when they contradict each other."""
    counts: dict[str, int | None] = {}
    for key in ("count", "min", "max"):
        if key in m:
            counts[key] = integer(ctx, m[key][1], f"{path}.{key}", 0, MAX_COUNT,
                                  f"a number of frames, 0 to {MAX_COUNT}")
    if "count" in counts and ("min" in counts or "max" in counts):
        ctx.err(f"{path}.count", m["count"][1], "count is exact; it does not go with "
                "min/max", "use count: N, or min:/max:")
        return None
    lo, hi = counts.get("min"), counts.get("max")
    if lo is not None and hi is not None and lo > hi:
        ctx.err(f"{path}.min", m["min"][1], f"min {lo} is more than max {hi}", "swap them")
        return None
    if "count" not in counts and "min" not in counts:
        counts["min"] = 0 if "max" in counts else 1  # bare `received:` means "some"
    return counts


def load_absent(ctx: Context, vnode: Node, at: ExpectAt) -> Absent | None:
    m = mapping(ctx, vnode, at.where, ABSENT_KEYS, required=("link", "match"))
    if m is None:
        return None
    link = link_ref(ctx, m["link"][1], f"{at.where}.link") if "link" in m else None
    pattern = match(ctx, m, at.where)
    if link is None or pattern is None:
        return None
    return Absent(**at.fields(), link=link, match=pattern)


def load_command(ctx: Context, vnode: Node, at: ExpectAt) -> CommandResult | None:
    """The result of an earlier exec step: its exit status (null: any) and output."""
    m = mapping(ctx, vnode, at.where, COMMAND_KEYS, required=("step",))
    if m is None:
        return None
    step = _exec_step(ctx, m["step"][1], at) if "step" in m else None
    status: int | None = 0
    if "status" in m:
        snode = m["status"][1]
        if isinstance(snode, ScalarNode) and snode.tag == NULL:
            status = None
        else:
            status = integer(ctx, snode, f"{at.where}.status", 0, 255,
                             "an exit status 0..255, or null for any")
            if status is None:
                return None
    contains = None
    if "contains" in m:
        contains = text(ctx, m["contains"][1], f"{at.where}.contains", "text")
        if contains is None:
            return None
    if step is None:
        return None
    return CommandResult(**at.fields(), step=step, status=status, contains=contains)


def _exec_step(ctx: Context, snode: Node, at: ExpectAt) -> str | None:
    """The label of an exec step before this point that does not run in the background,
    or of a fetch step (a background fetch's result is waited for)."""
    path = f"{at.where}.step"
    got = text(ctx, snode, path, "an exec or fetch step name")
    if got is None:
        return None
    ex = ctx.exec_steps.get(got)
    if ex is None:
        have = sorted(ctx.exec_steps)
        why = "no earlier exec step" if at.check is not None else "no exec step"
        ctx.err(path, snode, f"{why} is named {got!r}", did_you_mean(got, have) if have else
                "name the exec step with `name:` and refer to it here")
        return None
    if ex.background and isinstance(ex, Exec):
        ctx.err(path, snode, f"step {got!r} runs in the background; it has no result to check",
                "drop `background: true`")
        return None
    return got


def load_table(ctx: Context, vnode: Node, at: ExpectAt) -> TableHas | None:
    """A switch's table has (``has``) or lacks (``lacks``) an entry."""
    m = mapping(ctx, vnode, at.where, TABLE_EXPECT_KEYS, required=("switch",))
    if m is None:
        return None
    switch = switch_ref(ctx, m["switch"][1], f"{at.where}.switch") if "switch" in m else None
    ops = [k for k in ("has", "lacks") if k in m]
    if len(ops) != 1:
        ctx.err(at.where, vnode, "a table expectation needs exactly one of has:, lacks:",
                "table: {switch: s1, has: {vip: 10.0.0.100, port: p2}}")
        return None
    got = entry(ctx, m[ops[0]][1], f"{at.where}.{ops[0]}", switch)
    if switch is None or got is None:
        return None
    return TableHas(**at.fields(), switch=switch, entry=got, present=ops[0] == "has")


def load_logged(ctx: Context, vnode: Node, at: ExpectAt) -> Logged | None:
    """Events a node's process logged: ``{node: d2, event: request, with: {path: /f}}``."""
    hint = "logged: {node: d2, event: request, with: {path: /d2/f, status: 200}, count: 1}"
    m = mapping(ctx, vnode, at.where, LOGGED_KEYS, required=("node", "event"))
    if m is None:
        return None
    node = None
    if "node" in m:
        got = text(ctx, m["node"][1], f"{at.where}.node", "a node name")
        node = node_ref(ctx, got, m["node"][1], f"{at.where}.node") if got else None
        spec = ctx.kinds.get(node) if node else None
        if spec is not None and not spec.has_process:
            ctx.err(f"{at.where}.node", m["node"][1], f"a {spec.name} has no process that logs "
                    "events", hint)
            node = None
    event = text(ctx, m["event"][1], f"{at.where}.event", "an event name") \
        if "event" in m else None
    fields: list[tuple[str, Any]] = []
    if "with" in m:
        wnode = m["with"][1]
        if not isinstance(wnode, MappingNode):
            ctx.err(f"{at.where}.with", wnode, f"expected a mapping, got {describe(wnode)}", hint)
            return None
        for knode, value in wnode.value:
            if not isinstance(value, ScalarNode) or not isinstance(knode, ScalarNode):
                ctx.err(f"{at.where}.with", value, "each field is a plain value", hint)
                return None
            fields.append((knode.value, plain(value)))
    counts = _counts(ctx, m, at.where)
    if node is None or event is None or counts is None:
        return None
    return Logged(**at.fields(), node=node, event=event, fields=tuple(fields), **counts)


ExpectationLoader = Callable[[Context, Node, ExpectAt], Expectation | None]
EXPECTATION_LOADERS: dict[str, ExpectationLoader] = {
    "received": load_received, "absent": load_absent, "command": load_command,
    "table": load_table, "logged": load_logged,
}
EXPECT_KINDS = tuple(EXPECTATION_LOADERS)
