"""One orientation decision (``architecture.orientation``): the planner and the PEFT adapter reader agree."""

from __future__ import annotations

import pytest

from dora_diag.analysis.plan import make_plan
from dora_diag.architecture.orientation import is_experts_stack, stored_transposed
from dora_diag.io.checkpoint import open_checkpoint
from dora_diag.io.peft import open_adapter
from dora_diag.io.runs import CheckpointRef

pytest.importorskip("peft")
pytest.importorskip("transformers")
from tiny_peft import save_adapter_case  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")

# model, targets, which stored leaves are (in, out)
CASES = {"gpt2": (["c_attn", "c_fc", "c_proj"], {"c_attn", "c_fc", "c_proj"}),
         "llama": (["q_proj", "v_proj", "down_proj"], set())}


@pytest.mark.parametrize("model", list(CASES))
def test_plan_and_adapter_agree(tmp_path, model):
    targets, transposed = CASES[model]
    case = save_adapter_case(tmp_path, model, r=2, target_modules=targets, fan_in_fan_out=model == "gpt2")
    base = open_checkpoint(case.base)
    source = open_adapter(str(case.adapter), base)
    plan = make_plan(base, [(CheckpointRef("run", None, "adapter", str(case.adapter)), source)])
    planned = {t.info.name: t.transposed for t in plan.tensors}
    assert set(planned) == set(source.infos()) and len(planned) >= 2 * len(targets)   # all of both layers
    for name, flag in planned.items():
        leaf = name.removesuffix(".weight").rsplit(".", 1)[-1]
        assert flag is (leaf in transposed), name
        assert source.transposed(name) is flag, name


@pytest.mark.parametrize("name,shape,expected", [
    ("h.0.attn.c_attn.weight", (16, 48), True),        # gpt2 Conv1D (in, out)
    ("h.0.attn.c_attn.bias", (48,), False),
    ("model.layers.0.mlp.experts.gate_up_proj", (3, 16, 24), True),   # gpt-oss x @ W[e]
    ("conv.weight", (8, 6, 3, 3), False),
])
def test_stored_transposed_by_layer_type(name, shape, expected):
    model_type = "gpt_oss" if "experts" in name else "gpt2"
    assert stored_transposed(model_type, name, shape) is expected
    assert is_experts_stack(name, shape) is ("experts" in name)
