"""benchmarks/throughput_rounds.py pools the side-by-side rounds of several throughput.py results."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from throughput_rounds import pool  # noqa: E402

SETTING = "b_jaxmarl_matched_bfloat16"


def _result(ratios: list[float], whole: float | None = None, setting: str = SETTING, cpu: str | None = None
            ) -> dict:
    rounds = [{"peak_gflops": {"bfloat16": 300.0}, "ours": {setting: 1000.0 * r}, "ratios": {setting: r},
               "jaxmarl": {"steady_state_steps_per_second": 1000.0}} for r in ratios]
    result = {"date": "2026-11-22", "side_by_side_b": {"rounds": rounds}}
    if cpu is not None:
        result["cpu"] = {"model": cpu, "matrix_instructions": []}
    if whole is not None:
        result["whole_run_matched_learning_start_bfloat16"] = {"102400_steps": {"ratio": whole}}
    return result


def test_median_is_over_every_round_not_the_median_of_run_medians(tmp_path):
    # Run medians 1.0 and 2.0 (their mean 1.5); the pooled median of the five rounds is 1.1.
    (tmp_path / "a.json").write_text(json.dumps(_result([1.0, 1.0, 1.1], whole=1.2)))
    (tmp_path / "b.json").write_text(json.dumps(_result([2.0, 2.0], whole=1.6)))
    (tmp_path / "other.json").write_text(json.dumps(_result([9.0], setting="b_jaxmarl_matched")))
    summary = pool(sorted(tmp_path.glob("*.json")), SETTING)
    pooled = summary["by_cpu"]["not recorded"]
    assert pooled["rounds"] == 5
    assert pooled["median_ratio"] == pytest.approx(1.1)
    assert (pooled["min_ratio"], pooled["max_ratio"]) == (1.0, 2.0)
    assert pooled["whole_run_median_ratio"] == {"102400_steps": pytest.approx(1.4)}
    assert [entry["file"] for entry in summary["files"]] == ["a.json", "b.json"]


def test_rounds_of_different_cpus_are_pooled_apart(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(_result([1.4, 1.5], cpu="AMD EPYC")))
    (tmp_path / "b.json").write_text(json.dumps(_result([2.0, 2.2, 2.4], whole=2.1, cpu="Intel Xeon")))
    (tmp_path / "c.json").write_text(json.dumps(_result([1.3], cpu="AMD EPYC")))
    by_cpu = pool(sorted(tmp_path.glob("*.json")), SETTING)["by_cpu"]
    assert set(by_cpu) == {"AMD EPYC", "Intel Xeon"}
    assert (by_cpu["AMD EPYC"]["rounds"], by_cpu["AMD EPYC"]["median_ratio"]) == (3, pytest.approx(1.4))
    assert by_cpu["Intel Xeon"]["median_ratio"] == pytest.approx(2.2)
    assert by_cpu["Intel Xeon"]["whole_run_median_ratio"] == {"102400_steps": pytest.approx(2.1)}
    assert by_cpu["AMD EPYC"]["whole_run_median_ratio"] == {}


def test_no_rounds_is_an_error_naming_the_fix(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"date": "2026-11-22"}))
    with pytest.raises(SystemExit, match="--jaxmarl-qmix"):
        pool([tmp_path / "a.json"], SETTING)
