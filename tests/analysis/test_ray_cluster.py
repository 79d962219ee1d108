"""The Ray executor on a real two-node Ray cluster on this machine: outputs byte-identical to
the local executor, tasks on both nodes, a worker killed mid-task and a whole node removed mid-task retried, bad input failing
with the local message. Skipped without the ``ray`` extra."""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

import dora_diag
from ckpt_helpers import write_checkpoint
from dora_diag.analysis.compare import Progress
from dora_diag.errors import InputError

ray = pytest.importorskip("ray", reason='needs the "ray" extra (pip install "dora-diag[ray]")')
cluster_utils = pytest.importorskip("ray.cluster_utils")

HOOKS = Path(__file__).resolve().parents[1] / "ray_hooks"
# Timing and executor fields; bytes_read too: a task's second pass (re-summed or refined channels)
# re-reads only its own rows. Everything else must be identical.
VARIABLE = ("elapsed_s", "executor", "bytes_read")


@pytest.fixture(scope="module")
def cluster():
    """A head and one worker node, one CPU each."""
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


@pytest.fixture(scope="module")
def faults(cluster, tmp_path_factory):
    """The driver connected to ``cluster``; yields the fault-marker directory."""
    marker_dir = tmp_path_factory.mktemp("faults")
    ray.init(address=cluster.address, log_to_driver=False, runtime_env={
        "env_vars": {"PYTHONPATH": str(HOOKS), "DORA_DIAG_TEST_FAULTS": str(marker_dir)},
        "worker_process_setup_hook": "ray_faults.install"})
    yield marker_dir
    ray.shutdown()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A base and two fine-tuned checkpoints (bf16 and fp32 tensors, a zeroed row, radial rows)."""
    root = tmp_path_factory.mktemp("sweep")
    g = torch.Generator().manual_seed(0)
    base = {f"model.layers.{i}.self_attn.{m}.weight": torch.randn(40, 24, generator=g).to(dtype)
            for i in range(3) for m, dtype in (("q_proj", torch.bfloat16), ("v_proj", torch.float32))}
    cfg = {"model_type": "llama", "hidden_size": 24, "num_attention_heads": 4}
    write_checkpoint(root / "base", base, cfg)
    for k in (1, 2):
        ft = {n: (w.double() + 1e-2 * k * torch.randn(w.shape, generator=g, dtype=torch.float64)).to(w.dtype)
              for n, w in base.items()}
        ft["model.layers.0.self_attn.v_proj.weight"][3] = 0            # a channel that lost its norm
        ft["model.layers.1.self_attn.v_proj.weight"][5:9] *= 1.5       # purely radial: the refined path
        write_checkpoint(root / f"ft{k}", ft, cfg)
    return root


def _compare(root: Path, **kw):
    return dora_diag.compare(root / "base", f"A={root / 'ft1'}", f"B={root / 'ft2'}", block_bytes=512, **kw)


def _json(analysis) -> dict:
    doc = json.loads(analysis.to_json())
    return {k: v for k, v in doc.items() if k not in VARIABLE}


@pytest.mark.slow
def test_outputs_identical_to_local_and_tasks_on_both_nodes(faults, sweep):
    local = _compare(sweep)
    distributed = _compare(sweep, executor="ray", task_bytes=2048)
    assert distributed.to_csv() == local.to_csv()
    assert _json(distributed) == _json(local)
    info = distributed.meta.executor
    assert info["kind"] == "ray" and info["nodes"] == 2 and info["retries"] == 0
    assert info["tasks"] > len(local.table["tensor"].unique())   # tensors were split into row ranges
    assert info["nodes_used"] == 2 and sum(info["bytes_per_node"].values()) == distributed.meta.bytes_read
    assert local.meta.executor == {"kind": "local"}


@pytest.mark.slow
def test_axis_in_runs_whole_tensors_and_matches(faults, sweep):
    local = _compare(sweep, axis="in")
    distributed = _compare(sweep, axis="in", executor="ray", task_bytes=2048)
    assert distributed.to_csv() == local.to_csv()
    assert distributed.meta.executor["tasks"] == len(local.table["tensor"].unique())


@pytest.mark.slow
def test_a_worker_killed_mid_task_is_retried(faults, sweep):
    local = _compare(sweep)
    (faults / "ARMED").touch()
    distributed = _compare(sweep, executor="ray", task_bytes=2048)
    assert (faults / "FIRED").exists() and not (faults / "ARMED").exists()
    assert distributed.meta.executor["retries"] == 1
    assert distributed.to_csv() == local.to_csv() and _json(distributed) == _json(local)


@pytest.mark.slow
def test_a_node_removed_mid_task_is_retried(cluster, faults, sweep):
    """A third node joins; the first task on it holds until the test removes the whole node."""
    local = _compare(sweep)
    node = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    (faults / "HOLD").write_text(node.node_id)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(_compare, sweep, executor="ray", task_bytes=2048)
        deadline = time.monotonic() + 30
        while not (faults / "HELD").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (faults / "HELD").exists(), "no task reached the new node"
        cluster.remove_node(node)
        distributed = running.result(timeout=60)
    (faults / "HELD").unlink()
    assert distributed.meta.executor["retries"] == 1
    assert distributed.to_csv() == local.to_csv() and _json(distributed) == _json(local)


@pytest.mark.slow
def test_bad_input_in_a_task_gives_the_local_message(faults, sweep, tmp_path):
    """The fine-tuned file turns bad after the driver planned (so only the tasks see it)."""
    good, bad = tmp_path / "ft", tmp_path / "bad"
    shutil.copytree(sweep / "ft1", good)
    shutil.copytree(sweep / "ft1", bad)
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(InputError) as local:
        dora_diag.compare(sweep / "base", bad, block_bytes=512)

    class SwapAfterPlanning(Progress):
        def start(self, total_bytes, total_tensors):
            shutil.copyfile(weights, good / "model.safetensors")

    with pytest.raises(InputError) as distributed:
        dora_diag.compare(sweep / "base", good, block_bytes=512, executor="ray", progress=SwapAfterPlanning())
    assert str(distributed.value) == str(local.value).replace(str(bad), str(good))


@pytest.mark.slow
def test_ctrl_c_cancels_the_tasks(faults, sweep):
    class Interrupt(Progress):
        def advance(self, nbytes):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _compare(sweep, executor="ray", task_bytes=2048, progress=Interrupt())
    again = _compare(sweep, executor="ray", task_bytes=2048)   # the cluster is free for the next run
    assert again.meta.executor["retries"] == 0


def test_cuda_on_a_cluster_without_gpus_is_refused(faults, sweep):
    with pytest.raises(InputError, match="the Ray cluster has no GPU"):
        _compare(sweep, executor="ray", device="cuda")


@pytest.mark.slow
def test_verify_records_identical_to_local(faults, tmp_path):
    """A LyCORIS merge, and the same merge with one tensor's scale forgotten (a diagnosis)."""
    pytest.importorskip("lycoris")
    from safetensors.torch import load_file, save_file

    from tiny_lycoris import make_case

    case = make_case(tmp_path)
    broken = {**load_file(case.merged)}
    name = "layers.0.q_proj.weight"
    broken[name] = (load_file(case.base)[name] + 0.5 * (broken[name] - load_file(case.base)[name])).contiguous()
    save_file(broken, str(tmp_path / "broken.safetensors"))
    for merged in (case.merged, tmp_path / "broken.safetensors"):
        local = dora_diag.verify(case.base, merged, case.adapter)
        distributed = dora_diag.verify(case.base, merged, case.adapter, executor="ray")
        assert distributed.to_dict() | {"executor": None} == local.to_dict() | {"executor": None}
        assert distributed.meta.executor["tasks"] == sum(r["status"] not in ("skipped", "extra") for r in
                                                            local.records if r["tensor"] in load_file(case.base))
    assert not local.ok and any(name in p for p in local.problems)
