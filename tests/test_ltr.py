"""Learning to Rank (env=ltr:<path>): NDCG@k against hand computations, the LETOR loader on the shared samples
and on malformed files, the splits, and the environment's shapes, masks and reward."""

import math
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ctde.config import EnvConfig, LTRConfig, build_config
from ctde.envs import check_env, list_environments, make_env
from ctde.envs.ltr import LTREnv, LTRState, load_ltr, ndcg_at_k, ndcg_at_k_numpy, split_queries
from ctde.errors import ConfigError
from ctde.training.resolve import resolve

# The shared samples (README.md there): $CTDE_LTR_DATA, else shared/ beside the checkout (as CI lays it) or in it.
_REPO = Path(__file__).resolve().parents[1]
_CANDIDATES = [Path(os.environ["CTDE_LTR_DATA"])] if "CTDE_LTR_DATA" in os.environ else []
_CANDIDATES += [_REPO.parent / "shared" / "data" / "ltr", _REPO / "shared" / "data" / "ltr"]
DATA = next((c for c in _CANDIDATES if c.exists()), _CANDIDATES[0])
MSLR = DATA / "mslr_web10k_sample"
YAHOO = DATA / "yahoo_ltr_sample"
needs_samples = pytest.mark.skipif(not MSLR.exists() or not YAHOO.exists(), reason="shared LTR samples not found")

L3 = math.log2(3.0)  # discount of rank 2 is 1 / log2(3); rank 3: 1 / 2; rank 1: 1


def ndcg(scores, labels, valid=None, k=10):
    valid = np.ones(len(labels), bool) if valid is None else np.asarray(valid)
    return float(ndcg_at_k(jnp.asarray(scores), jnp.asarray(labels, jnp.float32), jnp.asarray(valid), k))


# ---------------------------------------------------------------------------------------------------------
# NDCG@k by hand


def test_ndcg_hand_computed_with_cutoff_and_ties():
    # Scores rank doc 3 (9) first, then docs 1 and 2 (tied at 5: file order, doc 1 first), then doc 0.
    labels, scores = [3, 2, 0, 1], [0, 5, 5, 9]
    idcg3 = 7 + 3 / L3 + 1 / 2  # ideal order of labels 3, 2, 1
    assert ndcg(scores, labels, k=3) == pytest.approx((1 + 3 / L3 + 0 / 2) / idcg3, rel=1e-6)
    assert ndcg(scores, labels, k=1) == pytest.approx(1 / 7, rel=1e-6)  # k smaller than D: only doc 3 counts
    idcg4 = idcg3  # the fourth ideal label is 0
    dcg4 = 1 + 3 / L3 + 0 / 2 + 7 / math.log2(5)
    assert ndcg(scores, labels, k=4) == pytest.approx(dcg4 / idcg4, rel=1e-6)
    assert ndcg(scores, labels, k=100) == pytest.approx(dcg4 / idcg4, rel=1e-6)  # k past D: all of them
    assert ndcg([9, 7, 3, 5], labels, k=3) == pytest.approx(1.0, rel=1e-6)  # the ideal ranking


def test_ndcg_ties_keep_file_order():
    # Equal scores: the earlier document ranks first (LightGBM / XGBoost), never at random.
    assert ndcg([4, 4], [0, 1], k=2) == pytest.approx(1 / L3, rel=1e-6)  # 0.6309...: the relevant one second
    assert ndcg([4, 4], [1, 0], k=2) == pytest.approx(1.0, rel=1e-6)
    assert ndcg([0, 0, 0], [0, 0, 2], k=3) == pytest.approx((3 / 2) / 3, rel=1e-6)  # all tied: file order
    assert ndcg([0, 0, 0], [0, 0, 2], k=2) == 0.0  # the only relevant document is third


def test_ndcg_all_zero_labels_score_one():
    for scores in ([0, 0, 0], [9, 1, 5], [3, 3, 0]):
        assert ndcg(scores, [0, 0, 0], k=2) == 1.0
    # The padding's label is ignored: the real labels are all 0.
    assert ndcg([1, 2, 3], [0, 0, 4], valid=[True, True, False], k=3) == 1.0


