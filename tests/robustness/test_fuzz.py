"""Seeded fuzzing of the readers: truncated and bit-flipped shards, indexes and adapters, and
JSON whose values have the wrong type. Every mutant must end in exit 0 or 2 within seconds:
never an internal error (exit 1), a traceback or a hang. Exit 0 (a flip inside tensor data
changes numbers) must still give outputs without NaN text and with every gap flagged."""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest
import torch

from cli_helpers import call

pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
from tiny_peft import llama, save_adapter_case  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")
SECONDS_PER_CASE = 10
WEIRD = [None, True, -1, 0, 2**70, -(2**63), 1.5, float("nan"), float("inf"), "", "x", "../x", [], [1, "a"], {},
         {"a": [None]}]


class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout


def run_guarded(capsys, *args: str) -> tuple[int, str]:
    """``dora-diag ARGS`` in-process with a wall-clock limit; returns (exit code, stderr)."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(SECONDS_PER_CASE)
    try:
        code, _, err = call(capsys, *args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return code, err


@contextmanager
def memory_limit(extra_bytes: int = 2 << 30):
    """Cap further allocations, so that a mutant asking for absurd sizes fails fast, not the machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        used = int(f.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (used + extra_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def truncate(raw: bytes, rng: random.Random) -> bytes:
    return raw[: rng.randrange(len(raw))]


def flip(raw: bytes, rng: random.Random, within: int | None = None) -> bytes:
    """Flip 1-4 random bits, in the first ``within`` bytes if given (the header)."""
    b = bytearray(raw)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(min(within or len(b), len(b)))
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def header_len(raw: bytes) -> int:
    return 8 + int.from_bytes(raw[:8], "little")


def confuse(doc, rng: random.Random):
    """Replace one randomly chosen value anywhere in a JSON document by a value of another type."""
    containers = []

    def walk(node):
        if isinstance(node, dict):
            containers.extend((node, k) for k in node)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            containers.extend((node, i) for i in range(len(node)))
            for v in node:
                walk(v)

    walk(doc)
    if containers:
        node, key = rng.choice(containers)
        node[key] = rng.choice(WEIRD)
    return doc


def check_outcome(code: int, err: str, csv: Path) -> None:
    assert code in (0, 2), err
    assert "Traceback" not in err and "internal error" not in err, err
    if code == 2:
        assert len([line for line in err.splitlines() if line.strip()]) == 1, err
        assert not csv.exists()
        return
    t = pd.read_csv(csv, keep_default_na=False, dtype=str)
    numbers = t[["delta_m", "delta_d", "rel_delta_m"]]
    assert not numbers.apply(lambda c: c.str.fullmatch(r"(?i)[+-]?(nan|inf|infinity)")).any().any()
    gaps = (numbers["delta_m"] == "") | (numbers["delta_d"] == "")
    assert (t.loc[gaps, "flags"] != "").all(), t[gaps]


def fuzz(capsys, tmp_path: Path, target: Path, mutants: list[Callable[[bytes], bytes]], argv: list[str]) -> None:
    """Apply each mutant to ``target`` in turn; fails listing every mutant that misbehaved."""
    pristine = target.read_bytes()
    csv = tmp_path / "t.csv"
    failures = []
    for i, mutate in enumerate(mutants):
        target.write_bytes(mutate(pristine))
        csv.unlink(missing_ok=True)
        try:
            check_outcome(*run_guarded(capsys, "compare", *argv, "-q", "--csv", str(csv)), csv)
        except (AssertionError, Timeout) as e:
            failures.append(f"mutant {i}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    target.write_bytes(pristine)
    assert not failures, "\n".join(failures)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny LLaMA base, a perturbed copy saved in shards, and a DoRA adapter of the base."""
    root = tmp_path_factory.mktemp("fuzz")
    case = save_adapter_case(root / "adapter", "llama", r=2, target_modules=["q_proj", "v_proj"], use_dora=True)
    model = llama()
    model.load_state_dict(transformers.LlamaForCausalLM.from_pretrained(case.base).state_dict())
    model.save_pretrained(root / "sharded", max_shard_size="40KB")
    return case.base, case.merged, root / "sharded", case.adapter


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def safetensors_mutants(path: Path, seed: int, truncations: int, header_flips: int, flips: int) -> list:
    """Truncations, bit flips inside the header, and bit flips anywhere in a safetensors file."""
    rng = random.Random(seed)
    head = header_len(path.read_bytes())
    return ([lambda raw: truncate(raw, rng)] * truncations + [lambda raw: flip(raw, rng, head)] * header_flips
            + [lambda raw: flip(raw, rng)] * flips)


def test_shard_truncations_and_bit_flips(models, tmp_path, capsys):
    base, merged, _, _ = models
    ft = _copy(merged, tmp_path / "ft")
    shard = ft / "model.safetensors"
    fuzz(capsys, tmp_path, shard, safetensors_mutants(shard, 8, 12, 30, 8), [str(base), str(ft)])


def test_shard_header_type_confusion(models, tmp_path, capsys):
    base, merged, _, _ = models
    ft = _copy(merged, tmp_path / "ft")
    rng = random.Random(9)

    def mutate(raw: bytes) -> bytes:
        n = header_len(raw)
        header = json.dumps(confuse(json.loads(raw[8:n]), rng)).encode()
        return len(header).to_bytes(8, "little") + header + raw[n:]

    fuzz(capsys, tmp_path, ft / "model.safetensors", [mutate] * 30, [str(base), str(ft)])


def test_index_mutations(models, tmp_path, capsys):
    base, _, sharded, _ = models
    ft = _copy(sharded, tmp_path / "ft")
    index = ft / "model.safetensors.index.json"
    rng = random.Random(10)
    mutants = ([lambda raw: truncate(raw, rng)] * 6 + [lambda raw: flip(raw, rng)] * 12
               + [lambda raw: json.dumps(confuse(json.loads(raw), rng)).encode()] * 15)
    fuzz(capsys, tmp_path, index, mutants, [str(base), str(ft)])


def test_adapter_config_mutations(models, tmp_path, capsys):
    base, _, _, adapter = models
    ad = _copy(adapter, tmp_path / "adapter")
    rng = random.Random(11)
    mutants = ([lambda raw: truncate(raw, rng)] * 6 + [lambda raw: flip(raw, rng)] * 12
               + [lambda raw: json.dumps(confuse(json.loads(raw), rng)).encode()] * 30)
    fuzz(capsys, tmp_path, ad / "adapter_config.json", mutants, [str(base), str(ad)])


def test_adapter_weights_mutations(models, tmp_path, capsys):
    base, _, _, adapter = models
    ad = _copy(adapter, tmp_path / "adapter")
    weights = ad / "adapter_model.safetensors"
    fuzz(capsys, tmp_path, weights, safetensors_mutants(weights, 12, 8, 20, 8), [str(base), str(ad)])


@pytest.mark.parametrize("patch,message", [
    ({"r": 0}, "r is 0, expected a positive integer"),
    ({"r": float("inf")}, "r is inf, expected a positive integer"),
    ({"lora_alpha": "16"}, "lora_alpha is '16', expected a finite number"),
    ({"rank_pattern": {"q_proj(": 4}}, "rank_pattern key is 'q_proj(', expected a regular expression"),
    ({"alpha_pattern": ["q_proj"]}, "alpha_pattern is ['q_proj'], expected an object"),
    ({"trainable_token_indices": [1, -2]}, "trainable_token_indices is [1, -2]"),
])
def test_adapter_config_wrong_values_are_named(models, tmp_path, capsys, patch, message):
    base, _, _, adapter = models
    ad = _copy(adapter, tmp_path / "adapter")
    cfg = json.loads((ad / "adapter_config.json").read_text())
    (ad / "adapter_config.json").write_text(json.dumps({**cfg, **patch}))
    code, err = run_guarded(capsys, "compare", str(base), str(ad))
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_config_json_mutations_with_split_fused(tmp_path, capsys):
    """config.json drives the fused q/k/v split: absurd head counts must not build absurd lists."""
    cfg = transformers.GPTNeoXConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     vocab_size=96)
    torch.manual_seed(0)
    model = transformers.GPTNeoXForCausalLM(cfg)
    model.save_pretrained(tmp_path / "base")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1e-2 * torch.randn_like(p))
    model.save_pretrained(tmp_path / "ft")
    rng = random.Random(13)
    mutants = [lambda raw: json.dumps(confuse(json.loads(raw), rng)).encode()] * 40
    huge = {"num_attention_heads": 2**40, "hidden_size": 2**45}
    mutants.append(lambda raw: json.dumps({**json.loads(raw), **huge}).encode())
    with memory_limit():
        fuzz(capsys, tmp_path, tmp_path / "base" / "config.json", mutants,
             [str(tmp_path / "base"), str(tmp_path / "ft"), "--split-fused"])


# ---- deep and huge JSON, names that are not UTF-8 (issue 13) -----------------------------------

MARKER = "@@BOMB@@"
BOMBS = ["[" * 100_000 + "]" * 100_000, "{\"a\":" * 5000 + "1" + "}" * 5000, "1" * 5000, "-" + "9" * 401, "1e400",
         '"\\udc80"', '"\\ud800x"', '"\\u0000\\u001b]0;x\\u0007"', "[" + ",".join(["0"] * 300_000) + "]"]


def bomb(raw: bytes, rng: random.Random) -> bytes:
    """One randomly chosen value of a JSON document replaced by a hostile literal: nesting past any
    recursion limit, integers past Python's conversion limit, lone surrogates, control characters,
    hundreds of thousands of values."""
    doc = confuse(json.loads(raw), random.Random(rng.random()))   # a random position, any type
    containers = []

    def walk(node):
        if isinstance(node, dict):
            containers.extend((node, k) for k in node)
            list(map(walk, node.values()))
        elif isinstance(node, list):
            containers.extend((node, i) for i in range(len(node)))
            list(map(walk, node))

    walk(doc)
    if not containers:
        return raw
    node, key = rng.choice(containers)
    node[key] = MARKER
    return json.dumps(doc).replace(f'"{MARKER}"', rng.choice(BOMBS)).encode()


def header_bomb(raw: bytes, rng: random.Random) -> bytes:
    n = header_len(raw)
    header = bomb(raw[8:n], rng)
    return len(header).to_bytes(8, "little") + header + raw[n:]


def test_json_bombs_in_every_file_read(models, tmp_path, capsys):
    base, merged, sharded, adapter = models
    rng = random.Random(14)
    ft, sh, ad = _copy(merged, tmp_path / "ft"), _copy(sharded, tmp_path / "sh"), _copy(adapter, tmp_path / "ad")
    targets = [(ft / "model.safetensors", header_bomb, [str(base), str(ft)]),
               (ft / "config.json", bomb, [str(base), str(ft)]),
               (sh / "model.safetensors.index.json", bomb, [str(base), str(sh)]),
               (ad / "adapter_config.json", bomb, [str(base), str(ad)]),
               (ad / "adapter_model.safetensors", header_bomb, [str(base), str(ad)])]
    for target, mutate, argv in targets:
        fuzz(capsys, tmp_path, target, [lambda raw, m=mutate: m(raw, rng)] * 12, argv)


def test_json_bombs_in_training_logs_never_stop_the_run(models, tmp_path, capsys):
    """Logs are informative: a hostile record is left out with a warning, the run exits 0."""
    base, merged, _, _ = models
    run = tmp_path / "run"
    _copy(merged, run / "checkpoint-5")
    state = run / "checkpoint-5" / "trainer_state.json"
    state.write_text(json.dumps({"global_step": 5, "log_history": [{"step": 1, "loss": 2.0}, {"step": 5, "loss": 1.0}]}))
    (run / "metrics.jsonl").write_text("\n".join(json.dumps({"step": s, "loss": 1 / s, "lr": [s]}) for s in (1, 3, 5)))
    rng = random.Random(15)
    for target in (run / "metrics.jsonl", state):
        pristine = target.read_bytes()
        for _ in range(10):
            if target.suffix == ".jsonl":   # one bad line among good ones
                lines = pristine.splitlines()
                i = rng.randrange(len(lines))
                target.write_bytes(b"\n".join([*lines[:i], bomb(lines[i], rng), *lines[i + 1:]]))
            else:
                target.write_bytes(bomb(pristine, rng))
            code, err = run_guarded(capsys, "compare", str(base), str(run), "-q")
            assert code == 0, err
        target.write_bytes(pristine)


NAMES = [b"caf\xe9", b"\xff", b"\x80\x81", b"ok-\xc3\xa9-\xe9", b"\xed\xa0\x80", b"tab\tand\x1b[2J"]


def test_non_utf8_and_control_names_of_runs(models, tmp_path, capsys):
    base, merged, _, _ = models
    for i, raw in enumerate(NAMES):
        run = _copy(merged, Path(os.fsdecode(bytes(tmp_path) + b"/" + raw)))
        csv, js = tmp_path / f"t{i}.csv", tmp_path / f"s{i}.json"
        code, err = run_guarded(capsys, "compare", str(base), str(run), "-q", "--csv", str(csv), "--json", str(js))
        assert code == 0, err
        csv.read_text(encoding="utf-8")
        json.loads(js.read_text(encoding="utf-8"))
        shutil.rmtree(run)
