"""The calibration report from synthetic results: commands, grades, missing statistics."""

from calibration_report import render

STATS = {"pearson_r": 0.9, "pearson_r_ci_low": 0.8, "pearson_r_ci_high": 0.95, "within_checkpoint_r": 0.5,
         "within_checkpoint_r_ci_low": 0.1, "within_checkpoint_r_ci_high": 0.8, "partial_r": None,
         "units": 6, "checkpoints": 5, "ci_method": "layer bootstrap", "p_method": "layer permutation"}


def _verdict(decision):
    return {"decision": decision, "decided_by": "heuristic", "statistic": "within_checkpoint_r", "stats": STATS}


def _record(seed, lora_loss, dora_loss):
    # DoRA's loss is higher but so is its accuracy: the two metrics disagree
    runs = {m: {"eval_loss": loss, "eval_accuracy": acc, "step_time_s": 0.1}
            for m, loss, acc in (("ft", 0.2, 0.9), ("lora", lora_loss, 0.5), ("dora", dora_loss, 0.6 + seed / 100))}
    return {"seed": seed, "runs": runs, "alone": _verdict("dora_likely_helps"),
            "together": {"FT": _verdict("not_applicable"), "LoRA": _verdict("dora_likely_helps"),
                         "DoRA": _verdict("not_applicable")}}


def _result():
    return {"setting": "toy", "description": "a toy setting",
            "command": "python benchmarks/verdict_calibration.py --setting toy",
            "fields": {"steps": 10, "targets": ["q", "v"]}, "lr": {"ft": 1e-3, "lora": 4e-3, "dora": 4e-3},
            "seeds": [0, 1, 2], "finished": "today", "environment": "dora-diag 0 at commit abc",
            "records": [_record(0, 1.0, 1.1), _record(1, 1.0, 1.12), _record(2, 1.0, 1.09)],
            "trial": {"settings": {"steps": 5}, "summary": "DoRA raised it",
                      "runs": [{"method": m, "seed": k, "eval_loss": loss + k / 50, "eval_accuracy": 0.5}
                               for k in (0, 1) for m, loss in (("lora", 1.0), ("dora", 1.1))]},
            "with_trial": {"decision": "marginal", "decided_by": "trial"}}


def test_report_grades_a_wrong_heuristic_per_metric_and_marks_missing_statistics():
    text = render([_result()])
    assert "python benchmarks/verdict_calibration.py --setting toy" in text.splitlines()[5]
    assert "* `toy`: dora-diag 0 at commit abc; finished today." in text
    assert ("By eval loss, **DoRA worse** (DoRA better in 0 of 3 seeds): the heuristic was wrong on seed 0 "
            "(dora_likely_helps), seed 1") in text
    assert "By eval accuracy, **DoRA better** (DoRA better in 3 of 3 seeds): the heuristic was never wrong" in text
    assert "the trial said DoRA worse (right)" in text                # trial loss +0.1 in both seeds
    assert "the trial said no clear difference (wrong)" in text        # trial accuracy unchanged
    assert "**The two metrics disagree**" in text
    assert "| toy | eval loss | 3 | dora_likely_helps × 3 |" in text
    assert "| 0/3 | DoRA worse | wrong × 3 |" in text and "| 3/3 | DoRA better | right × 3 |" in text
    assert "partial_r [CI] |" in text and "| missing |" in text          # partial_r absent -> "missing"
    assert "| marginal (trial) |" in text
    assert "--targets q,v" in text
    assert "Missing columns" in text and "partial_r" in text.split("Missing columns")[1]
