"""The report's two drawings, the topology and an exchange's ladder, as inline SVG strings.

Layout is computed here, in Python, so the page needs no JS to be read and the browser test can
count what was drawn. Strings are built directly (not through Jinja macros): a report may have
thousands of arrows, and every value from a capture goes through ``esc``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping

from markupsafe import escape

from ftsslab.report.model import Exchange, Frame, LinkLine, NodeBox, Topology

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#9c755f",
           "#edc948", "#ff9da7", "#8cd17d", "#499894", "#d37295")
KIND_COLOURS = {"host": "#4e79a7", "switch": "#f28e2b", "nas-switch": "#f28e2b",
                "ftss": "#b07aa1", "server": "#76b7b2", "nas": "#59a14f", "sanic": "#e15759",
                "i2o-host": "#9c755f", "i2o-remote": "#499894", "": "#8c8c8c"}
FAMILY_COLOURS = {"ftss": "#b07aa1", "tch": "#f28e2b", "xap": "#edc948", "roce": "#e15759",
                  "i2o": "#9c755f", "tcp": "#4e79a7", "udp": "#76b7b2", "arp": "#59a14f",
                  "http": "#499894", "icmp": "#d37295"}
FABRIC = frozenset({"switch", "nas-switch", "ftss"})  # drawn in the topology's middle row
CHAR_W = 6.6  # an average 12px sans-serif character: label truncation, not exact layout


def esc(value: object) -> str:
    return str(escape(value))


def colour(name: str, known: Mapping[str, str]) -> str:
    """A fixed colour for a known kind/family; a stable one (by hash) for any other."""
    if name in known:
        return known[name]
    return PALETTE[zlib.crc32(name.encode()) % len(PALETTE)]


def clip(text: str, chars: int) -> str:
    chars = max(chars, 4)
    return text if len(text) <= chars else text[: chars - 1] + "…"


def seconds(t: float | None) -> str:
    return "at end" if t is None else f"{t:.3f} s"


def quantity(n: int) -> str:
    for unit, size in (("MB", 1_000_000), ("kB", 1000)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


# -- topology -----------------------------------------------------------------------------

BOX_W, BOX_H, COL, ROW, PER_ROW, PAD = 132, 42, 340, 170, 8, 40
IMPAIRED = ' class="impaired"'


def split_endpoint(endpoint: str, names: Iterable[str]) -> tuple[str, str]:
    """``node:if`` into (node, if); a node's name may itself hold colons (an address lane)."""
    names = set(names)
    if endpoint in names:
        return endpoint, ""
    for i, ch in enumerate(endpoint):
        if ch == ":" and endpoint[:i] in names:
            return endpoint[:i], endpoint[i + 1:]
    node, _, iface = endpoint.rpartition(":")
    return (node, iface) if node else (endpoint, "")


