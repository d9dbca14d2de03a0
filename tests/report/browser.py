"""Headless Chromium for the report's browser checks: the DOM after the page's JS ran, and a
screenshot to look at. Not a test itself; a test skips (or, under CI, fails) without chromium."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

TIMEOUT = 60  # a cold chromium start on a loaded box takes seconds, not a minute
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=2000")


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(*args: str) -> str:
    binary = chromium_binary()
    if binary is None:
        raise RuntimeError("no chromium on PATH (apt-get install chromium)")
    res = subprocess.run([binary, *FLAGS, *args], capture_output=True, text=True,
                         timeout=TIMEOUT)
    if res.returncode != 0:
        raise RuntimeError(f"chromium exited {res.returncode}: {res.stderr.strip()[-2000:]}")
    return res.stdout


def dump_dom(html_path: str | Path) -> str:
    """The DOM as serialized after the scripts ran (the page sets ``data-ready="1"``)."""
    return _run("--dump-dom", Path(html_path).resolve().as_uri())


def screenshot(html_path: str | Path, png_path: str | Path, width: int = 1280,
               height: int = 900) -> Path:
    png = Path(png_path).resolve()
    _run(f"--screenshot={png}", f"--window-size={width},{height}", "--hide-scrollbars",
         Path(html_path).resolve().as_uri())
    if not png.exists():
        raise RuntimeError(f"chromium exited 0 but wrote no {png}")
    return png
