# SPDX-License-Identifier: GPL-2.0-or-later
"""Volumes (safe paths, atomic uploads), the in-memory catalog and the virtual root directory."""

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ftsslab.nas.volume import (
    FileInfo,
    MemoryCatalog,
    RootDirectory,
    Volume,
    VolumeError,
    canonical_path,
)


@pytest.mark.parametrize(("target", "path"), [
    ("/", "/"),
    ("/a/b", "/a/b"),
    ("/a/%62//./c?q=1#frag", "/a/b/c"),
    ("/d1/", "/d1/"),
    ("//", "/"),
    ("/%C3%A9t%C3%A9", "/été"),
    ("/a%2Fb", "/a/b"),  # decoded first: %2F is a separator like any other
    ("a/b", None),
    ("", None),
    ("/%zz", None),
    ("/%2", None),
    ("/x%", None),
    ("/%ff", None),  # not UTF-8
    ("/a%00b", None),
    ("/../etc/passwd", None),
    ("/a/%2e%2e/%2e%2e/b", None),
    ("/a/../b", None),
    ("/\ud800", None),  # a lone surrogate is no UTF-8
])
def test_canonical_path(target, path):
    assert canonical_path(target) == path


@given(st.text(st.characters(categories=["Cs", "L", "N", "P", "S", "Z", "Cc"])))
def test_canonical_path_is_total_and_a_fixed_point(target):
    path = canonical_path(target)
    if path is not None:
        assert path.startswith("/") and ".." not in path.split("/")
        # a canonical path has no escapes left to decode unless it names a literal '%'
        if "%" not in path:
            assert canonical_path(path) == path


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "vol"
    (root / "d1").mkdir(parents=True)
    (root / "d1" / "f").write_bytes(b"0123456789")
    (root / "d1" / ".hidden").write_bytes(b"secret")
    (tmp_path / "outside").write_bytes(b"outside")
    (tmp_path / "outdir").mkdir()
    (tmp_path / "outdir" / "g").write_bytes(b"g")
    os.symlink(root / "d1" / "f", root / "d1" / "link-in")
    os.symlink(tmp_path / "outside", root / "d1" / "link-out")
    os.symlink(tmp_path / "outdir", root / "outdir")
    return root


def test_volume_stat_regular_files_only(tree):
    vol = Volume(tree)
    st_ = os.stat(tree / "d1" / "f")
    info = vol.stat("/d1/f")
    assert info == FileInfo("/d1/f", 10, st_.st_mtime_ns, f'"a-{st_.st_mtime_ns:x}"')
    assert vol.stat("/d1/link-in").size == 10  # a symlink inside the root is followed
    for path in ("/d1", "/d1/", "/", "/d1/missing", "/d1/.hidden", "/d1/link-out", "/outdir/g",
                 "/d1/../d1/f", "/d1//f", "d1/f", ""):
        assert vol.stat(path) is None, path


def test_volume_read(tree):
    vol = Volume(tree)
    assert vol.read("/d1/f", 2, 3) == b"234"
    assert vol.read("/d1/f", 8, 100) == b"89"
    assert vol.read("/d1/f", 10, 5) == b""
    for path in ("/d1/missing", "/d1/link-out", "/d1/.hidden"):
        with pytest.raises(VolumeError):
            vol.read(path, 0, 1)


def test_volume_is_a_directory(tmp_path):
    with pytest.raises(VolumeError):
        Volume(tmp_path / "nope")


def test_upload_is_invisible_until_commit(tree):
    vol = Volume(tree)
    up = vol.open_upload("/d1/new")
    up.write(5, b"56789")  # out of order, as a resumed upload writes
    up.write(0, b"01234")
    assert up.read(0, 10) == b"0123456789"
    assert vol.stat("/d1/new") is None
    assert not (tree / "d1" / "new").exists()
    temps = [p.name for p in (tree / "d1").iterdir() if p.name.startswith(".upload-")]
    assert len(temps) == 1 and vol.stat(f"/d1/{temps[0]}") is None
    up.commit()
    assert (tree / "d1" / "new").read_bytes() == b"0123456789"
    assert vol.stat("/d1/new").size == 10
    assert not [p for p in (tree / "d1").iterdir() if p.name.startswith(".upload-")]
    with pytest.raises(VolumeError):
        up.write(0, b"x")


def test_upload_replaces_and_abort_leaves_nothing(tree):
    vol = Volume(tree)
    up = vol.open_upload("/d1/f")
    up.write(0, b"new")
    up.abort()
    up.abort()  # idempotent
    assert (tree / "d1" / "f").read_bytes() == b"0123456789"
    assert sorted(p.name for p in (tree / "d1").iterdir()) == [".hidden", "f", "link-in",
                                                                "link-out"]
    up = vol.open_upload("/d1/f")
    up.write(0, b"new")
    up.commit()
    assert vol.read("/d1/f", 0, 100) == b"new"