def _rows_layout(nodes: list[NodeBox], neighbours: dict[str, set[str]]) -> dict[str, tuple]:
    """Fabric kinds in the middle row(s), the other kinds shared between top and bottom (a
    kind stays together), each row ordered by where its fabric neighbours are."""
    fabric = [n for n in nodes if n.kind in FABRIC]
    edge = [n for n in nodes if n.kind not in FABRIC]
    by_kind: dict[str, list[NodeBox]] = {}
    for n in edge:
        by_kind.setdefault(n.kind, []).append(n)
    top: list[NodeBox] = []
    bottom: list[NodeBox] = []
    if len(by_kind) == 1:
        (only,) = by_kind.values()
        top, bottom = only[: (len(only) + 1) // 2], only[(len(only) + 1) // 2:]
    else:
        for group in by_kind.values():
            (top if len(top) <= len(bottom) else bottom).extend(group)
    slot = {n.name: i for i, n in enumerate(fabric)}

    def bary(n: NodeBox) -> float:
        xs = [slot[m] for m in neighbours.get(n.name, ()) if m in slot]
        return sum(xs) / len(xs) if xs else math.inf

    def chunks(row: list[NodeBox]) -> list[list[NodeBox]]:
        row = sorted(row, key=bary)
        return [row[i:i + PER_ROW] for i in range(0, len(row), PER_ROW)]

    rows = chunks(top)[::-1] + [fabric[i:i + PER_ROW] for i in range(0, len(fabric), PER_ROW)]
    rows += chunks(bottom)
    rows = [r for r in rows if r]
    width = max(len(r) for r in rows) * COL
    pos = {}
    for y, row in enumerate(rows):
        x0 = PAD + (width - len(row) * COL) / 2 + COL / 2
        for i, n in enumerate(row):
            pos[n.name] = (x0 + i * COL, PAD + BOX_H / 2 + y * ROW)
    return pos


def _circle_layout(nodes: list[NodeBox]) -> dict[str, tuple]:
    """No fabric (a foreign capture's lanes): a circle big enough that boxes do not touch."""
    n = len(nodes)
    r = 0 if n == 1 else max(COL / 1.6, n * COL / (2 * math.pi) * 1.15)
    c = PAD + BOX_W / 2 + r
    return {node.name: (c + r * math.cos(math.pi + 2 * math.pi * i / n),
                        PAD + BOX_H / 2 + r * 0.75 + r * 0.75 * math.sin(math.pi + 2 * math.pi
                                                                         * i / n))
            for i, node in enumerate(nodes)}


def _node_svg(n: NodeBox, x: float, y: float, cls: str = "node") -> str:
    c = colour(n.kind, KIND_COLOURS)
    kind = n.kind or "lane"
    return (f'<g class="{cls}" data-node="{esc(n.name)}" data-kind="{esc(n.kind)}">'
            f"<title>{esc(n.name)} ({esc(kind)})</title>"
            f'<rect x="{x - BOX_W / 2:.1f}" y="{y - BOX_H / 2:.1f}" width="{BOX_W}" '
            f'height="{BOX_H}" rx="7" fill="#fff"/>'
            f'<rect x="{x - BOX_W / 2:.1f}" y="{y - BOX_H / 2:.1f}" width="{BOX_W}" '
            f'height="{BOX_H}" rx="7" fill="{c}" fill-opacity=".14" stroke="{c}" '
            f'stroke-width="2"/>'
            f'<text x="{x:.1f}" y="{y - 3:.1f}" class="nname">{esc(clip(n.name, 18))}</text>'
            f'<text x="{x:.1f}" y="{y + 13:.1f}" class="nkind" fill="{c}">{esc(kind)}</text>'
            f"</g>")


LINE_H, TEXT_W = 12, 6.9  # a label line's height; an 11px character's average width
SPREAD = 26  # between parallel links of one pair of nodes


class _Placer:
    """Greedy label placement: each label takes the first of its candidate spots (in order of
    preference) that overlaps no box or earlier label, crossing as few links as it can."""

    def __init__(self, boxes: list[tuple], segments: list[tuple]) -> None:
        self.taken = list(boxes)
        self.segments = segments

    @staticmethod
    def _overlap(a: tuple, b: tuple) -> bool:
        return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]

    @staticmethod
    def _crosses(box: tuple, seg: tuple) -> bool:
        (x1, y1), (x2, y2) = seg
        for i in range(9):  # sample the segment: cheap and good enough for labels
            t = i / 8
            x, y = x1 + (x2 - x1) * t, y1 + (y2 - y1) * t
            if box[0] < x < box[2] and box[1] < y < box[3]:
                return True
        return False

    def place(self, candidates: list[tuple], own: tuple | None = None) -> tuple:
        best, best_score = candidates[0], math.inf
        for rank, cand in enumerate(candidates):
            box = cand[0]
            score = rank + 1000 * sum(self._overlap(box, t) for t in self.taken)
            score += 40 * sum(self._crosses(box, s) for s in self.segments if s is not own)
            if score < best_score:
                best, best_score = cand, score
            if score == rank:
                break
        self.taken.append(best[0])
        return best


