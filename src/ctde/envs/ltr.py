"""Learning to Rank as a one-step cooperative multi-agent task (PTDE §4.3), `env=ltr:<path>`.

Task
----
One query is one episode of one step. Each of the query's documents is an agent (`ltr.docs_per_query` of them,
default 10); an agent observes its own document's feature vector; the global state is every document's features
concatenated in document order; each agent's action is a discrete score 0..9; the documents are ranked by score and
the team reward is NDCG@k (`ltr.k`, default 10) of that ranking. There are no wins (`has_win` False), no
privileged views and no sight range; `env.episode_limit` can only be 1.

Data
----
`ltr:<path>` names one file or a folder. A folder's data files are its `*.txt`, `*.svm`, `*.svmlight` and
`*.libsvm` files and the files whose last dotted part is train/vali/valid/validation/test (LightGBM's
`rank.train`); names starting with README or LICENSE are skipped; they are read in sorted name order. Every line
is LETOR / SVMlight: `label qid:Q index:value index:value ... [# comment]`.

- label: a non-negative integer relevance grade (`2` or `2.0`), at most 30 (the gain 2^30 - 1 is still exact
  enough in float32). Anything after `#` is a comment; blank lines are skipped. Line numbers in errors are 1-based
  and count every line of the file.
- features: 1-based indices (column index - 1); the feature count F is the largest index seen on any line of any
  file (trimmed-away documents included, so F does not depend on `docs_per_query`); a sparse line's missing
  features are 0. A repeated index on one line keeps its last value. Values must be finite; indices at most
  2^20 (the features are stored dense).
- Malformed input raises `ConfigError` naming the file, the line and what is wrong: a bad label, a missing
  `qid:`, a bad feature token (no `:`, a non-integer or < 1 index, a non-numeric or non-finite value). A file with
  no document lines, a folder with no data files, or a missing path is also a `ConfigError`.
- queries: the documents of one `qid` in one file form a query (documents of a qid that reappears further down the
  same file join it, in file order). The same qid in two files is two queries. Queries are numbered in file
  order (files sorted by name, queries by first appearance), and that numbering is the query index everywhere.
- trimming and padding: a query keeps its first `docs_per_query` documents in file order; a shorter query is
  padded with masked documents (features 0, label 0, valid False). Every query has at least one real document
  (a query exists only through its lines). A one-document query always scores 1 (or a lone zero label: 1 as well,
  see the all-zero rule); queries are never dropped for being short: the data's own distribution of lengths is
  kept (MSLR-WEB10K's sample: 18-308 documents, never padded at 10; Yahoo's sample: 1-27, 23 + 4 queries padded).
- memory: every line is parsed (to validate it and to find F), but only the kept documents are stored, and the
  result is one float32 [Q, docs_per_query, F] feature array (plus labels and a validity mask [Q, D]) that is
  put on the device once (the environment then drops its host copy): a full MSLR-WEB30K (31,531 queries, 136
  features) at 10 documents per query needs 31,531 * 10 * 136 * 4 bytes = 172 MB, whatever the size of the text
  files. Parsing is line by line in Python with numpy doing each line's number conversion, about 40 us per line
  (MSLR-WEB30K's 3.8M lines: a few minutes).
- features are scaled by `ltr.normalize` (`normalize_features`): by default signed log(1 + |x|), then each feature
  standardized with the mean and deviation of the training queries' real documents (MSLR's raw counts reach
  7.7e7 on the sample; Yahoo's are in [0, 1]); `none` keeps the files' values.
- after trimming to 10, some queries have only zero labels and score 1 whatever the agents do (11 of the 86 MSLR
  sample queries, 5 of the 251 Yahoo ones).

Split (by query, never by document)
------------------------------------
- `ltr.split=seeded` (default): the queries of all files are pooled and permuted with
  `numpy.random.default_rng(ltr.split_seed)`; the first round(train_fraction * Q) (at least 1, at most Q - 1) are
  the training queries, the rest the test queries. There is no validation set.
- `ltr.split=files`: a file's role comes from its name (split on non-alphanumerics, a part starting with `train`,
  `vali` or `test`: `train.txt`, `vali.txt`, `msn1.fold1.test.5k.txt`); a file with no role or two roles is an
  error, as is having no training file.
Every split's query indices are kept sorted (file order).

Environment
-----------
`LTREnv(path, options)`; the episode state is the query index (`LTRState.query`, int32 []). `reset(key)` draws
one of the split's queries uniformly (`jax.random.randint` over its indices); obs = that query's [D, F] features
read from the device array, state = obs flattened, avail = all 10 scores for real documents and only score 0 for
padding, alive = the validity mask. `step(key, state, actions)` returns reward `ndcg_at_k(actions, labels, valid,
k)` with terminal = done = True (and the same query's observations). Batch with `vmap`.

For held-out evaluation, `split_env("test")` (or "validation", "train") is a view of the same device arrays that
draws from that split's queries, `evaluation_queries(name)` lists every query of a split (int32, sorted) and
`state_of(query)` / `reset_to(query)` start an episode on a given query: an evaluator can `vmap` `reset_to` over
`evaluation_queries("test")` and average the step rewards to get the exact mean test NDCG@k.

Metric: NDCG@k
--------------
DCG@k = sum over the first k ranked documents of (2^label - 1) / log2(rank + 1), ranks starting at 1. Documents are
ranked by score descending; ties keep file order (the earlier document ranks first: a stable sort, as LightGBM and
XGBoost do; TF-Ranking breaks ties at random instead). Padding documents are excluded: they never take a rank, so
they contribute nothing to DCG or to the ideal DCG. The ideal DCG@k comes from the real documents' labels sorted
descending. NDCG@k = DCG@k / IDCG@k; a query whose IDCG is 0 (every real label 0) scores 1.0, LightGBM's and
XGBoost's convention (TF-Ranking scores it 0). Integer scores from 10 actions tie often, so with 10 documents a
random policy already scores about 0.55-0.75 on the shared samples.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ctde.config import LTRConfig
from ctde.envs.base import EnvSpec, TimeStep
from ctde.errors import ConfigError

N_SCORES = 10  # actions: a discrete score 0..9
MAX_LABEL = 30
MAX_FEATURES = 1 << 20  # largest feature index accepted (the features are stored dense)
SPLITS = ("train", "validation", "test")
DATA_SUFFIXES = (".txt", ".svm", ".svmlight", ".libsvm")
ROLE_PREFIXES = {"train": "train", "vali": "validation", "test": "test"}


# ---------------------------------------------------------------------------------------------------------
# NDCG@k


def ndcg_at_k(scores: jax.Array, labels: jax.Array, valid: jax.Array, k: int) -> jax.Array:
    """NDCG@k of the ranking `scores` [D] induces on documents with relevance `labels` [D]; float32 [].

    Ranked by score descending, ties by position (earlier first); documents with `valid` False are left out of
    the ranking and the ideal ranking; an IDCG of 0 (all real labels 0) gives 1. Pure jnp, no sort: each
    document's rank is counted pairwise (O(D^2), D is small), so it jits and vmaps as is.
    """
    scores = jnp.asarray(scores).astype(jnp.float32)
    labels = jnp.asarray(labels).astype(jnp.float32)
    valid = jnp.asarray(valid, bool)
    n = scores.shape[-1]
    earlier = jnp.arange(n)[:, None] < jnp.arange(n)[None, :]  # [j, i]: j comes before i in file order
    both = valid[:, None] & valid[None, :]
    gain = jnp.where(valid, jnp.exp2(labels) - 1.0, 0.0)

    def dcg(keys):
        ahead = (keys[:, None] > keys[None, :]) | ((keys[:, None] == keys[None, :]) & earlier)  # [j, i]: j before i
        rank = 1 + jnp.sum(ahead & both, axis=0)  # [i], 1-based among the valid documents
        discount = jnp.where(valid & (rank <= k), 1.0 / jnp.log2(rank.astype(jnp.float32) + 1.0), 0.0)
        return jnp.sum(gain * discount)

    ideal = dcg(labels)
    return jnp.where(ideal > 0, dcg(scores) / jnp.where(ideal > 0, ideal, 1.0), 1.0).astype(jnp.float32)


def ndcg_at_k_numpy(scores, labels, valid, k: int) -> float:
    """The same metric with an explicit stable sort (float64), as a reference."""
    scores, labels, valid = np.asarray(scores, float), np.asarray(labels, float), np.asarray(valid, bool)
    real = np.flatnonzero(valid)
    order = real[np.argsort(-scores[real], kind="stable")]
    ideal = np.sort(labels[real])[::-1]
    discounts = 1.0 / np.log2(np.arange(2, len(real) + 2))
    dcg = np.sum(((2.0 ** labels[order] - 1) * discounts)[:k])
    idcg = np.sum(((2.0 ** ideal - 1) * discounts)[:k])
    return 1.0 if idcg <= 0 else float(dcg / idcg)


# ---------------------------------------------------------------------------------------------------------
# Loading


@dataclass
class LTRData:
    """A LETOR data set trimmed and padded to D documents per query (Q queries, F features).

    features: float32 [Q, D, F] (None in an `LTREnv`'s copy: the environment keeps them on the device only);
    labels: float32 [Q, D] (0 on padding); valid: bool [Q, D] (False on padding);
    n_docs: int32 [Q] documents of each query in its file (before trimming); query_file: int32 [Q] index into
    `files`; qids: the `qid:` of each query; files: the data files read, in reading order.
    """

    features: np.ndarray | None
    labels: np.ndarray
    valid: np.ndarray
    n_docs: np.ndarray
    query_file: np.ndarray
    qids: list[str]
    files: list[Path]

    @property
    def n_queries(self) -> int:
        return self.labels.shape[0]


def data_files(path: str | Path) -> list[Path]:
    """The data files `ltr:<path>` names: the file itself, or a folder's data files in sorted name order."""
    path = Path(path).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ConfigError(f"env=ltr:{path}: no such file or folder. Give a LETOR/SVMlight file or a folder of them "
                          f"(train.txt, vali.txt, test.txt).")
    files = []
    for f in sorted(path.iterdir()):
        name = f.name.lower()
        if not f.is_file() or name.startswith(("readme", "license")):
            continue
        if name.endswith(DATA_SUFFIXES) or name.rsplit(".", 1)[-1] in ("train", "vali", "valid", "validation", "test"):
            files.append(f)
    if not files:
        raise ConfigError(f"env=ltr:{path}: the folder has no data files (*.txt, *.svm, *.svmlight, *.libsvm, or "
                          f"names ending in .train/.vali/.test).")
    return files


def file_role(path: Path) -> str | None:
    """'train', 'validation' or 'test' from a file name (a name part starting with train/vali/test), or None;
    ConfigError when the name says two roles."""
    roles = {role for part in re.split(r"[^a-z0-9]+", path.name.lower())
             for prefix, role in ROLE_PREFIXES.items() if part.startswith(prefix)}
    if len(roles) > 1:
        raise ConfigError(f"ltr.split=files: the name of {path} says {' and '.join(sorted(roles))}; rename it so that "
                          f"one of train/vali/test appears in it.")
    return roles.pop() if roles else None


def _bad(path: Path, number: int, what: str) -> ConfigError:
    return ConfigError(f"{path}:{number}: {what}. Expected LETOR/SVMlight lines `label qid:Q index:value ...`.")


def _parse_features(tokens: list[str], path: Path, number: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices int64 [n], values float32 [n]) of a line's `index:value` tokens, or ConfigError naming the token."""
    joined = " ".join(tokens)
    flat = joined.replace(":", " ").split()
    try:
        if len(flat) != 2 * len(tokens) or "_" in joined:
            raise ValueError
        numbers = np.array(flat, dtype=np.float64).reshape(-1, 2)
        index, value = numbers[:, 0], numbers[:, 1]
        if not (np.all(index == np.floor(index)) and np.all((index >= 1) & (index <= MAX_FEATURES))
                and np.all(np.isfinite(value))):
            raise ValueError
        return index.astype(np.int64), value.astype(np.float32)
    except ValueError:
        pass
    for position, token in enumerate(tokens, start=3):  # slow path: find the offending token for the message
        parts = token.split(":")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise _bad(path, number, f"bad feature token {token!r} (field {position}): expected index:value")
        index, value = _number(parts[0]), _number(parts[1])
        if index is None or index != int(index) or not 1 <= index <= MAX_FEATURES:
            raise _bad(path, number, f"bad feature token {token!r} (field {position}): the index must be an integer "
                                     f"1..{MAX_FEATURES}")
        if value is None:
            raise _bad(path, number, f"bad feature token {token!r} (field {position}): the value must be a finite "
                                     f"number")
    raise _bad(path, number, "bad feature tokens")  # pragma: no cover - the slow path always finds one


def _number(text: str) -> float | None:
    """A finite float, or None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and "_" not in text else None


def _parse_label(token: str, path: Path, number: int) -> int:
    label = _number(token)
    if label is None or label != int(label) or not 0 <= label <= MAX_LABEL:
        raise _bad(path, number, f"bad label {token!r}: expected a relevance grade, an integer 0..{MAX_LABEL}")
    return int(label)


def load_ltr(path: str | Path, docs_per_query: int = 10) -> LTRData:
    """Read `ltr:<path>` (a file or a folder, see the module docstring) trimmed and padded to `docs_per_query`."""
    if docs_per_query < 1:
        raise ConfigError(f"ltr.docs_per_query={docs_per_query}: a query needs at least one document.")
    files = data_files(path)
    kept: list[list[tuple[np.ndarray, int]]] = []  # per query: its first documents (dense vector, label)
    n_docs: list[int] = []
    query_file: list[int] = []
    qids: list[str] = []
    n_features = 0
    for file_index, file in enumerate(files):
        of_file: dict[str, int] = {}  # qid -> query index
        documents = 0
        with open(file, encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, start=1):
                line = line.split("#", 1)[0]
                parts = line.split()
                if not parts:
                    continue
                label = _parse_label(parts[0], file, number)
                if len(parts) < 2 or not parts[1].startswith("qid:") or len(parts[1]) == 4:
                    found = f" (found {parts[1]!r})" if len(parts) > 1 else ""
                    raise _bad(file, number, f"missing qid: the second field must be qid:<id>{found}")
                index, value = _parse_features(parts[2:], file, number)
                width = int(index.max()) if index.size else 0
                n_features = max(n_features, width)
                qid = parts[1][4:]
                query = of_file.get(qid)
                if query is None:
                    query = of_file[qid] = len(kept)
                    kept.append([])
                    n_docs.append(0)
                    query_file.append(file_index)
                    qids.append(qid)
                n_docs[query] += 1
                documents += 1
                if len(kept[query]) < docs_per_query:
                    dense = np.zeros(width, np.float32)
                    dense[index - 1] = value
                    kept[query].append((dense, label))
        if documents == 0:
            raise ConfigError(f"{file}: no documents (the file is empty or holds only blank and comment lines).")
    features = np.zeros((len(kept), docs_per_query, n_features), np.float32)
    labels = np.zeros((len(kept), docs_per_query), np.float32)
    valid = np.zeros((len(kept), docs_per_query), bool)
    for query in range(len(kept)):
        for slot, (dense, label) in enumerate(kept[query]):
            features[query, slot, : dense.shape[0]] = dense
            labels[query, slot] = label
            valid[query, slot] = True
        kept[query] = []  # free the parsed rows as they are copied (peak memory: about one feature array)
    return LTRData(features=features, labels=labels, valid=valid, n_docs=np.asarray(n_docs, np.int32),
                   query_file=np.asarray(query_file, np.int32), qids=qids, files=files)


def split_queries(data: LTRData, options: LTRConfig) -> dict[str, np.ndarray]:
    """Query indices (int32, sorted) of 'train', 'validation' and 'test' (a split may be empty, train never)."""
    check_options(options)
    q = data.n_queries
    if options.split == "seeded":
        if q < 2:
            raise ConfigError(f"ltr.split=seeded needs at least 2 queries to make a training and a test set; "
                              f"{', '.join(map(str, data.files))} hold {q}.")
        n_train = min(max(int(round(options.train_fraction * q)), 1), q - 1)
        order = np.random.default_rng(options.split_seed).permutation(q)
        return {"train": np.sort(order[:n_train]).astype(np.int32), "validation": np.zeros((0,), np.int32),
                "test": np.sort(order[n_train:]).astype(np.int32)}
    roles = []
    for file in data.files:
        role = file_role(file)
        if role is None:
            raise ConfigError(f"ltr.split=files: cannot tell whether {file} is train, vali or test data from its "
                              f"name; rename it (train.txt, vali.txt, test.txt) or use ltr.split=seeded.")
        roles.append(role)
    if "train" not in roles:
        raise ConfigError(f"ltr.split=files: no training file among {', '.join(map(str, data.files))} (a name with "
                          f"'train' in it, e.g. train.txt).")
    role_of_query = np.asarray(roles)[data.query_file]
    return {name: np.flatnonzero(role_of_query == name).astype(np.int32) for name in SPLITS}


# ---------------------------------------------------------------------------------------------------------
# Options and the environment


def check_options(options: LTRConfig) -> None:
    if options.docs_per_query < 1:
        raise ConfigError(f"ltr.docs_per_query={options.docs_per_query}: a query needs at least one document.")
    if options.k < 1:
        raise ConfigError(f"ltr.k={options.k}: the NDCG cutoff must be at least 1.")
    if options.split not in ("seeded", "files"):
        raise ConfigError(f"ltr.split={options.split!r}: valid: seeded, files.")
    if options.split == "seeded" and not 0.0 < options.train_fraction < 1.0:
        raise ConfigError(f"ltr.train_fraction={options.train_fraction}: must lie strictly between 0 and 1 (the rest "
                          f"of the queries is the test set).")


def check_config(path: str, sight_range: float | None, episode_limit: int | None,
                 options: LTRConfig | None = None) -> None:
    """Cheap checks of `env=ltr:<path>` and its options (nothing is read)."""
    if not path:
        raise ConfigError("env=ltr:<path>: give a LETOR/SVMlight file or folder, e.g. "
                          "env=ltr:/data/MSLR-WEB30K/Fold1.")
    if sight_range is not None:
        raise ConfigError("env.sight_range does not apply to ltr: every agent sees exactly its own document.")
    if episode_limit not in (None, 1):
        raise ConfigError(f"env.episode_limit={episode_limit}: an ltr episode is one step (one query).")
    if not Path(path).expanduser().exists():
        raise ConfigError(f"env=ltr:{path}: no such file or folder.")
    check_options(options if options is not None else LTRConfig())


@struct.dataclass
class LTRState:
    query: jax.Array  # int32 []: the episode's query index


def normalize_features(data: LTRData, train_queries: np.ndarray, how: str) -> np.ndarray:
    """Features [Q, D, F] scaled as `ltr.normalize` says, with statistics of the training queries' real documents
    only (held-out queries never inform them): `log` applies sign(x) log(1 + |x|) first, then both `log` and
    `standard` subtract each feature's mean and divide by its standard deviation (1 where it is 0: a constant
    feature becomes 0). Padded documents stay 0."""
    features = data.features
    if how == "none":
        return features
    if how == "log":
        features = np.sign(features) * np.log1p(np.abs(features))
    rows = features[train_queries][data.valid[train_queries]]  # [N, F]
    mean = rows.mean(axis=0)
    std = rows.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return np.where(data.valid[..., None], (features - mean) / std, 0.0).astype(np.float32)


_ENV_CACHE: dict = {}


def cached_ltr_env(path: str, options: LTRConfig | None = None, views: tuple[str, ...] = ()) -> "LTREnv":
    """One `LTREnv` per (path, options, files' sizes and times) in a process: validation and the training program
    both build the environment, and a large data set should be parsed and held once."""
    options = options if options is not None else LTRConfig()
    files = data_files(path)
    key = (str(Path(path).resolve()), tuple(sorted(dataclasses.asdict(options).items())), tuple(views),
           tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))
    if key not in _ENV_CACHE:
        _ENV_CACHE.clear()  # keep one data set in memory, not every one a process ever read
        _ENV_CACHE[key] = LTREnv(path, options, views)
    return _ENV_CACHE[key]


class LTREnv:
    """Learning to Rank: one query per one-step episode, one agent per document (see the module docstring)."""

    has_sight_range = False

    def __init__(self, path: str | Path, options: LTRConfig | None = None, views: tuple[str, ...] = (),
                 data: LTRData | None = None):
        options = options if options is not None else LTRConfig()
        check_options(options)
        for view in views:
            raise ConfigError(f"ltr does not offer the view '{view}' (offers: none): an agent's observation is its "
                              f"whole document.")
        self.path = str(path)
        self.options = options
        data = data if data is not None else load_ltr(path, options.docs_per_query)
        if data.features is None or data.features.shape[1] != options.docs_per_query:
            raise ConfigError(f"ltr data of shape {None if data.features is None else data.features.shape}: "
                              f"expected [queries, ltr.docs_per_query={options.docs_per_query}, features].")
        self.splits = split_queries(data, options)
        self.k = int(options.k)
        self.n = options.docs_per_query
        # Created once, shared by every split view; the host copy of the features is dropped (memory: one
        # feature array), the rest of the data set's facts stay in `self.data`.
        self.features = jnp.asarray(normalize_features(data, self.splits["train"], options.normalize))
        self.labels = jnp.asarray(data.labels)
        self.valid = jnp.asarray(data.valid)
        self.data = dataclasses.replace(data, features=None)
        self.split = "train"
        self._queries = jnp.asarray(self.splits["train"])
        f = int(self.features.shape[-1])
        sizes = ", ".join(f"{len(self.splits[s])} {s}" for s in SPLITS if len(self.splits[s]))
        self.views = ()
        self.spec = EnvSpec(id=f"ltr:{self.path}", n_agents=self.n, n_actions=N_SCORES, obs_dim=f,
                            state_dim=self.n * f, episode_limit=1, has_win=False,
                            description=f"learning to rank: {self.data.n_queries} queries ({sizes}), {self.n} "
                                        f"documents per query, {f} features; reward NDCG@{self.k}")

    # Splits -------------------------------------------------------------------------------------------
    def evaluation_env(self) -> LTREnv:
        """Where greedy evaluation runs: the held-out queries (validation with `ltr.split=files` and a vali file,
        else test); training rollouts draw only training queries."""
        has_validation = len(self.splits["validation"]) > 0
        return self.split_env("validation" if has_validation else "test")

    def evaluation_queries(self, name: str = "test") -> np.ndarray:
        """Every query index of split `name` ('train', 'validation', 'test'), int32, sorted (file order)."""
        if name not in SPLITS:
            raise ConfigError(f"ltr split {name!r}: valid: {', '.join(SPLITS)}.")
        queries = self.splits[name]
        if len(queries) == 0:
            why = ("ltr.split=seeded makes only train and test; use ltr.split=files with a vali file"
                   if self.options.split == "seeded" else "no file of this split (its name must contain "
                                                          f"{'vali' if name == 'validation' else name})")
            raise ConfigError(f"ltr:{self.path} has no {name} queries: {why}.")
        return queries

    def split_env(self, name: str) -> LTREnv:
        """A view of this environment (same device arrays) whose `reset` draws from split `name`'s queries."""
        queries = self.evaluation_queries(name)
        view = copy.copy(self)
        view.split = name
        view._queries = jnp.asarray(queries)
        return view

    # Episodes -----------------------------------------------------------------------------------------
    def state_of(self, query) -> LTRState:
        return LTRState(query=jnp.asarray(query, jnp.int32))

    def reset_to(self, query) -> tuple[LTRState, TimeStep]:
        """Start the episode of query index `query` (for deterministic evaluation over `evaluation_queries`)."""
        state = self.state_of(query)
        return state, self.timestep_of(state)

    def reset(self, key):
        pick = jax.random.randint(key, (), 0, self._queries.shape[0])
        return self.reset_to(self._queries[pick])

    def _timestep(self, s: LTRState, reward, done) -> TimeStep:
        obs = self.features[s.query]  # [D, F]
        valid = self.valid[s.query]
        avail = valid[:, None] | (jnp.arange(N_SCORES) == 0)[None, :]
        return TimeStep(obs=obs, state=obs.reshape(-1), avail=avail, reward=jnp.asarray(reward, jnp.float32),
                        terminal=jnp.asarray(done), done=jnp.asarray(done), won=jnp.asarray(False), alive=valid)

    def timestep_of(self, s: LTRState) -> TimeStep:
        return self._timestep(s, 0.0, False)

    def reward(self, s: LTRState, actions) -> jax.Array:
        """NDCG@k of the ranking the scores `actions` [D] give the documents of `s.query`."""
        return ndcg_at_k(actions, self.labels[s.query], self.valid[s.query], self.k)

    def step(self, key, s: LTRState, actions):
        return s, self._timestep(s, self.reward(s, actions), True)


DESCRIPTION = ("learning to rank on LETOR/SVMlight files: one query per one-step episode, one agent per document "
               "(ltr.docs_per_query, default 10), actions = scores 0-9, team reward NDCG@ltr.k")