@pytest.mark.parametrize("path", ["/d1/nodir/x", "/outdir/x", "/d1/.x", "/d1", "/d1/", "/",
                                  "/d1/../x"])
def test_upload_refuses_unsafe_targets(tree, path):
    with pytest.raises(VolumeError):
        Volume(tree).open_upload(path)
    assert not (tree.parent / "outdir" / "x").exists()


def test_memory_catalog():
    cat = MemoryCatalog({"/a/f": b"0123456789"}, mtime_ns=7)
    assert cat.stat("/a/f") == FileInfo("/a/f", 10, 7, '"84d89877f0d4041e"')
    assert cat.stat("/a/g") is None and cat.get("/a/g") is None
    assert cat.read("/a/f", 3, 2) == b"34"
    with pytest.raises(VolumeError):
        cat.read("/a/g", 0, 1)
    up = cat.open_upload("/a/g")
    up.write(2, b"cd")
    up.write(0, b"ab")
    assert cat.stat("/a/g") is None and up.read(1, 2) == b"bc"
    up.commit()
    assert cat.get("/a/g") == b"abcd"
    # equal content, equal tag: a replica in another catalog can resume a response
    assert MemoryCatalog({"/x": b"abcd"}).stat("/x").etag == cat.stat("/a/g").etag
    aborted = cat.open_upload("/a/h")
    aborted.write(0, b"x")
    aborted.abort()
    assert cat.get("/a/h") is None
    for bad in ("a", "/a/", "/.x", "/a/../b"):
        with pytest.raises(VolumeError):
            cat.open_upload(bad)
    with pytest.raises(VolumeError):
        MemoryCatalog({"/a/": b""})


def test_root_directory_longest_prefix():
    root = RootDirectory({"/d1/": "d1", "/d2/": "d2", "/d2/hot/": "d3", "/": "d9"}, version=4)
    assert root.owner("/d1/f") == "d1"
    assert root.owner("/d2/f") == "d2"
    assert root.owner("/d2/hot/f") == "d3"
    assert root.owner("/d2") == "d9"
    assert root.owner("/other") == "d9"
    assert RootDirectory({"/d1/": "d1"}).owner("/d2/f") is None
    assert root.version == 4 and root.prefixes["/d2/hot/"] == "d3"
    newer = root.updated({"/d1/": "d2"})
    assert newer.version == 5 and newer.owner("/d1/x") == "d2"


def test_root_directory_rejects_bad_entries():
    for prefixes in ({"d1/": "d1"}, {"/d1/": ""}, {"/d1/": "d\n1"}, {"/" + "x" * 255: "d"}):
        with pytest.raises(ValueError):
            RootDirectory(prefixes)
    with pytest.raises(ValueError):
        RootDirectory({}, version=-1)


_prefix = st.text(st.characters(codec="utf-8", categories=("L", "N", "P")), max_size=20).map(
    lambda s: "/" + s)
_device = st.text(st.characters(codec="utf-8", categories=("L", "N")), min_size=1, max_size=10)


@given(st.dictionaries(_prefix, _device, max_size=8), st.integers(0, 2**64 - 1))
def test_root_directory_round_trip(prefixes, version):
    root = RootDirectory(prefixes, version)
    data = root.to_bytes()
    assert RootDirectory.from_bytes(data) == root
    assert RootDirectory.from_bytes(data + b"\x00") is None
    for n in range(len(data)):
        assert RootDirectory.from_bytes(data[:n]) is None


def test_root_directory_encoding_is_fixed():
    data = RootDirectory({"/d2/": "d2", "/d1/": "d1"}, version=3).to_bytes()
    assert data == b"RD\x01" + (3).to_bytes(8, "big") + b"\x00\x02" \
        + b"\x04/d1/\x02d1\x04/d2/\x02d2"


@given(st.binary(max_size=200))
def test_root_directory_from_garbage_never_raises(data):
    root = RootDirectory.from_bytes(data)
    assert root is None or isinstance(root, RootDirectory)


@given(st.binary(min_size=1, max_size=40))
def test_root_directory_from_damaged_encoding(noise):
    good = RootDirectory({"/d1/": "d1", "/d2/": "d2"}, version=9).to_bytes()
    damaged = good[:len(good) // 2] + noise
    root = RootDirectory.from_bytes(damaged)
    assert root is None or isinstance(root, RootDirectory)