def _block(px: float, py: float, nx: float, ny: float, widths: list[float]) -> tuple:
    """A block of label lines standing off the point (px, py) towards the normal (nx, ny):
    (bbox, x, first baseline y, text-anchor)."""
    w, h = max(widths), LINE_H * len(widths)
    x, y = px + nx * 7, py + ny * 7
    if abs(nx) < 0.35:  # off a flat line: centred above or below it
        x0, y0, anchor = x - w / 2, (y - h if ny < 0 else y), "middle"
    else:
        y0 = y - h / 2 + ny * h / 2
        x0, anchor = (x, "start") if nx > 0 else (x - w, "end")
    return (x0 - 7, y0 - 2, x0 + w + 7, y0 + h + 2), x, y0 + 9, anchor


def _link_parts(link: LinkLine, pa: tuple, pb: tuple, offset: float, centre: tuple) -> dict:
    (xa, ya), (xb, yb) = pa, pb
    dx, dy = xb - xa, yb - ya
    length = math.hypot(dx, dy) or 1.0
    ux, uy = dx / length, dy / length
    nx, ny = -uy, ux
    xa, ya, xb, yb = xa + nx * offset, ya + ny * offset, xb + nx * offset, yb + ny * offset
    if offset:  # a parallel link's labels stand on its own outer side
        sides = [1 if offset > 0 else -1]
    else:  # away from the drawing's middle first
        mx, my = (xa + xb) / 2 - centre[0], (ya + yb) / 2 - centre[1]
        first = 1 if nx * mx + ny * my >= 0 else -1
        if abs(dy) < 1:
            first = -1 if ny > 0 else 1  # a flat link: above its line first
        sides = [first, -first]
    return {"link": link, "seg": ((xa, ya), (xb, yb)), "u": (ux, uy), "n": (nx, ny),
            "sides": sides, "len": length}


def _edge(ux: float, uy: float) -> float:
    """How far from a box's centre its edge is along the direction (ux, uy)."""
    return min(BOX_W / 2 / (abs(ux) or 1e-9), BOX_H / 2 / (abs(uy) or 1e-9))


def _link_svg(g: dict, ia: str, ib: str, placer: _Placer) -> str:
    link = g["link"]
    (xa, ya), (xb, yb) = g["seg"]
    ux, uy = g["u"]
    nx, ny = g["n"]
    parts = [f'<g class="link" data-link="{esc(link.name)}" data-frames="{link.frames}" '
             f'data-bytes="{link.bytes}">',
             f"<title>{esc(link.a)} — {esc(link.b)}</title>",
             f'<line x1="{xa:.1f}" y1="{ya:.1f}" x2="{xb:.1f}" y2="{yb:.1f}"'
             f"{IMPAIRED if link.impair else ''}/>"]
    edge = _edge(ux, uy)
    span = max(g["len"] - 2 * edge, 1.0)
    for iface, (ex, ey), d in ((ia, (xa, ya), 1), (ib, (xb, yb), -1)):
        if not iface:
            continue
        cands = []
        for step in (10, 26, 42):
            r = edge + min(step, span / 2)
            px, py = ex + d * ux * r, ey + d * uy * r
            for s in g["sides"]:
                cands.append(_block(px, py, nx * s, ny * s, [len(iface) * TEXT_W]))
        box, x, y, anchor = placer.place(cands, g["seg"])
        parts.append(f'<text x="{x:.1f}" y="{y:.1f}" class="iface" '
                     f'text-anchor="{anchor}">{esc(iface)}</text>')
    lines = [(f"mtu {link.mtu}", "lcount")] if link.mtu else []
    lines.append((f"{link.frames} fr · {quantity(link.bytes)}", "lcount"))
    if link.impair:
        lines.append((clip(link.impair, 40), "limpair"))
    widths = [len(t) * TEXT_W for t, _ in lines]
    cands = []
    for sides in (g["sides"], [-g["sides"][0]] if len(g["sides"]) == 1 else []):
        for t in (0.5, 0.42, 0.58, 0.34, 0.66, 0.26, 0.74, 0.18, 0.82, 0.1, 0.9):
            px, py = xa + (xb - xa) * t, ya + (yb - ya) * t
            for s in sides:
                cands.append(_block(px, py, nx * s, ny * s, widths))
    box, x, y, anchor = placer.place(cands, g["seg"])
    for i, (text, cls) in enumerate(lines):
        parts.append(f'<text x="{x:.1f}" y="{y + LINE_H * i:.1f}" class="{cls}" '
                     f'text-anchor="{anchor}">{esc(text)}</text>')
    parts.append("</g>")
    return "".join(parts)


