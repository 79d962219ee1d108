"""The typed records of a comparison: frozen, and their JSON form the one the summary writes."""

from __future__ import annotations

import dataclasses

import pytest

from dora_diag.records import CheckpointInfo, Meta, RunInfo, VerifyInfo


def _meta(**changes) -> Meta:
    ckpts = (CheckpointInfo("checkpoint-10", 10, "run/checkpoint-10", "dora", "dora", ("in",)),
             CheckpointInfo("final", None, "run/final", "full", "ft"))
    run = RunInfo("R", "run", "dora", "train_config.json", ckpts, ({"step": 10, "loss": 1.5},))
    return dataclasses.replace(Meta(base="base", runs=(run,), device="cpu", elapsed_s=1.25, bytes_read=7,
                                    tensors_compared=3, skipped=({"tensor": "n.weight", "reason": "1-D"},),
                                    warnings=("w",), version="1"), **changes)


def test_json_has_the_summary_fields_and_reads_back():
    meta = _meta(temporary_dirs=("/tmp/x",))
    doc = meta.to_json()
    assert list(doc) == ["tool", "version", "base", "runs", "axis", "device", "split_fused", "elapsed_s",
                         "bytes_read", "tensors_compared", "skipped", "unmatched", "warnings", "executor",
                         "temporary_dirs"]
    (run,) = doc["runs"]
    assert list(run) == ["label", "path", "method", "method_evidence", "checkpoints", "log"]
    assert run["checkpoints"][0]["magnitude_axes"] == ["in"] and "magnitude_axes" not in run["checkpoints"][1]
    assert doc["executor"] == {"kind": "local"} and doc["skipped"] == [{"tensor": "n.weight", "reason": "1-D"}]
    assert Meta.from_json(doc) == meta
    assert "temporary_dirs" not in _meta().to_json()


def test_records_are_frozen_and_derived_not_edited():
    meta = _meta()
    with pytest.raises(dataclasses.FrozenInstanceError):
        meta.base = "other"
    derived = meta.with_temporary_dirs("/tmp/x")
    assert derived.temporary_dirs == ("/tmp/x",) and meta.temporary_dirs == ()
    assert meta.labels == ["R"] and meta.methods == {"R": "dora"} and meta.run("R") is meta.runs[0]
    assert meta.run("missing") is None


def test_verify_info_json():
    doc = VerifyInfo("b", "m", None, 1e-3, None, {"kind": "local"}).to_json()
    assert doc == {"tool": "dora-diag verify", "base": "b", "merged": "m", "adapter": None, "rtol": 1e-3,
                   "adapter_kind": None, "executor": {"kind": "local"}}
