"""`ftsslab i2o` on a lab `lab up` left running (scenarios/i2o-export.yaml): `ls` shows what
the host advertises (not its private IOP), `attach` opens a service connection or exits 1 when
refused, `export` gives an NBD URI that real nbdinfo and nbdcopy use; wrong names exit 2."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import pytest

from tests.san.test_perftest_cli import ROOT, ftsslab

pytestmark = [pytest.mark.root]


@pytest.fixture(scope="module")
def lab_id():
    up = ftsslab("lab", "up", str(ROOT / "scenarios" / "i2o-export.yaml"))
    assert up.returncode == 0, up.stderr
    lab = up.stdout.split()[1]
    yield lab
    ftsslab("lab", "down", "--lab", lab)


def test_ls_lists_what_the_host_advertises(lab_id):
    got = ftsslab("i2o", "ls", "r1", "--lab", lab_id, "--json")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == {"host": "h", "iops": [
        {"iop": "p0", "iop_id": 2, "tids": ["0x10", "0x11"]},
        {"iop": "p1", "iop_id": 3, "tids": ["0x10", "0x11"]}]}
    table = ftsslab("i2o", "ls", "r2", "--lab", lab_id)
    assert "h advertises to r2" in table.stdout
    assert "not advertised to r2 (private, down or not allowed): p0, p2" in table.stdout


def test_attach_connects_or_exits_1(lab_id):
    ok = ftsslab("i2o", "attach", "r2", "p1", "--lab", lab_id, "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["status"] == "OK", ok.stdout
    for iop, status in (("p2", "IOP_UNAVAILABLE"), ("p0", "REFUSED")):  # private; r1's only
        refused = ftsslab("i2o", "attach", "r2", iop, "--lab", lab_id)
        assert refused.returncode == 1 and status in refused.stdout, refused.stdout


@pytest.mark.skipif(shutil.which("nbdcopy") is None, reason="libnbd-bin is not installed")
def test_export_serves_real_nbd_clients(lab_id, tmp_path):
    got = ftsslab("i2o", "export", "r1", "p1", "--device", "1", "--lab", lab_id, "--json")
    assert got.returncode == 0, got.stdout + got.stderr
    uri = json.loads(got.stdout)["uri"]
    size = subprocess.run(["nbdinfo", "--size", uri], capture_output=True, text=True,
                          timeout=60)
    assert size.stdout.strip() == str(4 << 20), size.stderr
    image = tmp_path / "in.img"
    image.write_bytes(hashlib.sha256(b"i2o").digest() * (1 << 15))  # 1 MiB
    out = tmp_path / "out.img"
    for src, dst in ((str(image), uri), (uri, str(out))):
        subprocess.run(["nbdcopy", src, dst], check=True, timeout=120)
    assert out.read_bytes()[:1 << 20] == image.read_bytes()
    again = ftsslab("i2o", "export", "r1", "p0", "--lab", lab_id)
    assert again.returncode == 2 and "already exporting" in again.stdout + again.stderr


def test_wrong_names_exit_2(lab_id):
    for args, words in ((("ls", "h"), "not i2o-remote"), (("attach", "r1", "p9"), "no IOP 'p9'"),
                        (("export", "r1", "p0", "--device", "5"), "has 2 devices"),
                        (("ls", "zz"), "no node 'zz'")):
        got = ftsslab("i2o", *args, "--lab", lab_id)
        assert got.returncode == 2 and words in got.stdout + got.stderr, got.stdout + got.stderr