def _spread_ends(geo: list, ends: list, pos: dict, fabric: set, centre: tuple) -> None:
    """A fabric node's links leaving by one face (top or bottom) leave it side by side,
    ordered by where they go, instead of all from its centre."""
    faces: dict[tuple, list] = {}
    for (g, _, _), (_, na, _, nb, _) in zip(geo, ends, strict=True):
        if na == nb:
            continue
        for end, node in ((0, na), (1, nb)):
            if node not in fabric:
                continue
            (x, y), (ox, oy) = g["seg"][end], g["seg"][1 - end]
            if abs(oy - y) * BOX_W < abs(ox - x) * BOX_H:
                continue  # leaves by a side
            faces.setdefault((node, oy < y), []).append(((ox, x), g, end))
    for (node, _), links in faces.items():
        if len(links) < 3:
            continue
        links.sort(key=lambda t: t[0])
        gap = min(28.0, (BOX_W - 24) / (len(links) - 1))
        cx, cy = pos[node]
        for i, (_, g, end) in enumerate(links):
            seg = list(g["seg"])
            seg[end] = (cx + (i - (len(links) - 1) / 2) * gap, cy)
            sides = g["sides"]
            g.update(_link_parts(g["link"], seg[0], seg[1], 0, centre))
            if len(sides) == 1:  # a parallel link keeps its outer side
                g["sides"] = sides


def topology(topo: Topology) -> str:
    """The topology graph: links under the nodes; an endpoint naming no node gets a dashed
    stand-in box (class ``phantom``, not ``node``) so its link is still drawn. Links between
    the same two nodes are drawn side by side, offset symmetrically, each with its own labels;
    labels go where they cover no box and no other label (``_Placer``)."""
    nodes = list(topo.nodes)
    names = [n.name for n in nodes]
    declared = set(names)
    known = set(names)
    ends = []
    for link in topo.links:
        (na, ia), (nb, ib) = split_endpoint(link.a, names), split_endpoint(link.b, names)
        ends.append((link, na, ia, nb, ib))
        for n in (na, nb):
            if n not in known:
                known.add(n)
                nodes.append(NodeBox(n, "?"))
    if not nodes:
        return ('<svg class="topology" width="320" height="60" viewBox="0 0 320 60">'
                '<text x="20" y="35" class="empty">no topology</text></svg>')
    neighbours: dict[str, set[str]] = {}
    for _, na, _, nb, _ in ends:
        neighbours.setdefault(na, set()).add(nb)
        neighbours.setdefault(nb, set()).add(na)
    fabric = any(n.kind in FABRIC for n in nodes)
    pos = _rows_layout(nodes, neighbours) if fabric else _circle_layout(nodes)
    centre = ((min(x for x, _ in pos.values()) + max(x for x, _ in pos.values())) / 2,
              (min(y for _, y in pos.values()) + max(y for _, y in pos.values())) / 2)
    bundles: dict[frozenset, int] = {}
    for _, na, _, nb, _ in ends:
        bundles[frozenset((na, nb))] = bundles.get(frozenset((na, nb)), 0) + 1
    seen: dict[frozenset, int] = {}
    geo = []
    for link, na, ia, nb, ib in ends:
        key = frozenset((na, nb))
        k = seen[key] = seen.get(key, -1) + 1
        m = bundles[key]
        offset = (k - (m - 1) / 2) * SPREAD
        if na == nb:  # a loop on one node: a line out to the right of its box and back
            x, y = pos[na]
            pb = (x + BOX_W / 2 + 40, y - 30 - offset)
            geo.append((_link_parts(link, (x + BOX_W / 2, y), pb, 0, centre), ia, ib))
        else:
            if (na, nb) != tuple(sorted((na, nb))):  # one direction for a bundle's normal
                offset = -offset
            geo.append((_link_parts(link, pos[na], pos[nb], offset, centre), ia, ib))
    _spread_ends(geo, ends, pos, {n.name for n in nodes if n.kind in FABRIC}, centre)
    boxes = [(x - BOX_W / 2 - 3, y - BOX_H / 2 - 3, x + BOX_W / 2 + 3, y + BOX_H / 2 + 3)
             for x, y in pos.values()]
    placer = _Placer(boxes, [g["seg"] for g, _, _ in geo])
    parts = [_link_svg(g, ia, ib, placer) for g, ia, ib in geo]
    parts += [_node_svg(n, *pos[n.name], "node" if n.name in declared else "phantom")
              for n in nodes]
    x0 = min(b[0] for b in placer.taken) - 12
    y0 = min(b[1] for b in placer.taken) - 12
    w = max(b[2] for b in placer.taken) + 12 - x0
    h = max(b[3] for b in placer.taken) + 12 - y0
    return (f'<svg class="topology" width="{w:.0f}" height="{h:.0f}" viewBox="{x0:.0f} '
            f'{y0:.0f} {w:.0f} {h:.0f}" role="img" aria-label="topology">{"".join(parts)}</svg>')


