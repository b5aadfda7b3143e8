"""The host loop's collector (`ctde.training.host.HostCollector`) against the compiled rollout
(`ctde.algos.rollout.run_rollout`): a trajectory collected by the host loop equals run_rollout's for the same
seeded environment.

The host environments here are a JAX environment (SMAX 3m) stepped outside run_rollout's `jit`, one host call
at a time, fed exactly the keys run_rollout's schedule gives each environment (start, step and reset keys), so
both paths see the same episodes as long as they choose the same actions: the actors are greedy and
deterministic, which makes the two paths' different action keys irrelevant.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ctde.algos.rollout import Actor, paradigm_actor, run_rollout, start_rollouts
from ctde.config import build_config
from ctde.envs import make_env
from ctde.nets.actions import greedy, masked_max
from ctde.paradigms import make_paradigm
from ctde.training.host import HostCollector, act_function
from ctde.training.resolve import resolve

VIEWS = ("full_obs",)  # a privileged view, so `views` is compared too
# The greedy policy of these initial parameters (PRNGKey(2)) hits the enemy (rewards) and loses some SMAX 3m
# battles within 10 steps: a limit of 10 ends some episodes by the battle (terminal) and cuts others (done, not
# terminal), and a continuing rollout of 24 steps resets every environment inside it.
LIMIT = 10


class ScheduledHostEnvs:
    """Host environments (`reset(indices, seeds)`, `step(indices, actions)` -> step dicts in NumPy, as
    `ctde.envs.host.workers.HostEnvs`) that are a JAX environment driven with run_rollout's keys: environment k
    starts from split(start_key, E)[k]; at step t (the count of `step` calls), with act_key, env_key,
    reset_key = split(split(rollout_key, T)[t], 3), it steps with split(env_key, E)[k] and, reset after that
    step, starts from split(reset_key, E)[k]. The seeds the collector passes are ignored. The environments'
    states persist across `schedule` calls, so a second rollout continues the first's episodes.

    All E environments are computed together (vmapped, as run_rollout does) and only the asked ones are kept
    and reported: a single-environment program rounds some SMAX observations differently in the last bit (6/7 came out
    as 0.85714287 there and 0.85714293 in run_rollout), a difference of this stand-in, not of the collector."""

    def __init__(self, env, num_envs: int):
        self.env, self.E = env, num_envs
        self._reset_all, self._step_all = _batched(env)
        self.states = None  # [E, ...]
        self.start_keys = self.env_keys = self.reset_keys = None
        self.steps = 0

    def schedule(self, rollout_key, length: int, start_key=None) -> None:
        """The keys of one rollout; `start_key` None: the environments must already be running (continuing)."""
        E = self.E
        self.start_keys = None if start_key is None else jax.random.split(start_key, E)
        per_step = jax.vmap(lambda k: jax.random.split(k, 3))(jax.random.split(rollout_key, length))  # [T, 3, 2]
        split_e = jax.vmap(lambda k: jax.random.split(k, E))
        self.env_keys, self.reset_keys = split_e(per_step[:, 1]), split_e(per_step[:, 2])
        self.steps = 0

    @staticmethod
    def _dicts(ts, indices) -> list[dict]:
        ts = jax.device_get(ts)
        return [{"obs": ts.obs[i], "state": ts.state[i], "avail": ts.avail[i], "alive": ts.alive[i],
                 "views": {k: v[i] for k, v in ts.views.items()}, "reward": float(ts.reward[i]),
                 "terminal": bool(ts.terminal[i]), "done": bool(ts.done[i]), "won": bool(ts.won[i])}
                for i in indices]

    def _mask(self, indices) -> np.ndarray:
        mask = np.zeros(self.E, bool)
        mask[list(indices)] = True
        return mask

    def reset(self, indices, seeds) -> list[dict]:
        if self.steps == 0:
            assert self.start_keys is not None, "a continuing rollout reset an environment before stepping"
            keys = self.start_keys
        else:
            keys = self.reset_keys[self.steps - 1]
        states, ts = self._reset_all(keys)
        self.states = states if self.states is None else _pick(self._mask(indices), states, self.states)
        return self._dicts(ts, indices)

    def step(self, indices, actions) -> list[dict]:
        full = np.zeros((self.E, self.env.spec.n_agents), np.int32)  # environments not stepped: any action
        for i, action in zip(indices, actions):
            full[i] = action
        states, ts = self._step_all(self.env_keys[self.steps], self.states, full)
        self.states = _pick(self._mask(indices), states, self.states)
        self.steps += 1
        return self._dicts(ts, indices)


@jax.jit
def _pick(mask, new, old):
    return jax.tree.map(lambda a, b: jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b), new, old)


@functools.lru_cache(maxsize=None)
def _batched(env):
    return jax.jit(jax.vmap(env.reset)), jax.jit(jax.vmap(env.step))


@functools.lru_cache(maxsize=None)
def _setup():
    config = resolve(build_config(["env=smax:3m", f"env.episode_limit={LIMIT}", "out=/tmp/unused"]))
    env = make_env(config.env, views=VIEWS, ltr_options=config.ltr)
    paradigm = make_paradigm(config, env.spec)
    params = paradigm.init(jax.random.PRNGKey(2))
    return env, paradigm, params


def _recording_actor(paradigm) -> Actor:
    """Greedy on the paradigm's acting model, recurrent, and recording an extra per step (the best score)."""
    model = paradigm.collect_model

    def step(params, carry, inputs, key):
        carry, output = paradigm.apply(params, carry, inputs, rng=None)
        scores, avail = output.scores[model][0], inputs.avail[0]
        return carry, greedy(key, scores, avail).astype(jnp.int32), {"top": masked_max(scores, avail)}

    return Actor(initial_carry=lambda num_envs: paradigm.initial_carry((num_envs,)), step=step)


