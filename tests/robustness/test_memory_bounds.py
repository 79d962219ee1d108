"""Issue 13, cause 1 (and 11): small files that declare huge things. Every case runs the CLI in
one child whose address space and open files are capped (``limited``): each must stream within
the bound (exit 0) or refuse with one line naming the limit (exit 2), never exhaust memory (exit 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ckpt_helpers import write_checkpoint
from cli_helpers import assert_one_line_error
from hostile_files import ADAPTER_KEY, Q, adapter, model_dir, raw_header, raw_safetensors
from limited import run_limited


def _base(tmp: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    return write_checkpoint(tmp / "base", {Q.format(i): torch.randn(8, 16, generator=g) for i in range(2)},
                            {"model_type": "llama"})


def _factors(r: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    out = {}
    for i in range(2):
        out[ADAPTER_KEY.format(i, "A")] = torch.randn(r, 16, generator=g)
        out[ADAPTER_KEY.format(i, "B")] = torch.randn(8, r, generator=g) / r
    return out


def _sparse_adapter(tmp, r_config: int, a_shape: list[int], b_shape: list[int]) -> Path:
    d = tmp / "sparse"
    raw_safetensors(d / "adapter_model.safetensors", {ADAPTER_KEY.format(0, "A"): ("F32", a_shape),
                                                      ADAPTER_KEY.format(0, "B"): ("F32", b_shape)})
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": r_config, "lora_alpha": 8}))
    return d


def _falcon(tmp, config: dict) -> tuple[Path, Path]:
    name = "transformer.h.0.self_attention.query_key_value.weight"
    cfg = {"model_type": "falcon", "new_decoder_architecture": True, "num_attention_heads": 4, "hidden_size": 16,
           **config}
    g = torch.Generator().manual_seed(0)
    w = torch.randn(24, 16, generator=g)
    return (write_checkpoint(tmp / "fb", {name: w}, cfg), write_checkpoint(tmp / "ff", {name: w + 0.01}, cfg))


def _pair(tmp, tensors, config=None) -> tuple[Path, Path]:
    return model_dir(tmp / "hb", tensors, config), model_dir(tmp / "hf", tensors, config)


def _many_entries(tmp) -> tuple[Path, Path]:
    """1.5 M tensors fit in 84 MB of header; 200 k zero-sized ones in 11 MB, under the byte limit."""
    entries = ",".join(f'"t{i}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}' for i in range(200_000))
    f = raw_header(tmp / "many" / "model.safetensors", ("{" + entries + "}").encode())
    return f.parent, f.parent


def _long_shape(tmp) -> tuple[Path, Path]:
    shape = ",".join(["1"] * 3_000_000)
    f = raw_header(tmp / "shape" / "model.safetensors",
                   ('{"x":{"dtype":"F32","shape":[' + shape + '],"data_offsets":[0,4]}}').encode(), 4)
    return f.parent, f.parent


def _big_header(tmp) -> tuple[Path, Path]:
    f = raw_header(tmp / "big" / "model.safetensors", b"{" + b" " * (84 << 20) + b"}")
    return f.parent, f.parent


def _index(tmp, weight_map: str) -> tuple[Path, Path]:
    d = write_checkpoint(tmp / "idx", {Q.format(0): torch.ones(8, 16)}, shards=2)
    (d / "model.safetensors.index.json").write_text('{"weight_map": ' + weight_map + "}")
    return d, d


def _fp8_fine_scale(tmp) -> tuple[Path, Path]:
    rows, cols = 1 << 15, 1 << 13   # a 256 MB fp8 weight with one fp32 scale per value: 1 GiB
    tensors = {Q.format(0): ("F8_E4M3", [rows, cols]), Q.format(0) + "_scale_inv": ("F32", [rows, cols])}
    cfg = {"model_type": "llama", "quantization_config": {"quant_method": "fp8", "weight_block_size": [1, 1]}}
    return _pair(tmp, tensors, cfg)


REFUSED = {
    "rank 2^23 in the config": (lambda tmp: _sparse_adapter(tmp, 1 << 23, [1 << 23, 16], [8, 1 << 23]),
                                "r is 8388608, expected a positive integer up to 65536"),
    "factor rows past the limit": (lambda tmp: _sparse_adapter(tmp, 2, [1 << 23, 16], [8, 2]), "2097152 channels"),
    "factor of 2^28 values": (lambda tmp: _sparse_adapter(tmp, 1 << 14, [1 << 14, 1 << 14], [8, 1 << 14]),
                              "at most 16777216 values"),
}


PAIRS = {
    "one row of 1 GiB": (lambda tmp: _pair(tmp, {Q.format(0): ("F32", [1, 1 << 28])}), "rows of at most 1048576"),
    "one column of 2^26 rows": (lambda tmp: _pair(tmp, {Q.format(0): ("F32", [1 << 26, 1])}), "at most 2097152 channels"),
    "rows just past the limit": (lambda tmp: _pair(tmp, {Q.format(0): ("BF16", [(1 << 21) + 1, 2])}), "2097152"),
    "fp8 scale per value": (_fp8_fine_scale, "scales of at most 1048576 values"),
    "84 MB header": (_big_header, "exceeds the 33554432-byte limit"),
    "200k header entries": (_many_entries, "more than 131072 tensors"),
    "3M-long shape": (_long_shape, "more than 2097152 values"),
    "224 MB index": (lambda tmp: _index(tmp, "{" + " " * (224 << 20) + "}"), "over the 33554432-byte limit"),
    "index of 2M values": (lambda tmp: _index(tmp, "[" + ",".join(["0"] * 2_000_000) + "]"), "more than 1048576 values"),
}


FALCON = [{"num_kv_heads": 10**9}, {"num_kv_heads": 10**9, "num_attention_heads": 10**9}, {"head_dim": 10**30},
          {"num_kv_heads": 3}]
STEPS = 300


def _big_log(tmp: Path) -> tuple[Path, Path]:
    """~100 MB of 1 KB records, and some lines over the line limit."""
    b, f, _ = _pair_of_small(tmp / "log")
    pad = "x" * 900
    with open(f / "metrics.jsonl", "w") as log:
        for step in range(110_000):
            log.write(json.dumps({"step": step, "loss": 1 / (step + 1), "note": pad}) + "\n")
            if step % 10_000 == 0:
                log.write('{"step": 1, "junk": "' + "y" * (100 << 10) + '"}\n')
    return b, f


def _pair_of_small(tmp: Path) -> tuple[Path, Path, torch.Tensor]:
    w = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    return write_checkpoint(tmp / "b", {Q.format(0): w}), write_checkpoint(tmp / "f", {Q.format(0): w + 0.01}), w


def _many_checkpoints(tmp: Path) -> tuple[Path, Path]:
    b, _, w = _pair_of_small(tmp / "many")
    for step in range(1, STEPS + 1):
        write_checkpoint(tmp / "many" / "run" / f"checkpoint-{step}", {Q.format(0): w + step * 1e-3})
    return b, tmp / "many" / "run"


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, tuple[int, str, str, Path]]:
    """Every case of this file, run in one capped child: {case: (code, stdout, stderr, output dir)}."""
    root = tmp_path_factory.mktemp("hostile")
    base = _base(root)
    argvs: dict[str, list[str]] = {}
    out = {name: root / "out" / name.replace(" ", "_") for name in [*REFUSED, *PAIRS, "rank 32768", "log", "many",
                                                                      *map(str, range(len(FALCON)))]}
    for d in out.values():
        d.mkdir(parents=True)
    for name, (make, _) in REFUSED.items():
        argvs[name] = ["compare", str(base), str(make(root / name.replace(" ", "_"))), "-q"]
    for name, (make, _) in PAIRS.items():
        b, f = make(root / name.replace(" ", "_"))
        argvs[name] = ["compare", str(b), str(f), "-q", "--csv", str(out[name] / "t.csv")]
    ad = adapter(root / "r32768", _factors(32768), r=32768, lora_alpha=32768)
    argvs["rank 32768"] = ["compare", str(base), str(ad), "-q", "--csv", str(out["rank 32768"] / "t.csv")]
    for i, cfg in enumerate(FALCON):
        b, f = _falcon(root / f"falcon{i}", cfg)
        argvs[str(i)] = ["compare", str(b), str(f), "-q", "--split-fused"]
    b, f = _big_log(root)
    argvs["log"] = ["compare", str(b), str(f), "-q", "--json", str(out["log"] / "s.json")]
    b, run = _many_checkpoints(root)
    argvs["many"] = ["compare", str(b), str(run), "-q", "--csv", str(out["many"] / "t.csv")]
    results = run_limited(list(argvs.values()), nofile=128)
    return {name: (*r, out[name]) for name, r in zip(argvs, results)}


@pytest.mark.parametrize("case", list(REFUSED))
def test_adapters_declaring_huge_factors_are_refused(case, outcomes):
    code, _, err, _ = outcomes[case]
    assert_one_line_error(code, err, REFUSED[case][1])


def test_rank_larger_than_the_layer_streams_without_r_squared(outcomes):
    """r = 32768 on an 8 x 16 layer: a 3 MB file whose r x r product would be 4 GB."""
    code, _, err, out = outcomes["rank 32768"]
    assert code == 0, err
    assert len((out / "t.csv").read_text().splitlines()) == 3


@pytest.mark.parametrize("case", list(PAIRS))
def test_checkpoints_declaring_huge_things_are_refused(case, outcomes):
    code, _, err, out = outcomes[case]
    assert_one_line_error(code, err, PAIRS[case][1])
    assert not list(out.iterdir())


@pytest.mark.parametrize("i", range(len(FALCON)))
def test_split_fused_with_absurd_head_counts_stays_bounded(i, outcomes):
    """The head counts cannot give the stored rows: refused with one line, whatever they ask for."""
    code, _, err, _ = outcomes[str(i)]
    assert_one_line_error(code, err, "query_key_value")


def test_a_100_mb_training_log_is_thinned_within_the_bound(outcomes):
    code, _, err, out = outcomes["log"]
    assert code == 0, err
    doc = json.loads((out / "s.json").read_text())
    log = doc["runs"][0]["log"]
    assert 5_000 <= len(log) <= 10_000 and log[0]["step"] == 0 and log[-1]["step"] > 100_000
    assert "note" not in log[0]   # strings over 200 characters are dropped
    assert any("kept one in 16" in w for w in doc["warnings"]), doc["warnings"]
    assert any("11 log record(s) left out" in w and "over 65536 bytes" in w for w in doc["warnings"]), doc["warnings"]


def test_more_checkpoints_than_open_files(outcomes):
    """300 checkpoint-N folders under a 128 open-file limit: descriptors come from a bounded pool."""
    code, _, err, out = outcomes["many"]
    assert code == 0, err
    assert len((out / "t.csv").read_text().splitlines()) == STEPS + 1
