"""``impair:`` of a link (extended form) and of a step: what the link does to its frames.

Either one mapping of impairments for both directions, or one per sending endpoint
(``{"h1:eth0": {...}, "s1:p1": {...}}``: frames leaving that endpoint); a direction not
named is not impaired. ``ftsslab.lab.impair`` says what each impairment does.
"""

from __future__ import annotations

from yaml.nodes import MappingNode, Node, ScalarNode

from ..model import NO_IMPAIRMENT, Impairment, Impairments
from .context import Context
from .safe_yaml import describe
from .values import bitrate, duration, integer, mapping, percent

IMPAIR_KEYS = ("loss", "delay", "jitter", "reorder", "duplicate", "corrupt", "rate")
PROBABILITIES = ("loss", "reorder", "duplicate", "corrupt")
MAX_DELAY = 10.0                 # seconds, delay and jitter
RATE_RANGE = (8000, 10**10)      # bit/s; below 8kbit tbf cannot hold a 64 KiB-MTU frame
MAX_SEED = 2**64 - 1
_HINT = "e.g. {loss: 1%, delay: 5ms, jitter: 1ms, rate: 10mbit}; per direction " \
    '{"h1:eth0": {loss: 1%}} (frames leaving h1:eth0)'


def load_impairments(ctx: Context, node: Node, path: str, ends: tuple[str, str] | None,
                     ) -> Impairments | None:
    """(frames leaving ``ends[0]``, frames leaving ``ends[1]``); ``ends`` is None when the
    link's endpoints are invalid (their names are then not checked)."""
    if not isinstance(node, MappingNode):
        ctx.err(path, node, f"expected a mapping of impairments, got {describe(node)}", _HINT)
        return None
    keys = [k.value for k, _ in node.value if isinstance(k, ScalarNode)]
    if not any(":" in k for k in keys):
        one = load_impairment(ctx, node, path)
        return None if one is None else (one, one)
    if any(k in IMPAIR_KEYS for k in keys):
        ctx.err(path, node, "impairments for both directions and per endpoint in one mapping",
                'either {loss: 1%} (both directions) or {"h1:eth0": {loss: 1%}} (per endpoint)')
        return None
    if ends is None:   # the link's endpoints are wrong (said so): check the values only
        for knode, vnode in node.value:
            load_impairment(ctx, vnode, f"{path}.{getattr(knode, 'value', '?')}")
        return None
    m = mapping(ctx, node, path, ends)
    assert m is not None
    got = {key: load_impairment(ctx, vnode, f"{path}.{key}") for key, (_, vnode) in m.items()}
    if None in got.values():
        return None
    return (got.get(ends[0]) or NO_IMPAIRMENT, got.get(ends[1]) or NO_IMPAIRMENT)


def load_impairment(ctx: Context, node: Node, path: str) -> Impairment | None:
    """One direction's impairments; every value checked, also after one failed."""
    m = mapping(ctx, node, path, IMPAIR_KEYS, what="a mapping of impairments")
    if m is None:
        return None
    values: dict[str, float | int | None] = {}
    for key, (_, vnode) in m.items():
        kpath = f"{path}.{key}"
        if key in PROBABILITIES:
            values[key] = percent(ctx, vnode, kpath)
        elif key == "rate":
            values[key] = bitrate(ctx, vnode, kpath, *RATE_RANGE)
        else:
            values[key] = _delay(ctx, vnode, kpath)
    got = {k: v for k, v in values.items() if v is not None}
    ok = len(got) == len(values)
    if "delay" in values and "delay" not in got:
        return None        # the checks against the delay need it
    delay = got.get("delay", 0.0)
    if got.get("jitter", 0.0) > delay:
        ctx.err(f"{path}.jitter", m["jitter"][1], f"jitter {m['jitter'][1].value} is more "
                f"than the delay ({delay * 1000:g}ms)",
                "a frame's delay is delay +/- jitter and cannot be negative: raise delay")
        ok = False
    if got.get("reorder") and not delay:
        ctx.err(f"{path}.reorder", m["reorder"][1], "reorder needs a delay",
                "reordered frames skip the delay to overtake the others: add e.g. delay: 10ms")
        ok = False
    return Impairment(**got) if ok else None  # type: ignore[arg-type]


def _delay(ctx: Context, node: Node, path: str) -> float | None:
    got = duration(ctx, node, path)
    if got is not None and got > MAX_DELAY:
        ctx.err(path, node, f"{node.value} is more than {MAX_DELAY:g} seconds",
                'a plain number is seconds; write "5ms" or "200us"')
        return None
    return got


def load_seed(ctx: Context, node: Node, path: str) -> int | None:
    return integer(ctx, node, path, 0, MAX_SEED, f"a seed: an integer from 0 to {MAX_SEED}")


def check_impairable(ctx: Context, ends: tuple[str, str], node: Node, path: str) -> bool:
    """A link whose one end is a node's TAP (a server's ``stack``) has no veth to impair."""
    for ep in ends:
        owner, _, iface = ep.partition(":")
        spec = ctx.kinds.get(owner)
        if spec is not None and spec.veth is not None and iface in spec.veth.tap_ifaces:
            ctx.err(path, node, f"{ep} is a {spec.name}'s TAP: its link cannot be impaired",
                    "impair the links between the nodes instead (e.g. the fabric links)")
            return False
    return True

