"""Every block device an i2o test opens is closed after it: a hypothesis test opens a rig per
example, and file descriptors left open push later tests' past select()'s limit of 1024."""

from __future__ import annotations

import pytest

from ftsslab.i2o.blockdev import FileBlockDevice


@pytest.fixture(autouse=True)
def _closed_block_devices(monkeypatch):
    opened: list[FileBlockDevice] = []
    init = FileBlockDevice.__init__

    def tracked(self, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        opened.append(self)

    monkeypatch.setattr(FileBlockDevice, "__init__", tracked)
    yield
    for dev in opened:
        dev.close()
