"""``links:``: endpoints in brief or extended form, their addresses, MTU and derived MACs.

Links are read in three passes, so every problem is found: the syntax of each link,
then the endpoints against the nodes and each other, then MACs and the links' names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..kinds import KindSpec
from ..model import NO_IMPAIRMENTS, Endpoint, Impairments, Link
from ..model import Node as ModelNode
from .context import Context
from .errors import line
from .impair import check_impairable, load_impairments, load_seed
from .names import endpoint_text, iface_name, node_name
from .refs import node_ref
from .safe_yaml import NULL, describe
from .values import integer, ipv4_iface, mac, mapping, sequence, text

LINK_KEYS = ("endpoints", "mtu", "impair", "seed")
ENDPOINT_KEYS = ("node", "interface", "mac", "ipv4")
MAX_IFACES = 255             # per node: the derived MAC has one byte for it


@dataclass
class RawEndpoint:
    """One endpoint as written: ``ep`` is ``(node, interface)`` when its syntax is valid."""

    node: Node                         # where errors about the endpoint go
    path: str
    ep: tuple[str, str] | None = None
    name: str | None = None            # the node it names, for ``Context.unlinked``
    name_node: Node | None = None      # the `node:` value of an extended endpoint
    mac: str | None = None
    mac_node: Node | None = None
    ipv4: str | None = None
    ipv4_node: Node | None = None
    bad: bool = False                  # unknown node or an endpoint already used


@dataclass
class RawLink:
    path: str
    item: Node
    eps: list[RawEndpoint] = field(default_factory=list)
    mtu: int | None = None             # not given: the kinds' default, else 1500
    impair: Impairments = NO_IMPAIRMENTS
    seed: int | None = None


def load_links(ctx: Context, node: Node | None) -> list[Link]:
    raws = []
    for i, item in enumerate(sequence(ctx, node, "links", "links")):
        raw = _raw_link(ctx, item, f"links[{i}]")
        if raw is not None:
            raws.append(raw)
    given_macs: dict[str, str] = {}   # MAC -> the endpoint it is given to
    addrs: dict[str, str] = {}        # IPv4 address -> its endpoint
    for raw in raws:
        for ep in raw.eps:
            if ep.ep is not None:
                _check_endpoint(ctx, ep, given_macs, addrs)
        good = [ep.ep for ep in raw.eps if ep.ep is not None]
        if len(good) == 2 and good[0][0] == good[1][0]:
            ctx.err(raw.path, raw.item, f"link connects node {good[0][0]} to itself",
                    "connect two different nodes")
    return _build(ctx, raws, set(given_macs))


def _raw_link(ctx: Context, item: Node, path: str) -> RawLink | None:
    if isinstance(item, ScalarNode) and item.tag != NULL:
        return _brief_link(ctx, item, path)
    if isinstance(item, MappingNode):
        return _extended_link(ctx, item, path)
    ctx.err(path, item, f"expected a link, got {describe(item)}",
            'brief form "h1:eth0 s1:p1" or a mapping with endpoints:')
    return None


def _brief_link(ctx: Context, item: ScalarNode, path: str) -> RawLink | None:
    parts = item.value.split()
    if len(parts) != 2:
        ctx.err(path, item, f"bad link {item.value!r}",
                'brief form: "h1:eth0 s1:p1" (two endpoints, one space)')
        return None
    eps = [RawEndpoint(item, path, endpoint_text(ctx, part, item, path), part.split(":")[0])
           for part in parts]
    return RawLink(path, item, eps)


def _extended_link(ctx: Context, item: MappingNode, path: str) -> RawLink | None:
    m = mapping(ctx, item, path, LINK_KEYS, required=("endpoints",))
    assert m is not None
    raw = RawLink(path, item)
    if "mtu" in m:
        raw.mtu = integer(ctx, m["mtu"][1], f"{path}.mtu", 68, 65535,
                          "an MTU from 68 to 65535") or 1500
    if "endpoints" not in m:
        return None
    enode = m["endpoints"][1]
    epath = f"{path}.endpoints"
    elist = sequence(ctx, enode, epath, "endpoints")
    if len(elist) != 2:
        if isinstance(enode, SequenceNode) or (isinstance(enode, ScalarNode) and enode.tag == NULL):
            ctx.err(epath, enode, f"a link has exactly 2 endpoints, got {len(elist)}",
                    "endpoints: [h1:eth0, s1:p1]")
        return None
    raw.eps = [load_endpoint(ctx, e, f"{epath}[{j}]") for j, e in enumerate(elist)]
    if "seed" in m:
        raw.seed = load_seed(ctx, m["seed"][1], f"{path}.seed")
    if "impair" in m:
        _impair(ctx, raw, m["impair"][1], f"{path}.impair")
    return raw


def _impair(ctx: Context, raw: RawLink, node: Node, path: str) -> None:
    ends = tuple(f"{n}:{i}" for n, i in (ep.ep for ep in raw.eps if ep.ep is not None))
    known = (ends[0], ends[1]) if len(ends) == 2 else None
    got = load_impairments(ctx, node, path, known)
    if got is not None and known is not None and check_impairable(ctx, known, node, path):
        raw.impair = got


def load_endpoint(ctx: Context, node: Node, path: str) -> RawEndpoint:
    """``node:interface``, or a mapping that may also give the endpoint's MAC and IPv4."""
    out = RawEndpoint(node, path)
    if isinstance(node, ScalarNode) and node.tag != NULL:
        out.ep = endpoint_text(ctx, node.value, node, path)
        return out
    m = mapping(ctx, node, path, ENDPOINT_KEYS, required=("node", "interface"),
                what="an endpoint mapping or \"node:interface\"")
    if m is None:
        return out
    iface = None
    if "node" in m:
        out.name_node = m["node"][1]
        got = text(ctx, out.name_node, f"{path}.node", "a node name")
        if got is not None:
            out.name = node_name(ctx, got, out.name_node, f"{path}.node")
    if "interface" in m:
        got = text(ctx, m["interface"][1], f"{path}.interface", "an interface name")
        if got is not None and iface_name(ctx, got, m["interface"][1], f"{path}.interface"):
            iface = got
    if out.name and iface:
        out.ep = (out.name, iface)
    if "mac" in m:
        out.mac_node = m["mac"][1]
        out.mac = mac(ctx, out.mac_node, f"{path}.mac")
    if "ipv4" in m:
        out.ipv4_node = m["ipv4"][1]
        out.ipv4 = ipv4_iface(ctx, out.ipv4_node, f"{path}.ipv4")
    return out


