"""End to end: checkpoints written by transformers' save_pretrained, checked against float64."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import dora_diag
from dora_diag.errors import InputError
from dora_diag.io.checkpoint import open_checkpoint
from ckpt_helpers import reference_changes, write_checkpoint

transformers = pytest.importorskip("transformers")


def perturb_(model: torch.nn.Module, scale: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g) * p.abs().mean())


def check_against_reference(analysis, base_dir, ft_dirs: dict[str, str], transposed=lambda name: False):
    base = open_checkpoint(base_dir)
    from safetensors.torch import load_file

    def load(d):
        ckpt = open_checkpoint(d)
        out = {}
        for f in {t.path for t in ckpt.tensors.values()}:
            out.update(load_file(f))
        return out

    base_t = load(base_dir)
    checked = 0
    for ckpt_name, d in ft_dirs.items():
        ft_t = load(d)
        rows = analysis.table[(analysis.table["checkpoint"] == ckpt_name) & (analysis.table["group"] == "")]
        for _, r in rows.iterrows():
            w0, w1 = base_t[r["tensor"]], ft_t[r["tensor"]]
            if transposed(r["tensor"]):
                w0, w1 = w0.T, w1.T
            ref = reference_changes(w0, w1)
            assert r["rows"] == w0.shape[0]
            assert r["delta_m"] == pytest.approx(ref["delta_m"], rel=1e-4, abs=1e-12)
            assert r["delta_d"] == pytest.approx(ref["delta_d"], rel=1e-3, abs=1e-12)
            assert r["rel_delta_m"] == pytest.approx(ref["rel_delta_m"], rel=1e-4, abs=1e-12)
            checked += 1
    assert checked > 0
    assert len(base.tensors) > 0


@pytest.fixture
def llama_run(tmp_path):
    cfg = transformers.LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                   num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    model.save_pretrained(tmp_path / "base")
    run = tmp_path / "run"
    for step in (10, 20, 30):
        perturb_(model, 1e-3, step)
        model.save_pretrained(run / f"checkpoint-{step}", max_shard_size="30KB" if step == 20 else "5GB")
    return tmp_path / "base", run


def test_llama_run_matches_reference_and_reads_base_once(llama_run):
    base, run = llama_run
    a = dora_diag.compare(base, f"LoRA={run}")
    t = a.table
    assert t.columns[1] == "method" and set(t["method"]) == {"ft"}   # full checkpoints, whatever the label
    assert [c for c in t.columns if c not in ("method", "stack", "expert")][:13] == [
        "run", "step", "checkpoint", "tensor", "layer", "module", "group", "rows", "cols", "dtype", "delta_m",
        "delta_d", "rel_delta_m"]
    assert set(t["run"]) == {"LoRA"} and sorted(set(t["step"])) == [10, 20, 30]
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= set(t["module"])
    assert t.loc[t["module"] == "q_proj", "layer"].tolist() == [0, 1, 2] * 3
    check_against_reference(a, base, {f"checkpoint-{s}": run / f"checkpoint-{s}" for s in (10, 20, 30)})
    # Base tensors are read once for all three checkpoints.
    base_bytes = sum(open_checkpoint(base).tensors[n].nbytes for n in set(t["tensor"]))
    assert a.meta.bytes_read == base_bytes * 4
    assert any("layernorm" in s["tensor"] and "1-D" in s["reason"] for s in a.meta.skipped)
    stats = a.stats("module")
    q = stats[(stats["module"] == "q_proj")].iloc[0]
    assert q["n"] == 9 and -1 <= q["pearson_r"] <= 1


def test_block_size_and_device_do_not_change_results(llama_run):
    base, run = llama_run
    big = dora_diag.compare(base, run).table
    small = dora_diag.compare(base, run, block_bytes=256, device="cpu").table
    pd.testing.assert_frame_equal(big, small, rtol=1e-6)


def test_concurrent_streams_do_not_change_results(llama_run, monkeypatch):
    import torch

    from dora_diag.analysis.executors import local as compare_mod

    base, run = llama_run
    threads = torch.get_num_threads()
    results = {}
    for streams in (1, 3):
        monkeypatch.setattr(compare_mod, "cpu_streams", lambda device: streams)
        a = dora_diag.compare(base, run, block_bytes=4096)
        results[streams] = a
        assert torch.get_num_threads() == threads   # restored
    pd.testing.assert_frame_equal(results[1].table, results[3].table)
    assert results[1].meta.bytes_read == results[3].meta.bytes_read


def test_streams_larger_than_memory_drop_what_they_read(llama_run, monkeypatch):
    """Past half the available memory every range read is dropped from the page cache after
    use (and only then); the numbers do not change."""
    import os

    from dora_diag.analysis.executors import local as compare_mod

    base, run = llama_run
    kept = dora_diag.compare(base, run).table
    dropped = []
    fadvise = os.posix_fadvise
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, off, n, advice: (
        dropped.append(n) if advice == os.POSIX_FADV_DONTNEED else None, fadvise(fd, off, n, advice)))
    dora_diag.compare(base, run)
    assert dropped == []
    monkeypatch.setattr(compare_mod, "available_memory", lambda: 1000)
    a = dora_diag.compare(base, run)
    pd.testing.assert_frame_equal(a.table, kept)
    assert sum(dropped) == a.meta.bytes_read


def test_gpt2_conv1d_is_measured_per_output_channel(tmp_path):
    cfg = transformers.GPT2Config(vocab_size=80, n_positions=16, n_embd=24, n_layer=2, n_head=2)
    torch.manual_seed(1)
    model = transformers.GPT2LMHeadModel(cfg)
    model.save_pretrained(tmp_path / "base")
    perturb_(model, 1e-2, 7)
    model.save_pretrained(tmp_path / "ft")
    a = dora_diag.compare(tmp_path / "base", tmp_path / "ft", split_fused=True)
    conv1d = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    is_conv = lambda name: any(k in name for k in conv1d)  # noqa: E731
    check_against_reference(a, tmp_path / "base", {"ft": tmp_path / "ft"}, transposed=is_conv)
    t = a.table
    c_fc = t[t["module"] == "c_fc"].iloc[0]
    assert (c_fc["rows"], c_fc["cols"]) == (96, 24)   # stored (24, 96): out = 96
    # The fused q/k/v groups are output-channel thirds of c_attn.
    from safetensors.torch import load_file
    w0 = load_file(str(tmp_path / "base" / "model.safetensors"))["transformer.h.0.attn.c_attn.weight"].T
    w1 = load_file(str(tmp_path / "ft" / "model.safetensors"))["transformer.h.0.attn.c_attn.weight"].T
    for i, g in enumerate("qkv"):
        row = t[(t["tensor"] == "transformer.h.0.attn.c_attn.weight") & (t["group"] == g)].iloc[0]
        ref = reference_changes(w0[24 * i: 24 * (i + 1)], w1[24 * i: 24 * (i + 1)])
        assert row["module"] == f"c_attn.{g}" and row["rows"] == 24
        assert row["delta_d"] == pytest.approx(ref["delta_d"], rel=1e-3)


def test_bert_task_model_matches_bare_base_and_lists_the_head(tmp_path):
    cfg = transformers.BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=48, max_position_embeddings=32, num_labels=3)
    torch.manual_seed(2)
    transformers.BertModel(cfg).save_pretrained(tmp_path / "base")
    clf = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "base", num_labels=3)
    perturb_(clf, 1e-2, 3)
    clf.save_pretrained(tmp_path / "clf")
    a = dora_diag.compare(tmp_path / "base", tmp_path / "clf")
    assert "encoder.layer.0.attention.self.query.weight" in set(a.table["tensor"])
    assert {"query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"} <= set(a.table["module"])
    assert any(u["tensor"] == "classifier.weight" and u["side"] == "finetuned" for u in a.meta.unmatched)


def test_input_axis(make_pair):
    b, f, base, ft = make_pair(out=20, inp=30)
    a = dora_diag.compare(b, f, axis="in")
    name = "model.layers.1.self_attn.v_proj.weight"
    row = a.table[a.table["tensor"] == name].iloc[0]
    ref = reference_changes(base[name].T, ft[name].T)
    assert row["delta_d"] == pytest.approx(ref["delta_d"], rel=1e-4)
    assert a.meta.axis == "in"


def test_resized_vocabulary_compares_shared_rows(tmp_path):
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(50, 8, generator=g)
    new = torch.cat([emb + 1e-2 * torch.randn(50, 8, generator=g), torch.randn(6, 8, generator=g)])
    write_checkpoint(tmp_path / "b", {"model.embed_tokens.weight": emb})
    write_checkpoint(tmp_path / "f", {"model.embed_tokens.weight": new})
    row = dora_diag.compare(tmp_path / "b", tmp_path / "f").table.iloc[0]
    assert "resized 50->56" in row["flags"]
    assert row["delta_d"] == pytest.approx(reference_changes(emb, new[:50])["delta_d"], rel=1e-4)


def test_zero_rows_and_all_zero_tensors(tmp_path):
    w = torch.randn(10, 16)
    w[3] = 0
    write_checkpoint(tmp_path / "b", {"layers.0.q_proj.weight": w, "layers.0.k_proj.weight": torch.zeros(4, 4)})
    write_checkpoint(tmp_path / "f", {"layers.0.q_proj.weight": w * 1.01, "layers.0.k_proj.weight": torch.zeros(4, 4)})
    t = dora_diag.compare(tmp_path / "b", tmp_path / "f").table.set_index("module")
    assert t.loc["q_proj", "zero_rows"] == 1 and t.loc["q_proj", "delta_d"] == pytest.approx(0, abs=1e-12)
    assert t.loc["k_proj", "zero_rows"] == 4 and "all channels zero" in t.loc["k_proj", "flags"]
    assert "nan" not in dora_diag.compare(tmp_path / "b", tmp_path / "f").to_json().lower()


@pytest.mark.parametrize("block_mb", [2.0, 1 / 256])
def test_pruned_and_shrunk_rows_in_a_stream_of_blocks(tmp_path, block_mb):
    """Rows zeroed or shrunk 1000x by fine-tuning: the streamer sums their |c|^2 from the
    fine-tuned rows (a second pass) and matches float64, in one block or in many."""
    g = torch.Generator().manual_seed(7)
    w = torch.randn(64, 512, generator=g).bfloat16()
    f = (w.float() + 1e-3 * torch.randn(64, 512, generator=g)).bfloat16()
    f[5] = 0
    f[9] = (w[9].float() * 1e-3 + 1e-6 * torch.randn(512, generator=g)).bfloat16()
    write_checkpoint(tmp_path / "b", {"layers.0.q_proj.weight": w})
    write_checkpoint(tmp_path / "f", {"layers.0.q_proj.weight": f})
    row = dora_diag.compare(tmp_path / "b", tmp_path / "f", block_bytes=int(block_mb * 2**20)).table.iloc[0]
    ref = reference_changes(w, f)
    assert row["zero_rows"] == 1
    assert row["delta_m"] == pytest.approx(ref["delta_m"], rel=1e-6)
    assert row["delta_d"] == pytest.approx(ref["delta_d"], rel=1e-5)


def test_different_architectures_match_nothing(make_pair, tmp_path):
    b, _, _, _ = make_pair()
    write_checkpoint(tmp_path / "other", {"h.0.attn.c_attn.weight": torch.ones(4, 12)})
    with pytest.raises(InputError, match="no tensor of .* matches"):
        dora_diag.compare(b, tmp_path / "other")


def test_usage_errors(make_pair):
    b, f, _, _ = make_pair()
    with pytest.raises(InputError, match="axis"):
        dora_diag.compare(b, f, axis="diagonal")
    with pytest.raises(InputError, match="at least one"):
        dora_diag.compare(b)
    with pytest.raises(InputError, match="device"):
        dora_diag.compare(b, f, device="tpu")


@pytest.mark.parametrize("wd_on_output, axes", [(True, ["out"]), (False, ["in"]), (None, None)])
def test_json_records_the_lycoris_dora_axis(tmp_path, wd_on_output, axes):
    """LyCORIS files decompose along either axis (wd_on_output): each checkpoint records which."""
    pytest.importorskip("lycoris")
    from tiny_lycoris import make_case

    kwargs = {} if wd_on_output is None else {"dora_wd": True, "wd_on_output": wd_on_output}
    case = make_case(tmp_path, **kwargs)
    (ckpt,) = dora_diag.compare(case.base, case.adapter).meta.runs[0].checkpoints
    assert ckpt.to_json().get("magnitude_axes") == axes and ckpt.kind == ("lora" if axes is None else "dora")
    assert "magnitude_axes" not in dora_diag.compare(case.base, case.merged).meta.runs[0].checkpoints[0].to_json()


def test_identical_and_swapped_inputs_are_named(make_pair, tmp_path):
    b, f, _, _ = make_pair()
    same = dora_diag.compare(b, b)
    assert any("equals the base exactly" in w and "given twice" in w for w in same.meta.warnings)
    assert not any("equals the base" in w for w in dora_diag.compare(b, f).meta.warnings)
    (f / "trainer_state.json").write_text('{"global_step": 10}')
    swapped = dora_diag.compare(f, b)
    assert any("are BASE and the fine-tuned run swapped?" in w for w in swapped.meta.warnings)


def test_an_adapter_given_as_base_says_what_base_is(tmp_path):
    pytest.importorskip("peft")
    from tiny_peft import save_adapter_case

    case = save_adapter_case(tmp_path, "llama", r=2, target_modules=["q_proj"])
    with pytest.raises(InputError, match="this is an adapter, not a model; BASE must be the full model"):
        dora_diag.compare(case.adapter, case.merged)
