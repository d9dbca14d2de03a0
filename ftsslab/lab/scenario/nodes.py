"""``nodes:``: names and kinds, each kind's options, then those options against the links."""

from __future__ import annotations

from yaml.nodes import MappingNode, Node, ScalarNode

from ..kinds import NodeView, OptionIssue, Port, did_you_mean, get_kind, kind_names
from ..model import Link
from ..model import Node as ModelNode
from .context import Context
from .errors import line
from .names import node_name
from .safe_yaml import NULL, describe, find, plain
from .values import Items

_EXAMPLE = "nodes: {h1: {kind: host}}"


def load_nodes(ctx: Context, node: Node | None) -> list[ModelNode]:
    if node is None:
        return []
    if isinstance(node, MappingNode) and not node.value:
        ctx.err("nodes", node, "no nodes", _EXAMPLE)
        return []
    if not isinstance(node, MappingNode):
        ctx.err("nodes", node, f"expected a mapping of node names, got {describe(node)}",
                _EXAMPLE)
        return []
    out: list[ModelNode] = []
    for knode, vnode in node.value:
        got = _load_node(ctx, knode, vnode)
        if got is not None:
            out.append(got)
    return out


def _load_node(ctx: Context, knode: Node, vnode: Node) -> ModelNode | None:
    """One node; its name is recorded even when the rest is wrong, for later references."""
    if not isinstance(knode, ScalarNode) or knode.tag == NULL:
        ctx.err("nodes", knode, f"a node name must be a word, got {describe(knode)}", "e.g. h1")
        return None
    name = knode.value
    path = f"nodes.{name}"
    if name in ctx.kinds:
        ctx.err(path, knode, f"duplicate node {name!r}", "node names are unique")
        return None
    valid = node_name(ctx, name, knode, path) is not None
    ctx.kinds[name] = None
    ctx.node_order.append(name)
    ctx.ifaces[name] = []
    items = _items(ctx, vnode, path, name)
    kind = _kind(ctx, vnode, path, items) if items is not None else None
    spec = get_kind(kind) if kind is not None else None
    if spec is None:
        return None
    ctx.kinds[name] = spec
    options = {k: plain(v) for k, (_, v) in items.items() if k != "kind"}
    try:
        issues = list(spec.validate_options(options))
    except Exception as exc:  # a kind's validator must not crash the loader
        issues = [OptionIssue("", f"kind {kind!r} cannot check its options: {exc}", "")]
    option_issues(ctx, name, vnode, issues)
    if not valid:
        return None
    merged = {**spec.defaults, **options}
    if not issues:
        ctx.checked[name] = (vnode, frozenset(options))
        ctx.options[name] = merged
    return ModelNode(name=name, kind=kind, options=merged)


def _items(ctx: Context, vnode: Node, path: str, name: str) -> Items | None:
    """A node's keys: ``kind`` and whatever options it gives (its kind checks those)."""
    if not isinstance(vnode, MappingNode):
        ctx.err(path, vnode, f"expected a mapping with `kind:`, got {describe(vnode)}",
                f"{name}: {{kind: host}}  (kinds: {', '.join(kind_names())})")
        return None
    items: Items = {}
    for k, v in vnode.value:
        if not isinstance(k, ScalarNode) or k.tag == NULL:
            ctx.err(path, k, f"a key must be a plain word, got {describe(k)}",
                    "kind: and the kind's options")
        elif k.value in items:
            ctx.err(f"{path}.{k.value}", k, f"duplicate key {k.value!r}",
                    f"already given on line {line(items[k.value][0])}")
        else:
            items[k.value] = (k, v)
    return items


def _kind(ctx: Context, vnode: Node, path: str, items: Items) -> str | None:
    """The name of a registered kind."""
    if "kind" not in items:
        ctx.err(path, vnode, "missing required key 'kind'", f"kinds: {', '.join(kind_names())}")
        return None
    knode = items["kind"][1]
    kind = knode.value if isinstance(knode, ScalarNode) and knode.tag != NULL else None
    if kind is None:
        ctx.err(f"{path}.kind", knode, f"expected a node kind, got {describe(knode)}",
                f"kinds: {', '.join(kind_names())}")
        return None
    if get_kind(kind) is None:
        ctx.err(f"{path}.kind", knode, f"unknown node kind {kind!r}",
                did_you_mean(kind, kind_names()))
        return None
    return kind


def option_issues(ctx: Context, name: str, vnode: MappingNode, issues: list[OptionIssue]) -> None:
    """A kind's issues as errors, each on the line of the option it names."""
    for issue in issues:
        where = find(vnode, issue.key) or vnode
        path = f"nodes.{name}.{issue.key}" if issue.key else f"nodes.{name}"
        ctx.err(path, where, issue.message, issue.hint)


def check_topology(ctx: Context, nodes: list[ModelNode], links: list[Link]) -> None:
    """Each kind's ``validate_topology``, among the nodes whose options are valid."""
    kinds = {n.name: n.kind for n in nodes}
    ports: dict[str, dict[str, Port]] = {n.name: {} for n in nodes}
    for link in links:
        for ep, peer in ((link.a, link.b), (link.b, link.a)):
            if ep.node in ports and peer.node in kinds:
                ports[ep.node][ep.iface] = Port(ep.iface, ep.mac, link.mtu, peer.node,
                                                kinds[peer.node], peer.iface, ep.ipv4)
    views = {n.name: NodeView(n.name, n.kind, n.options, ctx.checked[n.name][1],
                              ports[n.name]) for n in nodes if n.name in ctx.checked}
    for name, (vnode, _) in ctx.checked.items():
        spec = ctx.kinds[name]
        if spec is None or spec.validate_topology is None or name in ctx.unlinked:
            continue
        try:
            issues = list(spec.validate_topology(views[name], views))
        except Exception as exc:  # a kind's validator must not crash the loader
            issues = [OptionIssue("", f"kind {spec.name!r} cannot check its links: {exc}")]
        option_issues(ctx, name, vnode, issues)
