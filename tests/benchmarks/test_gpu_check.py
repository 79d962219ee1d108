"""benchmarks/gpu_check.sh, the one command for a GPU machine, refuses plainly where torch sees no GPU."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the script would run the whole check")
def test_without_a_gpu_it_says_so_in_one_line_and_exits_2():
    bin_dir = str(Path(sys.executable).parent)   # the script runs `python`: this environment's
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=120,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["gpu_check: torch sees no CUDA device here (CPU build of torch, or no GPU)"]
    assert done.stdout == ""