def _seeded(tree):
    return jax.tree.map(lambda x: x[None], tree)


def _start(env, actor, start_key, num_envs: int):
    return jax.jit(lambda key: start_rollouts(env, actor, key, num_envs))(start_key)


def _compiled_rollout(env, actor, params, key, state, **options):
    run = jax.jit(functools.partial(run_rollout, env, actor, **options))
    return jax.device_get(run(params, key, state))


def _host_collect(collector, actor_act, params, carry, key, *, E, length, auto_reset, carry_every=0):
    return collector.collect(actor_act, _seeded(params), carry, np.asarray(key)[None], np.zeros(1, np.int32),
                             np.ones(1, bool), count=E, length=length, auto_reset=auto_reset,
                             start_seeds=np.zeros((1, E), np.int64),
                             later_seeds=np.zeros((1, length, E), np.int64) if auto_reset else None,
                             carry_every=carry_every)


def _assert_stats_equal(host_stats, stats):
    for name in ("episodes", "wins", "lengths", "env_steps"):
        np.testing.assert_array_equal(np.asarray(getattr(host_stats, name))[0], np.asarray(getattr(stats, name)),
                                      err_msg=name)
    np.testing.assert_allclose(np.asarray(host_stats.returns)[0], np.asarray(stats.returns), rtol=1e-6,
                               err_msg="returns")


INPUT_FIELDS = ("obs", "state", "avail", "alive", "last_action", "reset")
STEP_FIELDS = (*INPUT_FIELDS, "action", "reward", "terminal", "done")


