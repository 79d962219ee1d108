"""Ctrl-C (exit 130) and SIGTERM (exit 143): one line, and no partial or temporary output files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_helpers import call


def _has_open(pid: int, path: Path) -> bool:
    fds = Path(f"/proc/{pid}/fd")
    try:
        return any(os.path.realpath(fd) == str(path.resolve()) for fd in fds.iterdir())
    except OSError:   # the process exited, or a descriptor closed while we looked
        return False


STOPS = {"SIGINT": (signal.SIGINT, 130, "dora-diag: interrupted; no partial output files were left behind"),
         "SIGTERM": (signal.SIGTERM, 143, "dora-diag: terminated (SIGTERM); no partial output files were left behind")}


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see when streaming starts")
@pytest.mark.parametrize("stop", list(STOPS))
def test_a_signal_mid_run_exits_with_its_code_and_leaves_no_files(stop, make_pair, tmp_path):
    sig, exit_code, message = STOPS[stop]
    # 8 layers x 4 modules x 512 rows, streamed one row per block: a second or more of work.
    b, f, _, _ = make_pair(layers=8, out=512, inp=64, modules=("q_proj", "k_proj", "v_proj", "o_proj"))
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dora_diag", "compare", str(b), str(f), "--block-mb", "0.0002",
         "--csv", str(out / "t.csv"), "--json", str(out / "s.json"), "--out", str(out / "r.html")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # A job started in the background by a non-interactive shell inherits SIGINT ignored;
        # Python then installs no handler and Ctrl-C would do nothing at all.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not _has_open(proc.pid, f / "model.safetensors"):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "streaming never started"
            time.sleep(0.02)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == exit_code, err
    assert [line for line in err.splitlines() if line.strip()] == [message]
    assert list(out.iterdir()) == []


def test_interrupt_while_writing_leaves_no_temp_file(make_pair, tmp_path, capsys, monkeypatch):
    b, f, _, _ = make_pair(layers=2, out=8, inp=16)
    out = tmp_path / "out"
    out.mkdir()

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    code, _, err = call(capsys, "compare", str(b), str(f), "-q", "--csv", str(out / "t.csv"))
    assert code == 130 and "interrupted" in err and "Traceback" not in err
    assert list(out.iterdir()) == []
