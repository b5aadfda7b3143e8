"""The no-learning anchors of benchmarks/reproduce_ptde_ltr.py: best single feature, random scores, LambdaMART."""

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from reproduce_ptde_ltr import (  # noqa: E402
    best_single_feature, expected_random_ndcg, lambdamart_anchor, load_split, ltr_options, random_anchor)

from ctde.envs.ltr import ndcg_at_k_numpy  # noqa: E402

DOCS = 5


def _write_tiny(path: Path, queries: int = 12) -> Path:
    """Feature 1: noise; 2: 2 * label + 1 (perfectly correlated); 3: label with the top two documents swapped;
    4: noise. Labels 0..4, never all zero in a query."""
    rng = np.random.default_rng(7)
    lines = []
    for q in range(queries):
        labels = rng.integers(0, 5, DOCS)
        labels[rng.integers(DOCS)] = rng.integers(1, 5)
        order = np.argsort(-labels, kind="stable")
        swapped = labels.astype(float).copy()
        swapped[order[0]], swapped[order[1]] = labels[order[1]] - 0.5, labels[order[0]]
        for d in range(DOCS):
            lines.append(f"{labels[d]} qid:{q} 1:{rng.normal():.4f} 2:{2 * labels[d] + 1} 3:{swapped[d]} "
                         f"4:{rng.normal():.4f}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def tiny(tmp_path):
    options = ltr_options(docs_per_query=DOCS, k=DOCS)
    data, splits = load_split(_write_tiny(tmp_path / "tiny.txt"), options)
    return data, splits, options


def test_best_single_feature_finds_the_perfect_feature(tiny):
    data, splits, options = tiny
    best = best_single_feature(data.features, data.labels, data.valid, splits["train"], splits["test"], options.k)
    assert (best["feature"], best["sign"]) == (2, 1)
    assert best["train_ndcg"] == pytest.approx(1.0)
    assert best["test_ndcg"] == pytest.approx(1.0)


def test_best_single_feature_reads_the_sign(tiny):
    data, splits, options = tiny
    flipped = data.features.copy()
    flipped[..., 1] *= -1  # now only -feature 2 ranks perfectly
    best = best_single_feature(flipped, data.labels, data.valid, splits["train"], splits["test"], options.k)
    assert (best["feature"], best["sign"]) == (2, -1)
    assert best["test_ndcg"] == pytest.approx(1.0)


def test_random_anchor_is_seeded_and_matches_its_expectation(tiny):
    data, splits, options = tiny
    test = splits["test"]
    first = random_anchor(data.labels, data.valid, test, options.k, draws=400, seed=3)
    again = random_anchor(data.labels, data.valid, test, options.k, draws=400, seed=3)
    other = random_anchor(data.labels, data.valid, test, options.k, draws=400, seed=4)
    assert 0.0 < first["mean"] < 1.0 and 0.0 < first["expected"] < 1.0
    assert first["per_draw"] == again["per_draw"] and first["mean"] == again["mean"]
    assert first["per_draw"] != other["per_draw"]
    assert first["mean"] == pytest.approx(first["expected"], abs=4 * first["std_over_draws"] / np.sqrt(400) + 1e-3)


def test_expected_random_ndcg_is_exact():
    """Against enumerating every score vector of a 3-document query (and a padded 4th slot), ties by file order."""
    labels = np.array([[1.0, 3.0, 0.0, 0.0]])
    valid = np.array([[True, True, True, False]])
    k = 2
    brute = np.mean([ndcg_at_k_numpy(np.array([*s, 0]), labels[0], valid[0], k)
                     for s in itertools.product(range(10), repeat=3)])
    assert expected_random_ndcg(labels, valid, k)[0] == pytest.approx(brute, abs=1e-12)
    assert expected_random_ndcg(np.zeros((1, 4)), valid, k)[0] == 1.0  # all-zero labels score 1


def test_lambdamart_anchor_is_deterministic(tiny):
    pytest.importorskip("lightgbm", reason="the LambdaMART anchor needs the optional extra: pip install -e .[ltr]")
    data, splits, options = tiny
    result = lambdamart_anchor(data.features, data.labels, data.valid, splits["train"], splits["test"], options.k,
                               seeds=[0, 1])
    assert len(result["test_ndcg"]) == 2 and result["test_ndcg"][0] == result["test_ndcg"][1]
    assert 0.0 < result["test_ndcg"][0] <= 1.0
    assert result["train_groups"] == len(splits["train"])
