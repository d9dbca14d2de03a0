"""A run's or a capture's report: topology, timeline, a ladder diagram per exchange.

``build`` makes the model (``model``) from a capture and, for a run, its result; ``render``
draws it as one self-contained HTML page (its SVG in ``svg``); ``write_report`` does both.
"""

from __future__ import annotations

from pathlib import Path

from .model import Report


def write_report(capture: str | Path, out: str | Path, result=None, **options) -> Report:
    """Build the report of ``capture`` (and ``result``, a RunResult), write it to ``out``."""
    from .build import build_report
    from .render import render

    report = build_report(capture, result, **options)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(report), encoding="utf-8")
    return report
