"""`ftsslab wireshark install` puts the plugin where tshark finds it; every registration shows."""

import os
import subprocess

import pytest

from ftsslab.wireshark import lua_scripts
from tests.support import ftsslab

from .oracle import TSHARK, lua_stderr

pytestmark = pytest.mark.tshark

# (table, selector) -> the ftsslab protocol expected there, from `tshark -G decodes`
REGISTRATIONS = {
    ("fc.ftype", "0"): "ftss",
    ("tcp.option", "253"): "xap",
    ("tcp.option", "254"): "tch",
    ("tcp.option", "255"): "tch",
    ("ip.option", "158"): "xap",
    ("udp.port", "5016"): "xap",
    ("udp.port", "4494"): "tch",
    ("udp.port", "4497"): "clusterstatus",
    ("udp.port", "49122"): "i2o",
}
HEURISTICS = {"infiniband.payload": {"rkey", "i2o"}}


def tshark_report(home, report):
    res = subprocess.run(
        [TSHARK, "-G", report],
        capture_output=True,
        text=True,
        env=dict(os.environ, HOME=str(home)),
        timeout=120,
    )
    assert lua_stderr(res.stderr) == "", res.stderr
    return [line.split("\t") for line in res.stdout.splitlines()]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    first = ftsslab("wireshark", "install", HOME=str(home))
    assert first.returncode == 0, first.stderr
    folder = home / ".local" / "lib" / "wireshark" / "plugins" / "ftsslab"
    installed = {p.name: p.read_bytes() for p in folder.glob("*.lua")}
    (folder / "stale.lua").write_text("-- a file an older ftsslab installed")
    again = ftsslab("wireshark", "install", HOME=str(home))
    assert again.returncode == 0, again.stderr
    assert {p.name: p.read_bytes() for p in folder.glob("*.lua")} == installed  # idempotent
    return home


def test_install_goes_to_the_folder_path_reports(home):
    folder = ftsslab("wireshark", "path", HOME=str(home)).stdout.strip()
    assert folder == str(home / ".local" / "lib" / "wireshark" / "plugins" / "ftsslab")
    assert sorted(p.name for p in (home / folder).glob("*.lua")) == sorted(
        p.name for p in lua_scripts()
    )
    assert {p.stem for p in lua_scripts()} == {"ftss", "xap", "tch", "roce", "i2o", "cluster"}


def test_tshark_lists_every_registration(home):
    decodes = {(row[0], row[1]): row[2] for row in tshark_report(home, "decodes") if len(row) >= 3}
    for key, family in REGISTRATIONS.items():
        assert key in decodes, f"{key} not registered"
        assert family in decodes[key].lower(), f"{key} -> {decodes[key]}, expected {family}"


def test_tshark_lists_the_roce_payload_heuristics(home):
    rows = tshark_report(home, "heuristic-decodes")
    for table, families in HEURISTICS.items():
        names = " ".join(row[1].lower() for row in rows if row[0] == table)
        for family in families:
            assert family in names, f"no {family} heuristic on {table}: {names}"
