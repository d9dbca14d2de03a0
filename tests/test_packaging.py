"""`layers/` is importable as `ftsslab.layers` from the editable install and from a built wheel."""

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = "import ftsslab.layers as l, ftsslab.cli; print(l.__file__); print(len(l.MODULES))"


def probe(python, cwd) -> tuple[str, str]:
    res = subprocess.run([str(python), "-c", PROBE], cwd=cwd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    path, count = res.stdout.split()
    return path, count


def test_editable_install_imports_layers_from_repo(tmp_path):
    path, count = probe(sys.executable, tmp_path)
    assert Path(path) == ROOT / "layers" / "__init__.py"
    assert int(count) == 7


@pytest.mark.slow
def test_wheel_in_fresh_venv_imports_layers(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
        ],
        check=True,
    )
    (wheel,) = wheels.glob("ftsslab-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # Dependencies (scapy, rich, typer, yaml) come from our venv by a plain path entry: .pth files
    # there (our editable finder) are not processed, so only the wheel can provide ftsslab.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(py),
            "install",
            "-q",
            "--no-deps",
            str(wheel),
        ],
        check=True,
    )
    path, count = probe(py, tmp_path)
    assert Path(path) == site / "ftsslab" / "layers" / "__init__.py"
    assert int(count) == 7


def test_every_package_of_the_source_tree_is_in_the_wheel():
    """setuptools takes the packages pyproject.toml lists, no more: a new folder left out
    would import from a checkout and be missing from an install."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {".".join(("ftsslab", *p.parent.relative_to(ROOT / "ftsslab").parts))
             for p in (ROOT / "ftsslab").rglob("__init__.py")} | {"ftsslab.layers"}
    assert listed == found
