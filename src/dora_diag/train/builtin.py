"""The builtin base model: the small transformer trained on task A, built on first use and cached.

Building is deterministic (fixed seeds, CPU, single-threaded kernels are not required: the
result only has to be a good task-A model, and the cache key pins the recipe). The cache lives in
``$DORA_DIAG_CACHE``, else ``$XDG_CACHE_HOME/dora-diag``, else ``~/.cache/dora-diag``; a build
is written to a temp dir and renamed, so concurrent first uses cannot leave a broken cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import InputError
from ..outputs.atomic import write_atomic
from .data import BUILTIN_VOCAB, builtin_task
from .model import BuiltinConfig, BuiltinTransformer, is_builtin_dir, load_builtin, save_full_model
from .config import TrainConfig
from .loop import Setup, evaluate, optimize, threads_for, torch_threads

RECIPE_VERSION = 1
BASE_INFO = "base_info.json"


@dataclass(frozen=True)
class BaseRecipe:
    """How the task-A base is made (all of it goes into the cache key)."""

    model: BuiltinConfig = BuiltinConfig(vocab_size=BUILTIN_VOCAB)
    train_examples: int = 4096
    eval_examples: int = 512
    steps: int = 400
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 30
    seed: int = 0

    def key(self) -> str:
        raw = json.dumps({"v": RECIPE_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(raw.encode()).hexdigest()[:12]


DATA_SEEDS = {"train": 101, "eval": 202}


def cache_root() -> Path:
    if os.environ.get("DORA_DIAG_CACHE"):
        return Path(os.environ["DORA_DIAG_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "dora-diag"


def task_split(task: str, recipe: BaseRecipe = BaseRecipe()):
    """(train, eval) TaskData of builtin task A or B (fixed data seeds, independent of run seeds)."""
    return (builtin_task(task, recipe.train_examples, DATA_SEEDS["train"] + ord(task)),
            builtin_task(task, recipe.eval_examples, DATA_SEEDS["eval"] + ord(task)))


def build_base(directory: Path, recipe: BaseRecipe) -> dict:
    """Train the base on task A into ``directory`` (exists, empty); returns its eval metrics on A and B."""
    torch.manual_seed(recipe.seed)
    model = BuiltinTransformer(recipe.model)
    train_a, eval_a = task_split("A", recipe)
    cfg = TrainConfig(out=str(directory), method="ft", steps=recipe.steps, batch_size=recipe.batch_size,
                      lr=recipe.lr, warmup_steps=recipe.warmup_steps, seed=recipe.seed)
    for p in model.parameters():
        p.requires_grad_(True)
    cpu = torch.device("cpu")
    with torch_threads(threads_for(model, cpu)):
        optimize(model, train_a, cfg, cpu)
        info = {"recipe": asdict(recipe), "task_A": evaluate(model, eval_a, 256, cpu),
                "task_B": evaluate(model, task_split("B", recipe)[1], 256, cpu)}
    save_full_model(model, directory)
    write_atomic(directory / BASE_INFO, json.dumps(info, indent=2) + "\n")
    return info


def builtin_base(recipe: BaseRecipe = BaseRecipe(), cache: Path | None = None) -> Path:
    """Directory of the cached task-A base (model.safetensors + config.json), built if missing."""
    root = cache or cache_root()
    final = root / f"builtin-base-{recipe.key()}"
    if is_builtin_dir(final) and (final / "model.safetensors").is_file():
        return final
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    except OSError as e:
        raise InputError(f"{root}: cannot create the builtin model cache ({e.strerror or e}); "
                         "set DORA_DIAG_CACHE to a writable directory") from None
    try:
        build_base(tmp, recipe)
        os.replace(tmp, final)
    except OSError:
        if not is_builtin_dir(final):  # not a lost race with another process: a real failure
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def copy_model_dir(src: Path, dst: Path) -> None:
    """Copy a builtin model directory's files (atomic writes)."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir()):
        if f.is_file():
            write_atomic(dst / f.name, f.read_bytes())


def builtin_setup(model: str, data: str, run_dir: Path) -> Setup:
    """Setup for the builtin task B on the cached base (``model == "builtin"``, copied to run_dir/base)
    or on a builtin model directory given by path."""
    if data != "builtin":
        raise InputError("the builtin model trains on data='builtin' only; use a Hugging Face model for "
                         "JSONL data")
    if model == "builtin":
        base = run_dir / "base"
        copy_model_dir(builtin_base(), base)
    else:
        base = Path(model)
    net = load_builtin(base)
    if net.config.vocab_size != BUILTIN_VOCAB or net.config.num_labels:
        raise InputError(f"{model}: the builtin task needs a language-model head over {BUILTIN_VOCAB} tokens")
    train_b, eval_b = task_split("B")
    return Setup(net, train_b, eval_b, str(base))
