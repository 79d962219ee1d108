"""--model PATH with transformers: tiny random-init LLaMA (causal LM) and BERT (classification),
tokenizers built offline; and the message when transformers is missing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import dora_diag
from dora_diag.errors import InputError
from dora_diag.io.checkpoint import open_checkpoint
from dora_diag.train.data import IGNORE, read_jsonl, tokenize_records
from dora_diag.train.trainer import TrainConfig, train

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
pytestmark = pytest.mark.filterwarnings("ignore")

WORDS = ["red", "green", "blue", "cat", "dog", "is", "the", "a", "big", "small", "yes", "no"]





def save_tokenizer(directory: Path, specials: list[str], template: str | None = None, **names) -> int:
    """A WordLevel tokenizer over WORDS wrapped in PreTrainedTokenizerFast, saved offline; returns its size."""
    vocab = {w: i for i, w in enumerate([*specials, *WORDS])}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    if template:
        tok.post_processor = tokenizers.processors.TemplateProcessing(
            single=template, special_tokens=[(s, vocab[s]) for s in specials if s in template])
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                         **names).save_pretrained(directory)
    return len(vocab)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("llama")
    size = save_tokenizer(d, ["[PAD]", "[UNK]", "<s>", "</s>"], bos_token="<s>", eos_token="</s>")
    cfg = transformers.LlamaConfig(vocab_size=size, hidden_size=32, intermediate_size=48,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=64, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bert")
    size = save_tokenizer(d, ["[PAD]", "[UNK]", "[CLS]", "[SEP]"], "[CLS] $A [SEP]",
                          cls_token="[CLS]", sep_token="[SEP]")
    cfg = transformers.BertConfig(vocab_size=size, hidden_size=32, intermediate_size=48,
                                  num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64,
                                  num_labels=2)
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(cfg).save_pretrained(d)
    return d


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def colour_records(n: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        c = WORDS[int(torch.randint(3, (1,), generator=g))]
        out.append({"prompt": f"the cat is {c}", "completion": "yes" if c == "red" else "no"})
    return out


def test_prompt_completion_masks_the_prompt(llama_dir, tmp_path):
    tok = transformers.AutoTokenizer.from_pretrained(str(llama_dir), local_files_only=True)
    data = tokenize_records([{"prompt": "the cat", "completion": "is red"}, {"text": "a dog"}], tok, 32, "x")
    assert data.kind == "causal-lm"
    ids, labels = data.input_ids[0].tolist(), data.labels[0].tolist()
    n_prompt = len(tok("the cat")["input_ids"])
    assert labels[:n_prompt] == [IGNORE] * n_prompt and labels[n_prompt:] == ids[n_prompt:]
    assert data.labels[1].tolist().count(IGNORE) == data.input_ids.shape[1] - int(data.attention_mask[1].sum())


def test_llama_lora_run_compares_with_the_base(llama_dir, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", colour_records(40))
    run = train(TrainConfig(out=str(tmp_path / "run"), method="dora", model=str(llama_dir), data=str(data),
                            targets=("q_proj", "v_proj"), steps=4, save_every=2, batch_size=8, lr=1e-2,
                            device="cpu"))
    meta = json.loads((run / "train_config.json").read_text())
    assert meta["task"] == "causal-lm" and meta["train_examples"] == 36 and meta["eval_examples"] == 4
    table = dora_diag.compare(llama_dir, f"DoRA={run}").table
    assert set(table["module"]) == {"q_proj", "v_proj"} and sorted(table["step"].unique()) == [2, 4]
    assert (table["delta_d"] > 0).all()


def test_llama_ft_checkpoint_has_the_base_tensor_names(llama_dir, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": "the big dog is small"}] * 6)
    run = train(TrainConfig(out=str(tmp_path / "run"), method="ft", model=str(llama_dir), data=str(data),
                            steps=2, save_every=2, batch_size=4, device="cpu"))
    assert set(open_checkpoint(run / "checkpoint-2").tensors) == set(open_checkpoint(llama_dir).tensors)


def test_bert_classification_learns_labels(bert_dir, tmp_path):
    records = [{"text": f"the {w} cat", "label": "pos" if w == "big" else "neg"}
               for w in ("big", "small") * 20]
    data = write_jsonl(tmp_path / "c.jsonl", records)
    run = train(TrainConfig(out=str(tmp_path / "run"), method="lora", model=str(bert_dir), data=str(data),
                            targets=("query", "value", "classifier"), steps=30, save_every=30, batch_size=8,
                            lr=2e-2, device="cpu", eval_fraction=0.25))
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in log if "eval_accuracy" in r]
    assert "eval_exact_match" not in evals[-1] and evals[-1]["eval_accuracy"] == 1.0
    assert json.loads((run / "train_config.json").read_text())["task"] == "classification"


def test_jsonl_errors_are_one_line_input_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{oops\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: not valid JSON"):
        read_jsonl(bad)
    from dora_diag.train.data import record_kind
    with pytest.raises(InputError, match="mixes classification"):
        record_kind([{"text": "a", "label": 1}, {"text": "b"}], "x")
    with pytest.raises(InputError, match="record 1 needs"):
        record_kind([{"input": "a"}], "x")


def test_missing_transformers_says_what_to_install(llama_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": "a dog"}] * 4)
    with pytest.raises(InputError, match=r"pip install 'dora-diag\[hf\]'"):
        train(TrainConfig(out=str(tmp_path / "run"), method="lora", model=str(llama_dir), data=str(data), steps=1))


def test_trial_on_a_peft_lora_adapter_needs_data_and_copies_its_config(llama_dir, tmp_path):
    from dora_diag.train.trial import run_trial
    peft = pytest.importorskip("peft")
    adapter = tmp_path / "adapter"
    model = transformers.LlamaForCausalLM.from_pretrained(str(llama_dir))
    config = peft.LoraConfig(r=4, lora_alpha=12, target_modules=["q_proj", "o_proj"], lora_dropout=0.05)
    peft.get_peft_model(model, config).save_pretrained(str(adapter))
    with pytest.raises(InputError, match="needs training data for the trial; give data"):
        run_trial(llama_dir, adapter)
    data = write_jsonl(tmp_path / "d.jsonl", colour_records(24))
    result = run_trial(llama_dir, adapter, steps=2, seeds=2, data=str(data), device="cpu")
    s = result["settings"]
    assert (s["rank"], s["alpha"], s["dropout"], s["targets"]) == (4, 12.0, 0.05, ("o_proj", "q_proj"))
    assert s["from"]["targets"] == "adapter_config.json" and s["from"]["data"] == "argument"
    assert [r["method"] for r in result["runs"]] == ["lora", "dora", "lora", "dora"]
    assert result["difference"]["seeds"] == 2 and result["summary"].startswith("DoRA ")
