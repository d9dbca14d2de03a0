"""A Report as one self-contained HTML page: inline CSS, inline SVG, a little vanilla JS, and
every frame's field tree and bytes in one JSON blob the JS reads on click.

Self-contained because a report is mailed, attached to a CI run and opened offline; the SVG is
built in ``svg`` (plain strings, thousands of arrows) and passed to the template as Markup.
"""

from __future__ import annotations

import json
from functools import cache

import jinja2
from markupsafe import Markup

from ftsslab.report import svg
from ftsslab.report.model import Frame, Moment, Report

OPEN_EXCHANGES = 20  # the first ones open; the rest closed, so hundreds stay usable


@cache
def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("ftsslab.report", "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["seconds"] = svg.seconds
    env.globals["family_colour"] = lambda f: svg.colour(f, svg.FAMILY_COLOURS)
    return env


def frames_json(frames: dict[int, Frame]) -> str:
    """The click-through data, safe inside ``<script>``: every ``<``, ``>`` and ``&`` as a
    JSON \\u escape, so no ``</script>`` or ``<!--`` from a capture can end or bend the
    element (a plain ``</`` replacement misses ``<!--<script>``), and json.loads reads it."""
    blob = {str(n): {"summary": f.summary, "where": f.where, "time": f.time, "src": f.src,
                     "dst": f.dst, "length": f.length, "step": f.step, "note": f.note,
                     "layers": [[layer.name, [list(kv) for kv in layer.fields]]
                                for layer in f.layers],
                     "hex": f.data.hex()}
            for n, f in frames.items()}
    text = json.dumps(blob, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def ordered(timeline: list[Moment]) -> list[Moment]:
    """By time, stable; a verdict checked at the end (time None) after everything else."""
    return sorted(timeline, key=lambda m: (m.time is None, m.time or 0.0))


def render(report: Report) -> str:
    exchanges = [(ex, Markup(svg.ladder(ex, report.frames))) for ex in report.exchanges]
    return _env().get_template("report.html.j2").render(
        r=report,
        topology=Markup(svg.topology(report.topology)),
        timeline=ordered(report.timeline),
        exchanges=exchanges,
        open_exchanges=OPEN_EXCHANGES,
        drawn=sum(len(ex.drawn) for ex in report.exchanges),
        frames_json=Markup(frames_json(report.frames)),
    )
