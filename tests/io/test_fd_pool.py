"""The shared descriptor pool: bounded, least recently used first, never closing one in use."""

from __future__ import annotations

import os

import pytest

from dora_diag.errors import InputError
from dora_diag.io.fd_pool import FdPool, default_limit


@pytest.fixture
def files(tmp_path):
    paths = []
    for i in range(6):
        p = tmp_path / f"f{i}"
        p.write_bytes(bytes([i]) * 4)
        paths.append(str(p))
    return paths


def _read(pool: FdPool, path: str) -> bytes:
    with pool.fd(path) as fd:
        return os.pread(fd, 1, 0)


def test_at_most_limit_idle_descriptors_stay_open(files):
    pool = FdPool(limit=3)
    for i, p in enumerate(files):
        assert _read(pool, p) == bytes([i])
        assert pool.open_count() <= 3
    assert _read(pool, files[0]) == b"\x00"   # evicted earlier, reopened


def test_descriptors_in_use_are_never_closed(files):
    pool = FdPool(limit=2)
    with pool.fd(files[0]) as a, pool.fd(files[1]) as b, pool.fd(files[2]) as c:
        assert [os.pread(fd, 1, 0) for fd in (a, b, c)] == [b"\x00", b"\x01", b"\x02"]
        assert pool.open_count() == 3   # over the limit only while that many reads run
    _read(pool, files[3])
    assert pool.open_count() == 2


def test_least_recently_used_goes_first(files):
    pool = FdPool(limit=2)
    _read(pool, files[0])
    _read(pool, files[1])
    _read(pool, files[0])       # now files[1] is the oldest
    _read(pool, files[2])
    assert set(pool._open) == {files[0], files[2]}


def test_close_releases_a_readers_files(files):
    pool = FdPool(limit=8)
    for p in files[:3]:
        _read(pool, p)
    pool.close({files[0], files[1]})
    assert set(pool._open) == {files[2]}


def test_an_unopenable_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="missing: cannot open"):
        _read(FdPool(limit=2), str(tmp_path / "missing"))


def test_the_default_limit_follows_the_process_limit(monkeypatch):
    import resource

    monkeypatch.setattr(resource, "getrlimit", lambda what: (128, 4096))
    assert default_limit() == 32
    monkeypatch.setattr(resource, "getrlimit", lambda what: (16, 4096))
    assert default_limit() == 8
