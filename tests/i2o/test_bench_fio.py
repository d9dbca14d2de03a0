"""bench/i2o_fio.py runs in its --quick mode on a veth lab: fio verified its writes through
NBD -> I2O on the SAN and on the device file, and every figure is there and positive."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "i2o_fio.py"
pytestmark = [pytest.mark.root,
              pytest.mark.skipif(shutil.which("fio") is None or shutil.which("nbdkit") is None,
                                 reason="fio and nbdkit are not installed")]


def test_quick_fio_bench_reports_both_paths_and_their_ratio():
    out = subprocess.run([sys.executable, str(BENCH), "--quick", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout)
    for path in ("nbd", "file", "ratio"):
        assert set(res[path]) == {"read", "write"}, res
        for figures in res[path].values():
            assert all(figures[k] > 0 for k in ("iops", "mb_s", "p50_us")), (path, figures)
    assert res["ratio"]["read"]["iops"] == pytest.approx(
        res["nbd"]["read"]["iops"] / res["file"]["read"]["iops"])
