"""The benchmark and the demo run, and say something true."""

import importlib.util
from pathlib import Path

import pytest

from ftsslab import demo

ROOT = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("parse_speed", ROOT / "bench" / "parse_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fast_parsers_handle_every_reference_frame_the_bench_feeds_them():
    rows = {r["family"]: r for r in load_bench().run(seconds=0.001)}
    assert set(rows) == {"fc", "ftss", "xap", "tch", "roce", "i2o"}
    for family, row in rows.items():
        # the one exception: fast.fc handles untagged frames only (the 802.1Q reference frame)
        assert row["fast_unparsed"] == (1 if family == "fc" else 0), row


@pytest.mark.tshark
def test_demo_writes_a_capture_that_tshark_accepts(tmp_path, capsys):
    assert demo.main(tmp_path) == 0
    assert (tmp_path / "demo.pcapng").stat().st_size > 0
    out = capsys.readouterr().out
    assert "STORED_GUARANTEED" in out
    assert "what tshark" in out and out.count("good") == 2  # tshark checked both FC CRCs