def _check_endpoint(ctx: Context, ep: RawEndpoint, given_macs: dict[str, str],
                    addrs: dict[str, str]) -> None:
    """A known node, an endpoint no other link uses, a MAC and an address no other has."""
    assert ep.ep is not None
    owner, iface = ep.ep
    full = f"{owner}:{iface}"
    if owner not in ctx.kinds:
        if ep.name_node is not None:
            node_ref(ctx, owner, ep.name_node, f"{ep.path}.node")
        else:
            node_ref(ctx, owner, ep.node, ep.path)
        ep.bad = True
        return
    spec = ctx.kinds[owner]
    if full in ctx.endpoints:
        ctx.err(ep.path, ep.node, f"endpoint {full} is used by two links",
                "each interface connects to one link; use another interface name")
        ep.bad = True
        return
    ctx.endpoints.add(full)
    ctx.ifaces[owner].append(iface)
    if spec is not None and iface in spec.reserved_ifaces:
        ctx.err(ep.path, ep.node, f"interface name {iface!r} is reserved on a {spec.name}",
                "pick another name, e.g. eth1 or p3")
    if len(ctx.ifaces[owner]) > MAX_IFACES:
        ctx.err(ep.path, ep.node, f"node {owner} has more than 255 interfaces", "split it")
    if ep.mac is not None:
        _check_mac(ctx, ep, full, given_macs)
    if ep.ipv4 is not None:
        _check_ipv4(ctx, ep, spec, full, addrs)


def _check_mac(ctx: Context, ep: RawEndpoint, full: str, given_macs: dict[str, str]) -> None:
    assert ep.mac is not None
    if ep.mac in given_macs:
        ctx.err(f"{ep.path}.mac", ep.mac_node, f"MAC {ep.mac} is also {given_macs[ep.mac]}'s",
                "MACs are unique; leave it out to have one derived")
    else:
        given_macs[ep.mac] = full


def _check_ipv4(ctx: Context, ep: RawEndpoint, spec: KindSpec | None, full: str,
                addrs: dict[str, str]) -> None:
    assert ep.ipv4 is not None
    path = f"{ep.path}.ipv4"
    if spec is not None and not spec.ip_interfaces:
        ctx.err(path, ep.ipv4_node, f"a {spec.name} interface has no IPv4 address",
                "addresses go on host interfaces")
    addr = ep.ipv4.split("/")[0]
    if addr in addrs:
        ctx.err(path, ep.ipv4_node, f"address {addr} is also {addrs[addr]}'s",
                "addresses are unique")
    else:
        addrs[addr] = full