# -- ladder -------------------------------------------------------------------------------

GUTTER, GAP, TOP, STEP_ROW, ARROW_ROW, FOLD_ROW, SELF_W = 118, 250, 46, 24, 30, 26, 34


def _rows(ex: Exchange, frames: Mapping[int, Frame]) -> list[tuple]:
    """The ladder top to bottom: ("step", label), ("fold", count) and ("frame", number)."""
    at = {n: i for i, n in enumerate(ex.frames)}
    rows: list[tuple] = []
    prev, step = -1, ""
    for n in ex.drawn:
        i = at.get(n)
        if i is not None:
            if i > prev + 1:
                rows.append(("fold", i - prev - 1))
            prev = max(prev, i)
        f = frames.get(n)
        if f is not None and f.step and f.step != step:
            rows.append(("step", f.step))
            step = f.step
        rows.append(("frame", n))
    if ex.frames and prev < len(ex.frames) - 1:
        rows.append(("fold", len(ex.frames) - 1 - prev))
    return rows


def _arrow(n: int, f: Frame | None, xs: Mapping[str, float], y: float, c: str) -> str:
    if f is None:
        x = next(iter(xs.values()))
        return (f'<g class="arrow missing" data-frame="{n}" data-src="" data-dst="">'
                f"<title>frame {n}: not in the report</title>"
                f'<text x="{x + 8:.1f}" y="{y:.1f}" class="alabel">#{n} (not in the report)'
                f"</text></g>")
    x1, x2 = xs[f.src], xs[f.dst]  # a label may run past a short span: it has a halo
    tip = f"#{f.number} at {f.time:.3f} s  {f.src} → {f.dst}  ({f.length} B)\n{f.summary}"
    tip += f"\n{f.where}" if f.where else ""
    tip += f"\nnote: {f.note}" if f.note else ""
    note = f"  [{f.note}]" if f.note else ""
    cls = "arrow noted" if f.note else "arrow"
    if x1 == x2:  # to itself (or both ends outside the lanes): a small loop to the right
        line = (f'<path d="M{x1:.1f} {y - 6:.1f}h{SELF_W}v12h-{SELF_W - 6}" '
                f'stroke="{c}" fill="none"/>')
        head = f"{x1:.1f},{y + 6:.1f} {x1 + 8:.1f},{y + 2:.1f} {x1 + 8:.1f},{y + 10:.1f}"
        hit = f'<rect x="{x1:.1f}" y="{y - 12:.1f}" width="{SELF_W + 260}" height="24"/>'
        text = (f'<text x="{x1 + SELF_W + 6:.1f}" y="{y + 4:.1f}" class="alabel self">'
                f"{esc(clip(f.summary, 40 - len(note)) + note)}</text>")
    else:
        d = 1 if x2 > x1 else -1
        line = (f'<line x1="{x1:.1f}" y1="{y:.1f}" x2="{x2 - d * 10:.1f}" y2="{y:.1f}" '
                f'stroke="{c}"/>')
        head = f"{x2:.1f},{y:.1f} {x2 - d * 12:.1f},{y - 5.5:.1f} {x2 - d * 12:.1f},{y + 5.5:.1f}"
        hit = (f'<rect x="{min(x1, x2):.1f}" y="{y - 16:.1f}" width="{abs(x2 - x1):.1f}" '
               f'height="22"/>')
        room = max(int(abs(x2 - x1) / CHAR_W) - 2, 56) - len(note)
        text = (f'<text x="{(x1 + x2) / 2:.1f}" y="{y - 5:.1f}" class="alabel">'
                f"{esc(clip(f.summary, room) + note)}</text>")
    return (f'<g class="{cls}" data-frame="{f.number}" data-src="{esc(f.src)}" '
            f'data-dst="{esc(f.dst)}"><title>{esc(tip)}</title>{hit}{line}'
            f'<polygon points="{head}" fill="{c}"/>{text}'
            f'<text x="8" y="{y + 4:.1f}" class="anum">#{f.number}</text>'
            f'<text x="{GUTTER - 12}" y="{y + 4:.1f}" class="atime">{f.time:.3f}</text></g>')


