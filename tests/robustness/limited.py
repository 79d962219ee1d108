"""``dora-diag`` in a child process under resource limits (importable as ``limited``).

The child imports everything a run needs first, then caps its address space at what it has
mapped plus ``memory_mb`` (RLIMIT_AS) and, if asked, its open files: an allocation past the
bound fails inside the child (MemoryError: an internal error, exit 1) instead of exhausting the
machine, so a case that ends in exit 0 or 2 stayed within the bound. Several command lines run
one after the other in one child (starting one costs seconds); each gets its own exit code,
stdout and stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

CHILD = r"""
import contextlib, io, json, resource, sys
import torch, pandas, plotly  # noqa: F401  (mapped before the cap: the libraries are not the run)
import dora_diag.analysis.compare, dora_diag.analysis.check, dora_diag.report.html  # noqa: F401
from dora_diag.cli import main
memory_mb, nofile, argvs = json.loads(sys.stdin.read())
if nofile:
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
with open("/proc/self/statm") as f:
    mapped = int(f.read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (mapped + (memory_mb << 20), resource.getrlimit(resource.RLIMIT_AS)[1]))
results = []
for argv in argvs:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
            code = 0
        except SystemExit as e:
            code = e.code or 0
    results.append([code, out.getvalue(), err.getvalue()])
sys.__stdout__.write(json.dumps(results))
"""

# Headroom over the promised ~250 MB: thread stacks and malloc arenas are address space too.
DEFAULT_MEMORY_MB = 600


def run_limited(argvs: list[list[str]], memory_mb: int = DEFAULT_MEMORY_MB, nofile: int = 0,
                timeout: float = 600) -> list[tuple[int, str, str]]:
    """(exit code, stdout, stderr) of ``dora-diag ARGV`` for each of ``argvs``, under the limits."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD], input=json.dumps([memory_mb, nofile, argvs]),
                          capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [tuple(r) for r in json.loads(proc.stdout)]