def test_ndcg_excludes_padding():
    # Doc 1 is padding with the top score, tied with doc 2 and earlier: excluded, it takes no rank.
    labels, valid = [2, 0, 3], [True, False, True]
    assert ndcg([1, 9, 9], labels, valid, k=2) == pytest.approx(1.0, rel=1e-6)
    assert ndcg([9, 0, 1], labels, valid, k=2) == pytest.approx((3 + 7 / L3) / (7 + 3 / L3), rel=1e-6)
    assert ndcg([9, 0, 1], labels, valid, k=1) == pytest.approx(3 / 7, rel=1e-6)
    # A query of one real document always scores 1.
    assert ndcg([0, 9, 9], [1, 4, 4], [True, False, False], k=10) == 1.0


def test_ndcg_jit_vmap_matches_numpy_reference():
    rng = np.random.default_rng(0)
    n, d = 256, 10
    scores = rng.integers(0, 10, (n, d))
    labels = rng.integers(0, 5, (n, d)) * (rng.random((n, d)) < 0.6)
    lengths = rng.integers(1, d + 1, n)
    valid = np.arange(d)[None, :] < lengths[:, None]
    for k in (1, 3, 10):
        got = jax.jit(jax.vmap(lambda s, l, v: ndcg_at_k(s, l, v, k)))(scores, labels.astype(np.float32), valid)
        assert got.dtype == jnp.float32 and got.shape == (n,)
        want = [ndcg_at_k_numpy(scores[i], labels[i], valid[i], k) for i in range(n)]
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------
# Loader on the shared samples


def _first_lines(path: Path, n: int) -> list[tuple[int, str, dict[int, float]]]:
    rows = []
    with open(path) as lines:
        for line in lines:
            parts = line.split()
            feats = {int(t.split(":")[0]): float(t.split(":")[1]) for t in parts[2:]}
            rows.append((int(parts[0]), parts[1][4:], feats))
            if len(rows) == n:
                return rows
    return rows


@pytest.fixture(scope="module")
def mslr():
    return load_ltr(MSLR, 10)


@pytest.fixture(scope="module")
def yahoo():
    return load_ltr(YAHOO, 10)


@needs_samples
def test_loader_dense_mslr_sample(mslr):
    data = mslr
    names = [f.name for f in data.files]
    assert names == ["msn1.fold1.test.5k.txt", "msn1.fold1.train.5k.txt"]  # sorted by name
    assert data.features.shape == (86, 10, 136) and data.features.dtype == np.float32
    assert [int((data.query_file == i).sum()) for i in range(2)] == [43, 43]
    assert int(data.n_docs.sum()) == 10_000
    train = data.query_file == 1
    assert int(data.n_docs[train].min()) == 18 and int(data.n_docs[train].max()) == 308
    assert data.valid.all()  # every query has >= 10 documents: nothing padded, everything trimmed
    assert set(np.unique(data.labels)) <= {0, 1, 2, 3, 4}
    # The first training query is qid 1: its 10 kept documents are the file's first 10 lines, dense.
    q = int(np.flatnonzero(train)[0])
    assert data.qids[q] == "1"
    lines = _first_lines(MSLR / "msn1.fold1.train.5k.txt", 11)
    for slot in range(10):
        label, qid, feats = lines[slot]
        assert qid == "1" and data.labels[q, slot] == label
        dense = np.zeros(136, np.float32)
        for index, value in feats.items():
            dense[index - 1] = value
        np.testing.assert_array_equal(data.features[q, slot], dense)
    assert lines[10][1] == "1"  # an 11th document of qid 1 exists and was trimmed away


