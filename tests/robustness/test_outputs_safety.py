"""Issue 13, causes 3 and 6: outputs never destroy inputs or each other, SIGTERM cleans up like
Ctrl-C, and every operating-system error on a user's path is exit 2 with the path and reason."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
from pathlib import Path

import pytest

from cli_helpers import assert_one_line_error, call


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def pair(make_pair, tmp_path):
    b, f, _, _ = make_pair(layers=2, out=8, inp=16)
    (tmp_path / "out").mkdir()
    return b, f


def _link_into_ft(tmp: Path, b: Path, f: Path) -> list[str]:
    (tmp / "out" / "link").symlink_to(f)
    return ["--csv", str(tmp / "out" / "link" / "table.csv")]


def _symlinked_output(tmp: Path, b: Path, f: Path) -> list[str]:
    (tmp / "out" / "t.csv").symlink_to(f / "model.safetensors")
    return ["--csv", str(tmp / "out" / "t.csv")]


DESTRUCTIVE = {
    "--csv is the fine-tuned checkpoint": (lambda tmp, b, f: ["--csv", str(f / "model.safetensors")], "--csv would write into the input"),
    "--json is the base config": (lambda tmp, b, f: ["--json", str(b / "config.json")], "--json would write into the input"),
    "--out inside the base": (lambda tmp, b, f: ["--out", str(b / "report.html")], "--out would write into the input"),
    "through a relative path": (lambda tmp, b, f: ["--csv", os.path.relpath(f / "model.safetensors")], "would write into"),
    "through a symlinked directory": (_link_into_ft, "--csv would write into the input"),
    "a symlink to an input": (_symlinked_output, "--csv would write into the input"),
    "--csv X --json X": (lambda tmp, b, f: ["--csv", str(tmp / "out" / "x"), "--json", str(tmp / "out" / "x")],
                         "--csv and --json name the same file"),
    "--csv X --out ./X": (lambda tmp, b, f: ["--csv", str(tmp / "out" / "x"), "--out", str(tmp / "out" / "." / "x")],
                          "--out and --csv name the same file"),
}


@pytest.mark.parametrize("case", list(DESTRUCTIVE))
def test_outputs_that_would_destroy_an_input_or_each_other_are_refused(case, pair, tmp_path, capsys):
    make, message = DESTRUCTIVE[case]
    b, f = pair
    args = make(tmp_path, b, f)
    before = _digest(tmp_path)
    code, _, err = call(capsys, "compare", str(b), str(f), "-q", *args)
    assert_one_line_error(code, err, message)
    assert _digest(tmp_path) == before


def test_check_refuses_an_output_inside_its_run(pair, tmp_path, capsys):
    b, f = pair
    code, _, err = call(capsys, "check", str(b), f"LoRA={f}", "-q", "--json", str(f / "config.json"))
    assert_one_line_error(code, err, "--json would write into the input")


def test_an_output_beside_a_single_file_input_is_allowed_unless_read(pair, tmp_path, capsys):
    b, f = pair
    code, _, err = call(capsys, "compare", str(b / "model.safetensors"), str(f / "model.safetensors"), "-q",
                        "--csv", str(b / "table.csv"))
    assert code == 0, err
    code, _, err = call(capsys, "compare", str(b / "model.safetensors"), str(f), "-q", "--json", str(b / "config.json"))
    assert_one_line_error(code, err, "config.json: --json would write into the input")


def test_sigterm_while_writing_removes_the_temp_file(pair, tmp_path, capsys, monkeypatch):
    b, f = pair
    real_replace = os.replace

    def terminated_during_rename(src, dst):
        os.kill(os.getpid(), signal.SIGTERM)   # the handler raises before the rename happens
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", terminated_during_rename)
    before = signal.getsignal(signal.SIGTERM)   # SIG_DFL, or whatever an earlier ray.init() installed
    code, _, err = call(capsys, "compare", str(b), str(f), "-q", "--out", str(tmp_path / "out" / "r.html"))
    assert code == 143 and "terminated" in err, err
    assert list((tmp_path / "out").iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is before   # restored after the run


def test_disk_full_on_an_output_keeps_the_earlier_file(pair, tmp_path, capsys, monkeypatch):
    b, f = pair
    csv = tmp_path / "out" / "t.csv"
    csv.write_text("earlier\n")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    code, _, err = call(capsys, "compare", str(b), str(f), "-q", "--csv", str(csv))
    assert_one_line_error(code, err, "t.csv: cannot write (No space left on device); the file was left as it was")
    assert csv.read_text() == "earlier\n" and sorted(p.name for p in csv.parent.iterdir()) == ["t.csv"]


LONG = "x" * 300


def _unreadable(tmp: Path, b: Path, f: Path, monkeypatch) -> list[str]:
    """A directory that cannot be listed (mode 000; simulated, tests may run as root)."""
    real = os.listdir

    def listdir(path="."):
        if Path(path) == f:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path)

    monkeypatch.setattr(os, "listdir", listdir)
    return [str(b), str(f)]


OS_ERRORS = {
    "300-character base name": (lambda tmp, b, f, mp: [str(tmp / LONG), str(f)], "File name too long"),
    "300-character fine-tuned name": (lambda tmp, b, f, mp: [str(b), f"L={tmp / LONG}"], "File name too long"),
    "300-character output": (lambda tmp, b, f, mp: [str(b), str(f), "--csv", str(tmp / "out" / LONG)],
                             "File name too long"),
    "output under a 300-character directory": (
        lambda tmp, b, f, mp: [str(b), str(f), "--csv", str(tmp / LONG / "t.csv")], "File name too long"),
    "unlistable fine-tuned directory": (_unreadable, "Permission denied"),
}


@pytest.mark.parametrize("case", list(OS_ERRORS))
def test_os_errors_on_user_paths_exit_2_with_the_reason(case, pair, tmp_path, capsys, monkeypatch):
    make, message = OS_ERRORS[case]
    b, f = pair
    code, _, err = call(capsys, "compare", *make(tmp_path, b, f, monkeypatch), "-q")
    assert_one_line_error(code, err, message)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode-000 directory")
def test_mode_000_directory(pair, tmp_path, capsys):
    b, f = pair
    f.chmod(0)
    try:
        code, _, err = call(capsys, "compare", str(b), str(f), "-q")
    finally:
        f.chmod(0o755)
    assert_one_line_error(code, err, "Permission denied")


def test_verify_refuses_an_output_inside_its_inputs(pair, tmp_path, capsys):
    b, f = pair
    before = _digest(tmp_path)
    code, _, err = call(capsys, "verify", str(b), str(f), "--json", str(f / "config.json"))
    assert_one_line_error(code, err, "--json would write into the input")
    assert _digest(tmp_path) == before
