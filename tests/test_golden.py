"""ctde against the authors' released code, without PyTorch: every golden file under tests/golden/ holds inputs,
our parameter values and the authors' outputs (losses, per-step network outputs, gradients, parameters after one
optimizer step), written by benchmarks/against_authors.py; our code must still reproduce them."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from crosscheck.common import compare, golden_names, load_golden  # noqa: E402
from crosscheck.registry import components  # noqa: E402

COMPONENTS = components()
NAMES = golden_names()


def test_every_component_has_its_golden_file():
    assert sorted(COMPONENTS) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_matches_the_authors_code(name):
    component = COMPONENTS[name]
    golden = load_golden(name)
    with jax.default_matmul_precision("highest"):
        ours = component.ours(golden)
    differences = compare(ours, golden.expected)
    too_far = {key: d for key, d in differences.items() if not d[1] <= component.tolerance}
    assert not too_far, f"{name} departs from the authors' outputs (abs, rel): {too_far}"