def ladder(ex: Exchange, frames: Mapping[int, Frame]) -> str:
    """One exchange as a message sequence chart. A frame's end outside ``lanes`` gets an
    extra dashed lane (class ``extra-lane``) so the arrow still goes somewhere true."""
    lanes = list(dict.fromkeys(ex.lanes))
    extra = []
    for n in ex.drawn:
        f = frames.get(n)
        for end in (f.src, f.dst) if f else ():
            if end not in lanes and end not in extra:
                extra.append(end)
    every = lanes + extra or ["?"]
    xs = {name: GUTTER + GAP / 2 + i * GAP for i, name in enumerate(every)}
    width = GUTTER + len(every) * GAP + SELF_W + 40
    rows = _rows(ex, frames)
    c = colour(ex.family, FAMILY_COLOURS)
    body, y, shade = [], TOP, 0
    for kind, value in rows:
        if kind == "step":
            body.append(f'<g class="step"><rect x="0" y="{y + 2}" width="{width}" '
                        f'height="{STEP_ROW - 4}"/><text x="8" y="{y + 16}">step: '
                        f"{esc(clip(value, 90))}</text></g>")
            y += STEP_ROW
        elif kind == "fold":
            mid = y + FOLD_ROW / 2
            body.append(f'<g class="fold" data-folded="{value}"><line x1="{GUTTER}" '
                        f'y1="{mid}" x2="{width - 10}" y2="{mid}"/>'
                        f'<text x="{GUTTER + (width - GUTTER) / 2:.0f}" y="{mid + 4}">'
                        f"⋯ {value} frame{'s' if value != 1 else ''} folded ⋯</text></g>")
            y += FOLD_ROW
        else:
            if shade % 2:  # every other frame's row a shade darker: a row is easy to follow
                body.append(f'<rect class="band" x="0" y="{y}" width="{width}" '
                            f'height="{ARROW_ROW}"/>')
            shade += 1
            y += ARROW_ROW
            body.append(_arrow(value, frames.get(value), xs, y - 8, c))
    height = y + 16
    heads = []
    for name in every:
        x = xs[name]
        cls = "lane" if name in lanes else "extra-lane"
        heads.append(f'<g class="{cls}" data-lane="{esc(name)}"><title>{esc(name)}</title>'
                     f'<line x1="{x:.1f}" y1="{TOP - 12}" x2="{x:.1f}" y2="{height}"/>'
                     f'<rect x="{x - GAP / 2 + 10:.1f}" y="6" width="{GAP - 20}" height="24" '
                     f'rx="5"/><text x="{x:.1f}" y="22">{esc(clip(name, 26))}</text></g>')
    heads.append(f'<text x="8" y="22" class="anum">frame</text>'
                 f'<text x="{GUTTER - 12}" y="22" class="atime">time (s)</text>')
    return (f'<svg class="ladder" width="{width:.0f}" height="{height}" viewBox="0 0 '
            f'{width:.0f} {height}">{"".join(heads)}{"".join(body)}</svg>')
