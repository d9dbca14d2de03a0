"""References to what the file defines: nodes, switches, endpoints and links."""

from __future__ import annotations

from yaml.nodes import Node

from ..kinds import did_you_mean
from .context import Context
from .values import text


def node_ref(ctx: Context, name: str, node: Node, path: str) -> str | None:
    """A node defined in ``nodes:``."""
    if name in ctx.kinds:
        return name
    hint = did_you_mean(name, ctx.node_order) if ctx.node_order else "define it in nodes:"
    ctx.err(path, node, f"unknown node {name!r}", hint)
    return None


def switch_ref(ctx: Context, node: Node, path: str) -> str | None:
    """A node whose kind has a forwarding table."""
    got = text(ctx, node, path, "a switch name")
    if got is None:
        return None
    name = node_ref(ctx, got, node, path)
    if name is None:
        return None
    spec = ctx.kinds.get(name)
    if spec is not None and not spec.has_table:
        tables = [n for n, k in ctx.kinds.items() if k and k.has_table]
        ctx.err(path, node, f"{name} is a {spec.name}, not a switch (only switches have a "
                "forwarding table)", ("switches: " + ", ".join(tables)) if tables
                else "add a node with kind: switch")
        return None
    return name


def link_ref(ctx: Context, node: Node, path: str) -> str | None:
    """A link's canonical name, from its two endpoints in either order."""
    got = text(ctx, node, path, 'a link "a:if b:if"')
    if got is None:
        return None
    parts = got.split()
    if len(parts) != 2:
        ctx.err(path, node, f"bad link {got!r}", 'two endpoints, e.g. "h1:eth0 s1:p1"')
        return None
    name = ctx.links_by_pair.get(frozenset(parts))
    if name is None:
        known = sorted(ctx.links_by_pair.values())
        canon = " ".join(parts)
        hint = did_you_mean(canon, known) if known else "the scenario has no links"
        ctx.err(path, node, f"no link {got!r}", hint)
    return name


def endpoint_ref(ctx: Context, node: Node, path: str) -> str | None:
    """A ``node:interface`` some link defines."""
    got = text(ctx, node, path, 'an endpoint "node:interface"')
    if got is None:
        return None
    got = got.strip()
    if got in ctx.endpoints:
        return got
    name = got.split(":")[0]
    if name in ctx.ifaces and ctx.ifaces[name]:
        hint = f"{name} has " + ", ".join(f"{name}:{i}" for i in ctx.ifaces[name])
    else:
        hint = did_you_mean(got, sorted(ctx.endpoints)) if ctx.endpoints else \
            "no links define endpoints"
    ctx.err(path, node, f"no endpoint {got!r}", hint)
    return None