@pytest.mark.parametrize("seed", [1])
def test_fresh_episodes_on_the_host_equal_run_rollout(seed):
    """Whole episodes (value decomposition, MADDPG, evaluation): every entry the learner reads is equal."""
    E, limit = 4, LIMIT
    env, paradigm, params = _setup()
    actor = paradigm_actor(paradigm, paradigm.collect_model, greedy, deterministic=True)
    start_key, key = jax.random.split(jax.random.PRNGKey(seed))
    expected, stats, _ = _compiled_rollout(env, actor, params, key, _start(env, actor, start_key, E),
                                           length=limit, auto_reset=False)

    envs = ScheduledHostEnvs(env, E)
    envs.schedule(key, limit, start_key=start_key)
    collector = HostCollector(envs, env.spec, VIEWS, per_seed=E)
    got = _host_collect(collector, act_function(lambda _: actor), params, _seeded(actor.initial_carry(E)),
                        jax.random.PRNGKey(99), E=E, length=limit, auto_reset=False)
    host = jax.tree.map(lambda x: x[0], got.trajectory)  # the one seed

    assert host.obs.shape == expected.obs.shape == (E, limit + 1, env.spec.n_agents, env.spec.obs_dim)
    np.testing.assert_array_equal(host.valid, expected.valid)
    ends = []
    for e in range(E):
        length = int(expected.valid[e].sum())
        assert expected.valid[e, :length].all() and expected.done[e, length - 1]
        ends.append((length, bool(expected.terminal[e, length - 1])))
        # Entries 0..length-1 are the episode's decisions: all they hold is read.
        for name in STEP_FIELDS:
            np.testing.assert_array_equal(getattr(host, name)[e, :length], getattr(expected, name)[e, :length],
                                          err_msg=f"{name}, env {e}, steps < {length}")
        for view in VIEWS:
            np.testing.assert_array_equal(host.views[view][e, :length], expected.views[view][e, :length],
                                          err_msg=f"views[{view}], env {e}")
        # Entry `length`: the inputs after the episode's last step (what a bootstrap reads; `reset` there is
        # False in both).
        for name in INPUT_FIELDS:
            np.testing.assert_array_equal(getattr(host, name)[e, length], getattr(expected, name)[e, length],
                                          err_msg=f"{name}, env {e}, bootstrap entry {length}")
        for view in VIEWS:
            np.testing.assert_array_equal(host.views[view][e, length], expected.views[view][e, length],
                                          err_msg=f"views[{view}], env {e}, bootstrap entry {length}")
        # Entries after that are padding (valid = False): run_rollout keeps stepping the finished JAX
        # environment there while the host repeats the last inputs; nothing reads them unmasked, so they may
        # differ and are not compared.
    _assert_stats_equal(got.stats, stats)
    decided = expected.terminal & expected.valid
    assert decided.any() and (expected.done & ~expected.terminal & expected.valid).any(), \
        f"both a decided battle and a time-limit cut are compared: (length, terminal) per env {ends}"
    assert min(length for length, _ in ends) < limit, "an episode ends early, so padding follows its end"
    assert stats.returns > 0


@pytest.mark.parametrize("carry_every", [6])
def test_continuing_episodes_on_the_host_equal_run_rollout_across_calls(carry_every):
    """Fixed-length rollouts of continuing episodes (MAPPO / IPPO): every entry, the extras, the recurrent
    states kept every `carry_every` steps, the final recurrent state and the stats are equal, and a second call
    continues the same episodes as a second run_rollout from the first's returned state."""
    E, length = 3, 24
    env, paradigm, params = _setup()
    actor = _recording_actor(paradigm)
    start_key = jax.random.PRNGKey(5)
    state = _start(env, actor, start_key, E)

    envs = ScheduledHostEnvs(env, E)
    collector = HostCollector(envs, env.spec, VIEWS, per_seed=E)
    act = act_function(lambda _: actor)
    carry = _seeded(actor.initial_carry(E))
    options = dict(length=length, auto_reset=True, carry_every=carry_every)
    for call, key in enumerate((jax.random.PRNGKey(6), jax.random.PRNGKey(7))):
        expected, stats, state = _compiled_rollout(env, actor, params, key, state, **options)
        envs.schedule(key, length, start_key=start_key if call == 0 else None)
        got = _host_collect(collector, act, params, carry, jax.random.PRNGKey(100 + call), E=E, length=length,
                            auto_reset=True, carry_every=carry_every)
        host = jax.tree.map(lambda x: x[0], got.trajectory)
        where = f"call {call}"

        assert expected.valid[:, :length].all() and not expected.valid[:, length].any()
        assert expected.reset[:, 1:].any(), "an episode must restart inside the rollout"
        for name in (*STEP_FIELDS, "valid"):
            np.testing.assert_array_equal(getattr(host, name), getattr(expected, name), err_msg=f"{name}, {where}")
        for view in VIEWS:
            np.testing.assert_array_equal(host.views[view], expected.views[view], err_msg=f"views, {where}")
        assert set(host.extras) == set(expected.extras) == {"top"}
        np.testing.assert_array_equal(host.extras["top"], expected.extras["top"], err_msg=f"extras, {where}")
        jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b, err_msg=f"segment_carry, {where}"),
                     host.segment_carry, expected.segment_carry)
        jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a)[0], b, err_msg=f"carry, {where}"),
                     got.final_carry, state.carry)
        _assert_stats_equal(got.stats, stats)
        assert envs.steps == length
        assert stats.returns > 0 and stats.episodes > E, "rewarded episodes end and restart inside the rollout"
        if call:  # the second rollout continues episodes in progress, not fresh ones
            assert not expected.reset[:, 0].all()