@needs_samples
def test_loader_sparse_yahoo_sample(yahoo):
    data = yahoo
    assert [f.name for f in data.files] == ["rank.test.qid.txt", "rank.train.qid.txt"]
    assert data.features.shape == (251, 10, 300)  # F = the largest index seen: 300
    assert [int((data.query_file == i).sum()) for i in range(2)] == [50, 201]
    assert int(data.n_docs.min()) == 1 and int(data.n_docs.max()) == 27 and int(data.n_docs.sum()) == 3773
    # Padding: a query keeps min(n_docs, 10) real documents, the rest are masked, zero features and labels.
    np.testing.assert_array_equal(data.valid.sum(1), np.minimum(data.n_docs, 10))
    assert int((data.n_docs < 10).sum()) == 27  # 23 training + 4 test queries are padded
    assert not data.features[~data.valid].any() and not data.labels[~data.valid].any()
    assert set(np.unique(data.labels[data.valid])) == {0, 1, 2, 3, 4}
    # Missing sparse features are 0: the first training line starts `0 qid:1 10:0.89 11:0.75 ...`.
    q = int(np.flatnonzero(data.query_file == 1)[0])
    label, qid, feats = _first_lines(YAHOO / "rank.train.qid.txt", 1)[0]
    assert data.qids[q] == qid == "1" and data.labels[q, 0] == label == 0
    assert not data.features[q, 0, :9].any() and data.features[q, 0, 9] == np.float32(0.89)
    assert np.count_nonzero(data.features[q, 0]) == sum(v != 0 for v in feats.values())
    # More documents per query: every document kept, the features of a document do not change.
    wide = load_ltr(YAHOO / "rank.test.qid.txt", 30)
    assert wide.features.shape == (50, 30, 300) and int(wide.valid.sum()) == 768
    np.testing.assert_array_equal(wide.features[:, :10], data.features[data.query_file == 0])


