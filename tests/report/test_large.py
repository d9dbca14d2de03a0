"""A 100,000-frame capture renders within the issue's bound, and says what it folded."""

from __future__ import annotations

import time

from ftsslab.report import write_report
from tests.support import load_bench

FRAMES = 100_000
BOUND = 5.0  # seconds of CPU: the box's load slows the wall clock, not this
TRIES = 3  # ... but a shared box's neighbours still cost it cache and steal time


def test_a_100k_frame_capture_renders_in_under_5_s_of_cpu(tmp_path):
    """The least CPU of up to three renders: the noise of a loaded machine only adds to the
    work, so the minimum is the fair reading of what rendering costs."""
    cap, html = tmp_path / "big.pcapng", tmp_path / "big.html"
    load_bench("report_speed").write_capture(cap, FRAMES)
    spent = []
    for _ in range(TRIES):
        start = time.process_time()
        report = write_report(cap, html)
        spent.append(time.process_time() - start)
        if spent[-1] < BOUND:
            break
    assert report.total_frames == FRAMES
    assert min(spent) < BOUND, f"{', '.join(f'{s:.2f}' for s in spent)} s of CPU"
    counted = sum(c.frames for c in report.undissected)
    assert counted == FRAMES - report.dissected_frames > 0
    text = html.read_text()
    assert f"{FRAMES - report.dissected_frames:,}" in text  # the header says what it left out
    assert text.count('class="arrow"') == len(report.frames) <= 3000
    assert html.stat().st_size < 20e6
