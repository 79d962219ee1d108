"""The table's 'zero change' flag, its warning and the verdict of an adapter that changes nothing."""

from __future__ import annotations

import pytest

pytest.importorskip("peft")
pytest.importorskip("transformers")
import peft  # noqa: E402
import torch  # noqa: E402

from dora_diag.analysis.check import check  # noqa: E402
from dora_diag.analysis.compare import compare  # noqa: E402
from dora_diag.analysis.table import ZERO_CHANGE  # noqa: E402
from dora_diag.analysis.verdict import UNCHANGED_HEADLINE  # noqa: E402
from tiny_peft import llama, save_lora_run  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")


def _adapter(root, use_dora: bool, train: str | None = None):
    """The tiny LLaMA base and a q/v adapter saved as initialised (B = 0; DoRA's magnitude = ‖W0‖ rows),
    with B of the modules named ``train`` made nonzero."""
    torch.manual_seed(0)
    model = llama()
    model.save_pretrained(root / "base")
    pm = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], use_dora=use_dora))
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if train and train in name and "lora_B" in name:
                p.add_(0.1 * torch.randn(p.shape))
    pm.save_pretrained(root / "adapter")
    return root / "base", root / "adapter"


@pytest.mark.parametrize("use_dora", [False, True])
def test_untrained_adapter_is_flagged_and_warned(tmp_path, use_dora):
    base, adapter = _adapter(tmp_path, use_dora)
    a = compare(base, adapter)
    assert len(a.table) == 4 and (a.table["flags"] == ZERO_CHANGE).all()
    assert (a.table["delta_m"] == 0).all() and (a.table["delta_d"] == 0).all()
    (line,) = [w for w in a.meta.warnings if ZERO_CHANGE in w]
    assert line.startswith("adapter: 4 adapted tensor(s) in 1 checkpoint(s) are exactly the base")


def test_only_the_unchanged_modules_are_flagged(tmp_path):
    base, adapter = _adapter(tmp_path, use_dora=False, train="q_proj")
    t = compare(base, adapter).table
    zero = t["flags"] == ZERO_CHANGE
    assert (zero == (t["module"] == "v_proj")).all() and zero.sum() == 2
    assert (t.loc[~zero, "delta_d"] > 0).all()


def test_full_checkpoint_equal_to_base_is_not_flagged(tmp_path):
    """The flag is for adapters: a full checkpoint's frozen tensors are not an adapter's no-op."""
    base, _ = _adapter(tmp_path, use_dora=False)
    t = compare(base, base).table
    assert (t["delta_m"] == 0).all() and not t["flags"].str.contains(ZERO_CHANGE).any()


def test_verdict_of_an_adapter_that_changes_nothing(tmp_path):
    base, run = save_lora_run(tmp_path, layers=6, steps=(5,))
    trained = check(base, f"trained={run}").verdicts[0]
    assert trained.headline != UNCHANGED_HEADLINE
    _, adapter = _adapter(tmp_path / "zero", use_dora=False)
    v = check(tmp_path / "zero" / "base", f"zero={adapter}").verdicts[0]
    assert v.decision == "inconclusive" and v.decided_by == "none" and v.headline == UNCHANGED_HEADLINE
    assert ZERO_CHANGE in v.reason
