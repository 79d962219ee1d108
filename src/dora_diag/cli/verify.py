"""``dora-diag verify``: did the merge (or the fine-tune) actually change the weights?"""

from __future__ import annotations

import sys

import click

from ..outputs.paths import check_outputs
from .executors import executor_options
from .messages import echo

# Exit code for "the check ran and found problems", distinct from bad input (2) and bugs (1).
PROBLEMS_FOUND = 3


@click.command("verify")
@click.argument("base", type=click.Path())
@click.argument("merged", type=click.Path())
@click.argument("adapter", type=click.Path(), required=False)
@click.option("--json", "json_", type=click.Path(), help="Write every tensor's status and the summary as JSON.")
@click.option("--rtol", type=click.FloatRange(min=0, max=1), default=1e-3, show_default=True,
              help="Allowed deviation from the adapter's weight, relative to the change it makes "
                   "(on top of the rounding of the merged dtype).")
@executor_options(task_mb=False)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing; the exit code and --json tell.")
def verify_cmd(base, merged, adapter, json_, rtol, executor, ray_address, quiet):
    """Check that MERGED contains ADAPTER merged into BASE, tensor by tensor.

    ADAPTER is a PEFT adapter, a diffusers LoRA or a LyCORIS/kohya file (or any fine-tuned
    checkpoint MERGED should equal). Each tensor is ok, unchanged (left at the base although the
    adapter changes it), mismatch (with a diagnosis: scale forgotten, DoRA magnitude dropped,
    transposed), missing or extra. Without ADAPTER: did MERGED change anything at all?

    Exit codes: 0 all ok, 3 a problem found (one line each on stdout), 2 bad input.
    """
    from ..analysis.verify import verify

    check_outputs({"--json": json_}, [p for p in (base, merged, adapter) if p])
    result = verify(base, merged, adapter, rtol=rtol, executor=executor, ray_address=ray_address)
    if json_:
        result.to_json(json_)
    if not quiet:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(result.counts().items()))
        echo(f"verify: {counts}" + ("" if result.ok else f"; {len(result.problems)} problem(s)"))
        for line in result.problems:
            echo(f"  {line}")
        for r in result.records:
            if r["status"] == "skipped":
                echo(f"  skipped: {r['tensor']}: {r['detail']}")
    if not result.ok:
        sys.exit(PROBLEMS_FOUND)