# ---------------------------------------------------------------------------------------------------------
# Loader on constructed and malformed files


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_loader_comments_blank_lines_and_regrouping(tmp_path):
    f = _write(tmp_path / "data.txt", "# header\n\n2 qid:7 1:0.5 3:1.5 # doc a\n0 qid:8 2:2\n1 qid:7 2:-1\n")
    data = load_ltr(f, 3)
    assert data.features.shape == (2, 3, 3) and data.qids == ["7", "8"]
    np.testing.assert_array_equal(data.valid, [[True, True, False], [True, False, False]])
    np.testing.assert_array_equal(data.labels, [[2, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(data.features[0], [[0.5, 0, 1.5], [0, -1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(data.n_docs, [2, 1])
    # A line with no features at all is a document of zero features.
    data = load_ltr(_write(tmp_path / "bare.txt", "1 qid:1\n0 qid:1 2:1\n"), 2)
    np.testing.assert_array_equal(data.features[0], [[0, 0], [0, 1]])


@pytest.mark.parametrize("bad_line, what", [
    ("x qid:1 1:0.5", "bad label 'x'"),
    ("-1 qid:1 1:0.5", "bad label '-1'"),
    ("1.5 qid:1 1:0.5", "bad label '1.5'"),
    ("1 1:0.5 2:0.3", "missing qid"),
    ("1", "missing qid"),
    ("1 qid: 1:0.5", "missing qid"),
    ("1 qid:1 1:0.5 2-0.3", "bad feature token '2-0.3'"),
    ("1 qid:1 1:0.5 :0.3", "bad feature token ':0.3'"),
    ("1 qid:1 0:0.5", "bad feature token '0:0.5'"),
    ("1 qid:1 1.5:0.5", "bad feature token '1.5:0.5'"),
    ("1 qid:1 1:abc", "bad feature token '1:abc'"),
    ("1 qid:1 1:nan", "bad feature token '1:nan'"),
    ("1 qid:1 1:2:3", "bad feature token '1:2:3'"),
])
def test_loader_names_file_and_line_of_malformed_input(tmp_path, bad_line, what):
    f = _write(tmp_path / "train.txt", f"2 qid:1 1:0.5 2:0.1\n\n# comment\n{bad_line}\n0 qid:1 1:0.2\n")
    with pytest.raises(ConfigError) as error:
        load_ltr(f, 10)
    message = str(error.value)
    assert f"{f}:4:" in message and what in message


def test_loader_refuses_empty_input_and_missing_paths(tmp_path):
    with pytest.raises(ConfigError, match="no documents"):
        load_ltr(_write(tmp_path / "empty.txt", ""), 10)
    with pytest.raises(ConfigError, match="no documents"):
        load_ltr(_write(tmp_path / "comments.txt", "# nothing\n\n"), 10)
    (tmp_path / "nodata").mkdir()
    _write(tmp_path / "nodata" / "README.md", "hello")
    with pytest.raises(ConfigError, match="no data files"):
        load_ltr(tmp_path / "nodata", 10)
    with pytest.raises(ConfigError, match="no such file or folder"):
        load_ltr(tmp_path / "missing", 10)


# ---------------------------------------------------------------------------------------------------------
# Splits


@needs_samples
def test_seeded_split_is_deterministic_and_disjoint_by_query(yahoo):
    a = split_queries(yahoo, LTRConfig(split_seed=3))
    b = split_queries(yahoo, LTRConfig(split_seed=3))
    c = split_queries(yahoo, LTRConfig(split_seed=4))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert len(a["train"]) == round(0.7 * 251) and len(a["validation"]) == 0
    assert not set(a["train"]) & set(a["test"]) and len(set(a["train"]) | set(a["test"])) == 251
    assert not np.array_equal(a["train"], c["train"])
    assert np.all(np.diff(a["train"]) > 0) and np.all(np.diff(a["test"]) > 0)  # sorted: file order
    # Both files' queries are pooled.
    assert set(yahoo.query_file[a["test"]]) == {0, 1}
    with pytest.raises(ConfigError, match="train_fraction"):
        split_queries(yahoo, LTRConfig(train_fraction=1.0))


def _query_folder(root: Path) -> Path:
    _write(root / "train.txt", "2 qid:1 1:1 2:0.5\n0 qid:1 1:0.1\n1 qid:1 2:3\n"
                               "0 qid:2 1:0.2 3:0.3\n1 qid:2 1:0.4\n")
    _write(root / "test.txt", "0 qid:1 3:1\n3 qid:1 1:2\n1 qid:1 2:2\n0 qid:1 3:3\n4 qid:1 1:1\n")
    _write(root / "README.md", "not data")
    return root


def test_files_split_uses_the_file_names(tmp_path):
    folder = _query_folder(tmp_path / "fold")
    env = LTREnv(folder, LTRConfig(docs_per_query=4, k=3, split="files"))
    assert [f.name for f in env.data.files] == ["test.txt", "train.txt"]
    np.testing.assert_array_equal(env.evaluation_queries("test"), [0])  # test.txt's qid 1
    np.testing.assert_array_equal(env.evaluation_queries("train"), [1, 2])  # train.txt's qid 1 and 2
    with pytest.raises(ConfigError, match="no validation queries"):
        env.evaluation_queries("validation")
    _write(tmp_path / "odd" / "train.txt", "1 qid:1 1:1\n")
    _write(tmp_path / "odd" / "extra.txt", "1 qid:1 1:1\n")
    with pytest.raises(ConfigError, match="cannot tell"):
        LTREnv(tmp_path / "odd", LTRConfig(split="files"))
    with pytest.raises(ConfigError, match="no training file"):
        LTREnv(folder / "test.txt", LTRConfig(split="files"))


# ---------------------------------------------------------------------------------------------------------
# The environment


@pytest.fixture()
def env(tmp_path):
    return LTREnv(_query_folder(tmp_path / "fold"), LTRConfig(docs_per_query=4, k=3, split="files", normalize="none"))


def test_env_spec_shapes_and_masks(env):
    spec = env.spec
    assert (spec.n_agents, spec.n_actions, spec.obs_dim, spec.state_dim, spec.episode_limit) == (4, 10, 3, 12, 1)
    assert not spec.has_win and spec.available_views == {} and not env.has_sight_range
    state, ts = env.reset_to(2)  # train.txt's qid 2: two documents, two padding slots
    np.testing.assert_array_equal(ts.obs, np.float32([[0.2, 0, 0.3], [0.4, 0, 0], [0, 0, 0], [0, 0, 0]]))
    np.testing.assert_array_equal(ts.state, np.asarray(ts.obs).reshape(-1))
    np.testing.assert_array_equal(ts.alive, [True, True, False, False])
    avail = np.asarray(ts.avail)
    assert avail.shape == (4, 10) and avail[:2].all()
    assert avail[2:, 0].all() and not avail[2:, 1:].any()  # padding: only score 0
    assert float(ts.reward) == 0 and not bool(ts.done) and not bool(ts.terminal) and not bool(ts.won)


def test_env_jit_vmap_reset_step_draw_training_queries(env):
    keys = jax.random.split(jax.random.PRNGKey(0), 64)
    states, ts = jax.jit(jax.vmap(env.reset))(keys)
    assert ts.obs.shape == (64, 4, 3) and ts.state.shape == (64, 12) and ts.avail.shape == (64, 4, 10)
    assert set(np.asarray(states.query).tolist()) == {1, 2}  # train.txt's queries only
    again = jax.vmap(env.timestep_of)(states)
    for a, b in zip(jax.tree_util.tree_leaves(ts), jax.tree_util.tree_leaves(again)):
        np.testing.assert_array_equal(a, b)
    actions = jax.random.randint(jax.random.PRNGKey(1), (64, 4), 0, 10)
    states2, ts2 = jax.jit(jax.vmap(env.step))(keys, states, actions)
    assert ts2.reward.shape == (64,) and ts2.reward.dtype == jnp.float32
    assert bool(ts2.done.all()) and bool(ts2.terminal.all()) and not bool(ts2.won.any())
    np.testing.assert_array_equal(states2.query, states.query)
    test_env = env.split_env("test")
    test_states, _ = jax.vmap(test_env.reset)(keys)
    assert set(np.asarray(test_states.query).tolist()) == {0}
    assert test_env.features is env.features and env.split == "train"  # a view of the same device arrays


def test_env_reward_equals_ndcg_on_a_constructed_query(env):
    # test.txt's query, as written in the file: labels 0, 3, 1, 0 (its fifth document, label 4, trimmed away).
    labels = [0, 3, 1, 0]
    state = LTRState(query=jnp.int32(0))
    actions = jnp.asarray(np.random.default_rng(0).integers(0, 10, (200, 4)), jnp.int32)
    rewards = jax.jit(jax.vmap(lambda a: env.step(None, state, a)[1].reward))(actions)
    want = [ndcg_at_k_numpy(a, labels, [True] * 4, 3) for a in np.asarray(actions)]
    np.testing.assert_allclose(np.asarray(rewards), want, rtol=1e-6)
    # By hand: scores put doc 1 (label 3) first, doc 2 (label 1) second: the ideal ranking.
    assert float(env.step(None, state, jnp.array([0, 9, 5, 0]))[1].reward) == pytest.approx(1.0)
    # All scores tied: file order 0, 3, 1 -> DCG = 0 + 7 / log2(3) + 1 / 2, IDCG = 7 + 1 / log2(3).
    tied = float(env.step(None, state, jnp.zeros(4, jnp.int32))[1].reward)
    assert tied == pytest.approx((7 / L3 + 1 / 2) / (7 + 1 / L3), rel=1e-6)
    # Padded query (train.txt's qid 2, labels 0, 1): padding scored 9 takes no rank.
    padded = LTRState(query=jnp.int32(2))
    assert float(env.step(None, padded, jnp.array([5, 1, 9, 9]))[1].reward) == pytest.approx(1 / L3, rel=1e-6)


def test_registry_builds_and_checks_ltr(tmp_path):
    folder = _query_folder(tmp_path / "fold")
    options = LTRConfig(docs_per_query=4, k=3, split="files")
    env = make_env(EnvConfig(id=f"ltr:{folder}"), ltr_options=options)
    assert isinstance(env, LTREnv) and env.spec.n_agents == 4 and env.k == 3
    default = make_env(EnvConfig(id=f"ltr:{folder / 'train.txt'}"))
    assert default.spec.n_agents == 10 and len(default.evaluation_queries("test")) == 1  # 2 queries, 7:3 split
    for bad, match in [(EnvConfig(id=f"ltr:{tmp_path / 'missing'}"), "no such file"),
                       (EnvConfig(id=f"ltr:{folder}", sight_range=0.0), "sight_range"),
                       (EnvConfig(id=f"ltr:{folder}", episode_limit=5), "episode_limit"),
                       (EnvConfig(id="ltr:"), "give a LETOR")]:
        with pytest.raises(ConfigError, match=match):
            check_env(bad)
    with pytest.raises(ConfigError, match="ltr.k"):
        check_env(EnvConfig(id=f"ltr:{folder}"), LTRConfig(k=0))
    with pytest.raises(ConfigError, match="view"):
        make_env(EnvConfig(id=f"ltr:{folder}"), views=("full_obs",), ltr_options=options)
    rows = {row["id"]: row for row in list_environments() if row["id"].startswith("ltr:")}
    assert rows["ltr:<path>"]["agents"] == 10 and rows["ltr:<path>"]["episode_limit"] == 1
    config = build_config([f"env=ltr:{folder}", "ltr.k=5", "ltr.split=files", "ltr.docs_per_query=4"])
    assert config.ltr == LTRConfig(docs_per_query=4, k=5, split="files")
    with pytest.raises(ConfigError, match="valid: seeded, files"):
        build_config(["ltr.split=random"])


@needs_samples
def test_features_are_scaled_with_training_queries_only(mslr):
    """ltr.normalize=log: signed log(1 + |x|), then z-scores from the training queries' real documents; held-out
    queries do not move the statistics, and padding stays 0."""
    from ctde.envs.ltr import normalize_features

    train = split_queries(mslr, LTRConfig())["train"]
    scaled = normalize_features(mslr, train, "log")
    rows = scaled[train][mslr.valid[train]]
    moving = rows.std(axis=0) > 0
    np.testing.assert_allclose(rows.mean(axis=0), 0.0, atol=1e-3)
    np.testing.assert_allclose(rows.std(axis=0)[moving], 1.0, rtol=1e-3)
    logged = np.sign(mslr.features) * np.log1p(np.abs(mslr.features))
    raw_rows = logged[train][mslr.valid[train]]
    f = int(np.argmax(raw_rows.std(axis=0)))
    expected = (logged[..., f] - raw_rows[:, f].mean()) / raw_rows[:, f].std()
    valid = mslr.valid
    np.testing.assert_allclose(scaled[..., f][valid], expected[valid], rtol=1e-4, atol=1e-4)
    assert np.all(scaled[~valid] == 0.0)
    assert np.abs(scaled).max() < 100 < np.abs(mslr.features).max()  # raw counts reach 7.7e7
    np.testing.assert_array_equal(normalize_features(mslr, train, "none"), mslr.features)


def _synthetic_ranking_file(path: Path, queries: int = 80, docs: int = 6, features: int = 4, seed: int = 0) -> Path:
    """Relevance grows with feature 1 (label = round(1.2 f_1 + 1.5), clipped to 0..4); the others are noise."""
    rng = np.random.default_rng(seed)
    lines = []
    for q in range(queries):
        for _ in range(docs):
            f = rng.normal(size=features)
            label = int(np.clip(np.round(1.2 * f[0] + 1.5), 0, 4))
            lines.append(f"{label} qid:{q} " + " ".join(f"{i + 1}:{v:.4f}" for i, v in enumerate(f)))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_ptde_learns_to_rank_and_beats_random_scores(run_training, tmp_path):
    """PTDE end to end on a tiny LTR file (VDN, 3,000 training queries): over every test query, the exported student
    (KD) beats uniformly random scores by at least 0.1 NDCG@6, and the teacher beats them too."""
    from ctde.experiments.ranking import mean_ndcg
    from ctde.training.runner import build_program
    from ctde.training.runner import load_run_config, restore_agent_params

    data = _synthetic_ranking_file(tmp_path / "ranking.txt")
    result = run_training(f"env=ltr:{data}", "ltr.docs_per_query=6", "ltr.k=6", "algo=vdn", "paradigm=ptde",
                          "steps=3000", "seeds=2", "eval.interval=1000", "ptde.distill_episodes=200",
                          "ptde.distill_steps=1000", "ptde.distill_batch=256", "ptde.distill_log_every=100")
    program = build_program(resolve(load_run_config(result.run_dir)))
    params, _ = restore_agent_params(result.run_dir, program)
    env = program.env
    queries = jnp.asarray(env.evaluation_queries("test"))

    def random_scores(key):
        keys = jax.random.split(key, queries.shape[0])
        return jax.vmap(lambda q, k: ndcg_at_k(jax.random.randint(k, (6,), 0, 10), env.labels[q], env.valid[q], 6))(
            queries, keys).mean()

    random = float(jax.vmap(random_scores)(jax.random.split(jax.random.PRNGKey(0), 200)).mean())
    for seed in range(2):
        one = jax.tree.map(lambda x: x[seed], params)
        assert mean_ndcg(program, one, "student") >= random + 0.1
        assert mean_ndcg(program, one, "teacher") >= random + 0.03
    assert result.summary["decentralization audit"].startswith("PASS")
