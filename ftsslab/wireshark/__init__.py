"""ftsslab's Wireshark plugin: Lua dissectors for every format Wireshark does not know.

The Lua files live in ``lua/`` beside this module; ``install`` copies them into
the user's personal Lua plugin folder, which tshark itself reports.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

LUA_DIR = Path(__file__).with_name("lua")
PLUGIN_SUBDIR = "ftsslab"


def lua_scripts() -> list[Path]:
    """The plugin's Lua files, in load order (names sort by family)."""
    return sorted(LUA_DIR.glob("*.lua"))


def personal_plugin_dir() -> Path:
    """Wireshark's "Personal Lua Plugins" folder, as ``tshark -G folders`` reports it."""
    tshark = shutil.which("tshark")
    if tshark:
        res = subprocess.run([tshark, "-G", "folders"], capture_output=True, text=True, check=False)
        for line in res.stdout.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Personal Lua Plugins" and value.strip():
                return Path(value.strip())
    return Path.home() / ".local" / "lib" / "wireshark" / "plugins"


def install(dest: Path | None = None) -> tuple[Path, list[Path]]:
    """Copy the Lua files into ``dest/ftsslab`` (default: the personal plugin folder).

    Idempotent: files are rewritten with the same content, stale ftsslab files removed.
    """
    target = (dest or personal_plugin_dir()) / PLUGIN_SUBDIR
    target.mkdir(parents=True, exist_ok=True)
    wanted = {p.name for p in lua_scripts()}
    for old in target.glob("*.lua"):
        if old.name not in wanted:
            old.unlink()
    written = []
    for script in lua_scripts():
        out = target / script.name
        if not out.exists() or out.read_bytes() != script.read_bytes():
            shutil.copyfile(script, out)
        written.append(out)
    return target, written