def _build(ctx: Context, raws: list[RawLink], used: set[str]) -> list[Link]:
    """The links whose two endpoints are valid; MACs derived in order of appearance."""
    counters: dict[str, int] = {}     # node -> interfaces seen so far
    links: list[Link] = []
    for raw in raws:
        mtu = raw.mtu if raw.mtu is not None else default_mtu(ctx, raw.eps)
        done = [_endpoint(ctx, ep, counters, used) for ep in raw.eps
                if ep.ep is not None and not ep.bad]
        if len(raw.eps) == 2 and all(ep.ep is not None for ep in raw.eps):
            _name_link(ctx, raw, mtu)
        if len(done) == 2:
            links.append(Link(a=done[0], b=done[1], mtu=mtu, impair=raw.impair, seed=raw.seed))
        else:  # its nodes miss a port: their options are not checked against the links
            ctx.unlinked.update(ep.name for ep in raw.eps if ep.name)
    return links


def _endpoint(ctx: Context, ep: RawEndpoint, counters: dict[str, int], used: set[str],
              ) -> Endpoint:
    assert ep.ep is not None
    owner, iface = ep.ep
    counters[owner] = counters.get(owner, 0) + 1
    addr = ep.mac
    if addr is None:
        addr = derive_mac(ctx.node_order.index(owner) + 1, counters[owner], used)
        used.add(addr)
    return Endpoint(node=owner, iface=iface, mac=addr, ipv4=ep.ipv4)


def _name_link(ctx: Context, raw: RawLink, mtu: int) -> None:
    """Record the link for ``link_ref`` (either order) and its endpoints' MTU."""
    names = [f"{n}:{i}" for n, i in (ep.ep for ep in raw.eps if ep.ep is not None)]
    pair = frozenset(names)
    if len(pair) == 2:
        lname = " ".join(names)
        ctx.links_by_pair.setdefault(pair, lname)
        ctx.link_where.setdefault(lname, (raw.path, line(raw.item)))
    for ep in pair:
        ctx.mtu[ep] = mtu


def default_mtu(ctx: Context, eps: list[RawEndpoint]) -> int:
    """1500, or the kinds' own default when both ends' kinds set one (FCoE: 2500)."""
    wanted = [getattr(ctx.kinds.get(ep.ep[0]), "link_mtu", None) if ep.ep else None
              for ep in eps]
    return min(wanted) if len(wanted) == 2 and None not in wanted else 1500


def derive_mac(node_index: int, iface_index: int, used: set[str]) -> str:
    """02:00:<node index, 2 bytes>:<interface index>:<n>, n the first free value from 0."""
    hi, lo = (node_index >> 8) & 0xFF, node_index & 0xFF
    for last in range(256):
        addr = f"02:00:{hi:02x}:{lo:02x}:{iface_index & 0xFF:02x}:{last:02x}"
        if addr not in used:
            return addr
    # every variant taken by given MACs: walk the locally administered space
    n = 0
    while True:  # pragma: no cover - needs 256 clashing given MACs
        addr = "02:01:" + ":".join(f"{(n >> s) & 0xFF:02x}" for s in (24, 16, 8, 0))
        if addr not in used:
            return addr
        n += 1


def check_loops(ctx: Context, links: list[Link], nodes: list[ModelNode]) -> None:
    """Links among forwarding nodes (switches) must form a forest: there is no STP. A link
    a node fences (``KindSpec.fenced_peer``) does not count."""
    parent: dict[str, str] = {}
    fenced = set()
    for n in nodes:
        spec = ctx.kinds.get(n.name)
        peer = spec.fenced_peer(n.options) if spec and spec.fenced_peer else None
        if peer is not None:
            fenced.add(frozenset((n.name, peer)))

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for link in links:
        ka, kb = ctx.kinds.get(link.a.node), ctx.kinds.get(link.b.node)
        if not (ka and kb and ka.forwards and kb.forwards) \
                or frozenset((link.a.node, link.b.node)) in fenced:
            continue
        ra, rb = find(link.a.node), find(link.b.node)
        if ra == rb:
            lpath, lline = ctx.link_where.get(link.name, ("links", None))
            ctx.err(lpath, lline, f"link {link.name} closes a loop between forwarding "
                    "nodes", "there is no STP: broadcasts would circle forever; remove a link")
        else:
            parent[ra] = rb

