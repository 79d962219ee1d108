"""Renamed modules: PEFT (with transformers 5) names adapter tensors after the in-memory modules
(ViT ``vit.layers.0.attention.q_proj``) while ``save_pretrained`` writes the base under the
checkpoint names (``vit.encoder.layer.0.attention.attention.query``). The adapter must
give exactly the numbers of PEFT's own merge, with transformers' mappings and with our table."""

from __future__ import annotations

import numpy as np
import pytest

import dora_diag
from cli_helpers import assert_one_line_error, call
from dora_diag.architecture import renames
from dora_diag.errors import InputError
from tiny_families import build

peft = pytest.importorskip("peft")
pytest.importorskip("transformers")
from tiny_peft import perturb  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")
LORA = dict(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj", "fc1"], modules_to_save=["classifier"])


@pytest.fixture(scope="module")
def vit_case(tmp_path_factory):
    root = tmp_path_factory.mktemp("vit")
    model = build("vit")
    model.save_pretrained(root / "base")
    pm = peft.get_peft_model(model, peft.LoraConfig(**LORA, use_dora=True))
    perturb(pm, 3)
    pm.save_pretrained(root / "adapter")
    pm.merge_and_unload().save_pretrained(root / "merged")
    return root


def _without_transformers(monkeypatch):
    monkeypatch.setattr(renames, "_from_transformers", lambda frozen: None)


@pytest.mark.parametrize("source", ["transformers", "table"])
def test_adapter_on_renamed_modules_matches_merge(vit_case, monkeypatch, source):
    if source == "table":
        _without_transformers(monkeypatch)
    a = dora_diag.compare(vit_case / "base", vit_case / "adapter")
    m = dora_diag.compare(vit_case / "base", vit_case / "merged")
    ta = a.table.sort_values("tensor").reset_index(drop=True)
    assert len(ta) == 2 * 3 + 1       # q, v, fc1 in each of 2 layers, and the classifier
    assert ta["tensor"].str.startswith("vit.encoder.layer.").sum() == 6
    tm = m.table.set_index("tensor").loc[ta["tensor"]].reset_index()
    for col in ("delta_m", "delta_d", "rel_delta_m"):
        np.testing.assert_allclose(ta[col], tm[col], rtol=1e-5, err_msg=col)
    assert not a.meta.unmatched


def test_adapter_not_found_in_the_base_is_an_error(vit_case, monkeypatch, capsys):
    _without_transformers(monkeypatch)
    monkeypatch.setattr(renames, "RENAMES", {})
    with pytest.raises(InputError, match="this adapter changes 8 tensors, 2 found in the base"):
        dora_diag.compare(vit_case / "base", vit_case / "adapter")
    code, _, err = call(capsys, "compare", "-q", str(vit_case / "base"), str(vit_case / "adapter"))
    assert_one_line_error(code, err, "4 more")
    a = dora_diag.compare(vit_case / "base", vit_case / "adapter", allow_partial=True)
    assert list(a.table["tensor"]) == ["classifier.weight"]
    assert sum(u["side"] == "finetuned" for u in a.meta.unmatched) == 6
    code, _, err = call(capsys, "compare", "--allow-partial", str(vit_case / "base"), str(vit_case / "adapter"))
    assert code == 0 and "6 only in the fine-tuned checkpoint" in err


def test_hostile_config_falls_back_to_the_table():
    # A class that is not a transformers model, or a config it cannot be built from.
    for cfg in ({"architectures": ["os.system"], "model_type": "vit"},
                {"architectures": ["ViTForImageClassification"], "model_type": "vit", "hidden_size": "x"},
                {"architectures": ["ViTForImageClassification"], "model_type": "vit", "num_hidden_layers": 10**9}):
        rename = renames.renamer(cfg)
        assert rename("vit.encoder.layer.3.attention.attention.query.weight") == "vit.layers.3.attention.q_proj.weight"
