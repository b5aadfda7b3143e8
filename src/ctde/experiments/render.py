"""Replays: record greedy episodes of a saved run and render them as a GIF (or MP4).

    ctde replay RUN [--model M] [--episodes 1] [--seed S] [--run-seed K] [--out FILE.gif|.mp4] [--fps N]

Recording (`record_episodes`) steps the environment exactly as `ctde.algos.rollout.run_policy` and greedy
evaluation do (the same key schedule, `num_envs` = episodes, no reset inside the rollout), inside one jitted
`lax.scan` that also returns every environment state. So episode e recorded with key k is episode e of
`run_policy(policy, env, params, k, episodes=E)`, return and win included (tested).

Rendering draws each state with matplotlib and writes the frames with matplotlib's writers: `PillowWriter`
(GIF, always available) or `FFMpegWriter` (MP4, when ffmpeg is on PATH).

- SMAX: SMAX advances `world_steps_per_env_step` (8) world ticks per agent step. Like JaxMARL's `SMAXVisualizer`
  (`EnemySMAX.expand_state_seq`), we re-step each recorded (key, state, actions) triple with
  `get_state_sequence=True` for the ticks in between, but inside the same jitted scan rather than one
  un-jitted step per frame on the host. We draw the picture JaxMARL's `SMAX.init_render` draws (allies blue,
  enemies green, a unit being shot paler, a grey bullet flying from shooter to target over the ticks) with
  persistent artists, plus health bars: JaxMARL's renderer clears the axes, re-decodes every attack with eager
  JAX calls, and rasterizes the figure twice per frame, and (in jaxmarl 0.2.0) reshapes its raster as
  (width, height), which garbles any figure that is not square.
- MPE (JaxMARL scenarios): JaxMARL's own `MPEVisualizer`, one frame per state, with our title.
- mpe:push_forward (our own scenario): two agents and the box, drawn here.

Other environments (toy:*, ltr:*) have no renderer; `replay` says so before recording anything.
"""

from __future__ import annotations

import contextlib
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ctde.envs import push_forward
from ctde.envs.base import Environment, evaluation_env
from ctde.errors import CheckpointError, ConfigError
from ctde.paradigms.base import AgentInputs
from ctde.policy import DecentralizedPolicy, load_policy
from ctde.algos.rollout import Actor, no_action, paradigm_actor, policy_actor
from ctde.nets.actions import greedy_for
from ctde.training.resolve import resolve
from ctde.training.runner import build_program, load_run_config, restore_agent_params

RENDERED_FAMILIES = ("smax", "mpe")
# Near JaxMARL's visualizers' frame intervals (64 ms, 100 ms), in whole centiseconds: a GIF's frame durations are
# stored in centiseconds, so 16 fps (62.5 ms) would play at 60 ms.
DEFAULT_FPS = {"smax": 20, "mpe": 10}


class RecordedEpisode(NamedTuple):
    """One greedy episode of length T (decisions), as host numpy arrays.

    states:  the environment's state pytree (the adapter's: SMAX `jaxmarl...heuristic_enemy_smax_env.State`, MPE
             `jaxmarl...mpe.State`, push_forward `PushForwardState`) with a leading axis [T + 1]: the state
             before each decision, then the state after the last one
    actions: int [T, n] (continuous actions: float [T, n, A])
    rewards: float32 [T], the team reward of each step
    info:    {"return": float (the rollout's own float32 running sum), "won": bool, "length": T,
              "keys": uint32 [T, 2] (the key each env step got), "substates": SMAX only, JaxMARL `SMAX` states
              [T, world_steps, ...] of the ticks inside each step (the last one is the step's result before
              its step counter and done flag are updated), else None}
    """

    states: Any
    actions: np.ndarray
    rewards: np.ndarray
    info: dict


def _inputs(ts, last_action: jax.Array, reset: jax.Array) -> AgentInputs:
    """The actor's view of one step, time axis of 1 (what `ctde.algos.rollout.run_rollout` feeds it)."""
    return AgentInputs(obs=ts.obs[None], last_action=last_action[None], avail=ts.avail[None], state=ts.state[None],
                       reset=reset[None], views=jax.tree.map(lambda v: v[None], ts.views))


def smax_substeps(env: Environment) -> Callable[[jax.Array, Any, jax.Array], Any]:
    """(key, env_state, actions int [n]) -> JaxMARL SMAX states [world_steps, ...] of the ticks of that step.

    The adapter (`ctde.envs.smax.SMAXEnv.step`) hands its key straight to `HeuristicEnemySMAX.step_env`; given
    the same key and `get_state_sequence=True` that function replays the same ticks and returns them all."""
    enemy_smax = env._env  # noqa: SLF001 - the adapter's JaxMARL env; replay is its one other reader
    n = env.spec.n_agents

    def substeps(key, env_state, actions):
        action_dict = {f"ally_{i}": actions[i] for i in range(n)}
        return enemy_smax.step_env(key, env_state, action_dict, True)  # positional: a static argument

    return substeps


def record_episodes(env: Environment, actor: Actor, params: Any, key: jax.Array, episodes: int = 1,
                    substeps: Callable | None = None) -> list[RecordedEpisode]:
    """`episodes` greedy episodes of `actor` (one seed's `params`) in `env`, run in parallel as `run_policy`
    and greedy evaluation run them (so with the same key, the same episodes); each cut at its end.

    `substeps(key, env_state, actions) -> states [W, ...]`, if given, is recorded per step too (SMAX's ticks)."""
    limit = env.spec.episode_limit

    # `params` is an argument, not a constant of the program: the compiled program is then the same for every
    # policy of a shape (JAX's persistent cache serves it to the next replay).
    @jax.jit
    def run(params, key):
        # The key schedule of `collect` / `run_policy` -> `start_rollouts` + `run_rollout(auto_reset=False)`.
        start_key, key = jax.random.split(key)
        env_state, ts = jax.vmap(env.reset)(jax.random.split(start_key, episodes))
        first = (env_state, ts, actor.initial_carry(episodes), no_action(env.spec, (episodes,)),
                 jnp.ones((episodes,), bool), jnp.ones((episodes,), bool), jnp.zeros((episodes,)))

        def step(loop, step_key):
            env_state, ts, carry, last_action, reset, active, ep_return = loop
            act_key, env_key, _ = jax.random.split(step_key, 3)
            carry, action, _ = actor.step(params, carry, _inputs(ts, last_action, reset), act_key)
            env_keys = jax.random.split(env_key, episodes)
            next_state, next_ts = jax.vmap(env.step)(env_keys, env_state, action)
            ep_return = ep_return + jnp.where(active, next_ts.reward, 0.0)
            record = {"state": next_state, "action": action, "reward": next_ts.reward, "active": active,
                      "done": next_ts.done, "won": next_ts.won, "return": ep_return, "key": env_keys}
            if substeps is not None:
                record["substates"] = jax.vmap(substeps)(env_keys, env_state, action)
            loop = (next_state, next_ts, carry, action, jnp.zeros_like(reset), active & ~next_ts.done, ep_return)
            return loop, record

        _, records = jax.lax.scan(step, first, jax.random.split(key, limit))
        return env_state, records

    start, records = jax.device_get(run(params, key))
    recorded = []
    for e in range(episodes):
        length = int(records["active"][:, e].sum())  # >= 1: every episode takes its first step
        end = length - 1
        take = lambda tree, stop: jax.tree.map(lambda x: np.asarray(x[:stop, e]), tree)  # noqa: E731
        states = jax.tree.map(lambda s0, s: np.concatenate([np.asarray(s0)[e][None], s[:length, e]]),
                              start, records["state"])
        info = {"return": float(records["return"][end, e]),
                "won": bool(records["won"][end, e] & records["done"][end, e]), "length": length,
                "keys": np.asarray(records["key"][:length, e]),
                "substates": take(records["substates"], length) if substeps is not None else None}
        recorded.append(RecordedEpisode(states=states, actions=np.asarray(records["action"][:length, e]),
                                        rewards=np.asarray(records["reward"][:length, e]), info=info))
    return recorded


def record_episode(source: DecentralizedPolicy | str | Path, env: Environment, key: jax.Array,
                   seed: int = 0) -> RecordedEpisode:
    """One greedy episode of an exported policy (or a run's `policy/`), seed `seed` of the run, in `env`:
    the episode `run_policy(policy, env, policy.seed_params(seed), key, episodes=1)` plays."""
    policy = source if isinstance(source, DecentralizedPolicy) else load_policy(source)
    params = policy.seed_params(seed)
    family = env.spec.id.split(":", 1)[0]
    substeps = smax_substeps(env) if family == "smax" else None
    return record_episodes(env, policy_actor(policy, params), params, key, 1, substeps)[0]


# ---------------------------------------------------------------------------------------------------------
# Renderers: each draws frame by frame into one persistent figure.


class _SMAXRenderer:
    """Frames of SMAX episodes: for every step, one per world tick (the state before it), then the final state.

    Arrays are prepared for the whole episode at once (numpy); a frame only moves artists."""

    def __init__(self, env: Environment, fig, ax):
        smax = env._smax  # noqa: SLF001 - the adapter's JaxMARL SMAX (map size, unit radii, move count)
        self.fig, self.ax = fig, ax
        self.n_allies, self.n_units = env.n_allies, env.n_units
        self.n_moves = int(smax.num_movement_actions)
        self.ticks_per_step = int(smax.world_steps_per_env_step)
        self.radius = np.asarray(smax.unit_type_radiuses)
        self.short = list(smax.unit_type_shorthands)
        self.max_health = np.asarray(smax.unit_type_health)
        self.attack_range = np.asarray(smax.unit_type_attack_ranges)
        self.width, self.height = float(smax.map_width), float(smax.map_height)
        ax.set_aspect("equal")
        from matplotlib.patches import Circle, Rectangle

        # The map's edge: its walls kill the units that touch them (walls_cause_death).
        ax.add_patch(Rectangle((0, 0), self.width, self.height, fill=False, lw=2, color="dimgray"))

        self.show_types = True
        self.circles, self.labels, self.bars = [], [], []
        for _ in range(self.n_units):
            circle = Circle((0, 0), 0.5)
            ax.add_patch(circle)
            self.circles.append(circle)
            self.labels.append(ax.text(0, 0, "", fontsize=6, color="white", ha="center", va="center"))
            bar = Rectangle((0, 0), 0.0, 0.18, color="black", lw=0)
            ax.add_patch(bar)
            self.bars.append(bar)
        self.bullets = ax.scatter([], [], s=9, marker="s", c="gray", zorder=3)

    def frames(self, episode: RecordedEpisode) -> list[dict]:
        """Per frame: positions [U, 2], alive [U], health [U], types [U], shot [U] (being hit), bullets [k, 2],
        step (the env step shown), tick."""
        sub = episode.info["substates"]
        start = episode.states.state  # the JaxMARL SMAX state inside the adapter's state, [T + 1, ...]
        T, W = episode.info["length"], self.ticks_per_step
        # The state before tick k of step t: the pre-step state for k = 0, else the result of tick k - 1.
        before = lambda name: np.concatenate(  # noqa: E731
            [np.asarray(getattr(start, name))[:T, None], np.asarray(getattr(sub, name))[:, : W - 1]], axis=1)
        pos, alive, health = before("unit_positions"), before("unit_alive"), before("unit_health")
        self._zoom(pos[alive])
        types = np.asarray(start.unit_types)[0]
        # Type letters (JaxMARL's shorthands) only where they tell units apart: on a one-type map such as 3m they
        # would say nothing, and text is most of a frame's drawing time.
        self.show_types = len(set(types.tolist())) > 1
        # The attack each unit makes during step t, as JaxMARL's expand_state_seq takes it (the step's last tick).
        attacks = np.asarray(sub.prev_attack_actions)[:, -1]  # [T, U]
        units = np.arange(self.n_units)
        target = np.where(units < self.n_allies, attacks + self.n_allies - self.n_moves,
                          self.n_allies - 1 - (attacks - self.n_moves))
        shooting = attacks >= self.n_moves  # [T, U]
        target = np.clip(np.where(shooting, target, units), 0, self.n_units - 1)
        frames = []
        for t in range(T):
            for k in range(W):
                p, a = pos[t, k], alive[t, k]
                in_range = np.linalg.norm(p - p[target[t]], axis=-1) < self.attack_range[types]
                firing = shooting[t] & a & a[target[t]] & in_range
                shot = np.zeros(self.n_units, bool)
                shot[target[t][firing]] = True
                frac = k / W
                bullets = (1 - frac) * p[firing] + frac * p[target[t][firing]]
                frames.append({"pos": p, "alive": a, "health": health[t, k], "types": types, "shot": shot,
                               "bullets": bullets, "step": t, "tick": k})
        final = jax.tree.map(lambda x: np.asarray(x)[T], start)
        frames.append({"pos": final.unit_positions, "alive": final.unit_alive, "health": final.unit_health,
                       "types": types, "shot": np.zeros(self.n_units, bool), "bullets": np.zeros((0, 2)),
                       "step": T, "tick": 0})
        return frames

    def _zoom(self, positions: np.ndarray, margin: float = 2.0, least: float = 8.0) -> None:
        """Show the square around every position a living unit takes in the episode (positions [k, 2]), at least
        `least` wide, inside the map: on a whole 32 x 32 map a marine would be a dot."""
        lo, hi = positions.min(axis=0) - margin, positions.max(axis=0) + margin
        half = max(float((hi - lo).max()) / 2, least / 2)
        limits = []
        for centre, size in zip((lo + hi) / 2, (self.width, self.height)):
            start = float(np.clip(centre - half, 0.0, max(size - 2 * half, 0.0)))
            limits.append((start, min(start + 2 * half, size)) if 2 * half < size else (0.0, size))
        self.ax.set_xlim(*limits[0])
        self.ax.set_ylim(*limits[1])

    def draw(self, frame: dict) -> None:
        for u in range(self.n_units):
            circle, label, bar = self.circles[u], self.labels[u], self.bars[u]
            visible = bool(frame["alive"][u])
            for artist in (circle, bar):
                artist.set_visible(visible)
            label.set_visible(visible and self.show_types)
            if not visible:
                continue
            kind = int(frame["types"][u])
            x, y = frame["pos"][u]
            r = float(self.radius[kind])
            ally = u < self.n_allies
            shot = bool(frame["shot"][u])
            circle.set_center((x, y))
            circle.set_radius(r)
            circle.set_color(("cornflowerblue" if shot else "blue") if ally else ("limegreen" if shot else "green"))
            label.set_position((x, y))
            label.set_text(self.short[kind])
            fraction = float(np.clip(frame["health"][u] / self.max_health[kind], 0.0, 1.0))
            bar.set_xy((x - r, y + r + 0.1))
            bar.set_width(2 * r * fraction)
        self.bullets.set_offsets(frame["bullets"] if len(frame["bullets"]) else np.zeros((0, 2)))


class _MPERenderer:
    """Frames of JaxMARL MPE episodes through JaxMARL's own `MPEVisualizer` (one frame per state)."""

    def __init__(self, env: Environment, episode: RecordedEpisode):
        from jaxmarl.environments.mpe.mpe_visualizer import MPEVisualizer

        states = self.unstack(episode.states)
        with contextlib.redirect_stdout(io.StringIO()):  # it prints whether communication is active
            self.visualizer = MPEVisualizer(env._env, states)  # noqa: SLF001 - the adapter's JaxMARL env
        self.fig, self.ax = self.visualizer.fig, self.visualizer.ax

    @staticmethod
    def unstack(states: Any) -> list:
        length = jax.tree.leaves(states)[0].shape[0]
        return [jax.tree.map(lambda x: x[t], states) for t in range(length)]

    def load(self, episode: RecordedEpisode) -> int:
        self.visualizer.state_seq = self.unstack(episode.states)
        return len(self.visualizer.state_seq)

    def draw(self, frame: int) -> None:
        self.visualizer.update(frame)


class _PushForwardRenderer:
    """Frames of mpe:push_forward: the two agents and the box (one frame per state)."""

    def __init__(self, env: Environment, fig, ax):
        from matplotlib.patches import Circle

        self.fig, self.ax = fig, ax
        ax.set_xlim(-1.5, 3.5)
        ax.set_ylim(-2.0, 2.0)
        ax.set_aspect("equal")
        ax.axvline(0.0, color="lightgray", lw=1, zorder=0)
        radii = [float(r) for r in push_forward.SIZES]
        colours = ["tab:blue", "tab:orange", "saddlebrown"]
        self.circles = [Circle((0, 0), r, color=c) for r, c in zip(radii, colours)]
        for circle in self.circles:
            ax.add_patch(circle)
        self.states = None

    def load(self, episode: RecordedEpisode) -> int:
        self.states = np.asarray(episode.states.pos)
        return len(self.states)

    def draw(self, frame: int) -> None:
        for circle, xy in zip(self.circles, self.states[frame]):
            circle.set_center(xy)


# ---------------------------------------------------------------------------------------------------------
# The command


@dataclass
class ReplayResult:
    path: Path
    frames: int
    fps: int
    render_seconds: float  # drawing and writing the frames (not recording, not compiling), wall time
    render_cpu_seconds: float  # the same in this process's CPU time (steadier on a shared machine)
    record_seconds: float  # recording the episodes (compilation included)
    episodes: list[dict] = field(default_factory=list)  # per episode: return, won, length, frames

    @property
    def frames_per_second(self) -> float:
        """Frames drawn and written per second of wall time."""
        return self.frames / max(self.render_seconds, 1e-9)

    @property
    def frames_per_cpu_second(self) -> float:
        return self.frames / max(self.render_cpu_seconds, 1e-9)


def _gif_writer(fps: int):
    """matplotlib's `PillowWriter`, made faster for long replays: a frame is the canvas's own RGBA buffer (no
    `savefig` per frame), reduced at once to a palette of its own by Pillow's fast octree quantizer. Left to
    Pillow's GIF writer, the RGB frames would be quantized at the end by the slower median cut, and kept until
    then at three times the memory (docs/performance.md, "Replay GIFs", measures the difference)."""
    from matplotlib import animation
    from PIL import Image

    class FastGifWriter(animation.PillowWriter):
        def setup(self, fig, outfile, dpi=None):
            super().setup(fig, outfile, dpi=dpi)
            fig.set_dpi(self.dpi)  # the canvas is then drawn at the writer's resolution

        def grab_frame(self, **savefig_kwargs):
            self.fig.canvas.draw()
            rgb = Image.fromarray(np.asarray(self.fig.canvas.buffer_rgba())[..., :3])
            self._frames.append(rgb.quantize(colors=128, method=Image.Quantize.FASTOCTREE))

        def finish(self):
            self._frames[0].save(self.outfile, save_all=True, append_images=self._frames[1:],
                                 duration=int(1000 / self.fps), loop=0)

    return FastGifWriter(fps=fps)


def _writer(out: Path, fps: int):
    from matplotlib import animation

    if out.suffix.lower() == ".gif":
        return _gif_writer(fps)
    if out.suffix.lower() == ".mp4":
        if not animation.FFMpegWriter.isAvailable():
            raise ConfigError(f"--out {out}: writing MP4 needs ffmpeg on PATH, which is not installed here. "
                              f"Install ffmpeg, or write a GIF (--out {out.with_suffix('.gif')}).")
        return animation.FFMpegWriter(fps=fps, codec="libx264", extra_args=["-pix_fmt", "yuv420p"])
    raise ConfigError(f"--out {out}: replay writes .gif (always) or .mp4 (with ffmpeg); got '{out.suffix}'.")


def check_renderable(env_id: str) -> str:
    """The family of `env_id` if replay can render it; else a ConfigError naming what it renders."""
    family = env_id.split(":", 1)[0]
    if family not in RENDERED_FAMILIES:
        raise ConfigError(f"ctde replay renders SMAX (smax:*) and MPE (mpe:*) environments; {env_id} has no "
                          f"renderer. `ctde eval <run>` reports its greedy win rate and return.")
    return family


def _run_dir(path: Path) -> Path:
    """A run directory, also when given its policy/ directory."""
    if not (path / "config.yaml").exists() and (path / "policy.json").exists() and \
            (path.parent / "config.yaml").exists():
        return path.parent
    return path


def replay(run: str | Path, *, model: str | None = None, episodes: int = 1, seed: int = 0, run_seed: int = 0,
           out: str | Path | None = None, fps: int | None = None, dpi: int = 80, quiet: bool = False
           ) -> ReplayResult:
    """Record `episodes` greedy episodes of a saved run and write them, one after the other, to `out`.

    model None: the exported decentralized policy (RUN/policy/); otherwise one of the paradigm's evaluation
    models (e.g. igm_da's expert), restored from the run's newest checkpoint. `seed`: the random seed of the
    episodes (the same seed gives the same episodes as `run_policy` with `PRNGKey(seed)`); `run_seed`: which of
    the run's trained seeds acts (0 = its first). `out` defaults to RUN/replay_<model>.gif."""
    run_dir = _run_dir(Path(run))
    config = load_run_config(run_dir)
    config.log.wandb = False  # a replay logs nothing: a run logged to W&B replays where wandb is not installed
    config = resolve(config)
    family = check_renderable(config.env.id)
    if episodes < 1:
        raise ConfigError(f"--episodes must be at least 1, got {episodes}.")
    if not 0 <= run_seed < config.seeds:
        raise ConfigError(f"--run-seed {run_seed}: the run trained {config.seeds} seed(s), 0 to {config.seeds - 1}.")
    program = build_program(config)
    paradigm = program.paradigm
    if model is None:
        if not (run_dir / "policy" / "policy.json").exists():
            raise CheckpointError(f"{run_dir} has no exported policy ({run_dir / 'policy'}/ is missing): export it "
                                  f"with `ctde export {run_dir}`, or replay a model from the run's checkpoints "
                                  f"with --model ({', '.join(paradigm.eval_models)}).")
        policy = load_policy(run_dir / "policy")
        params = policy.seed_params(run_seed)
        actor, label = policy_actor(policy, params), f"{policy.spec['model']} (exported policy)"
        env = evaluation_env(program.env)
        model = policy.spec["model"]
    else:
        if model not in paradigm.eval_models:
            raise ConfigError(f"--model {model!r} is not a model of paradigm {config.paradigm.name}; "
                              f"choose from {', '.join(paradigm.eval_models)}.")
        all_params, _ = restore_agent_params(run_dir, program)
        params = jax.tree.map(lambda x: x[run_seed], all_params)
        actor = paradigm_actor(paradigm, model, greedy_for(program.env.spec),
                               deterministic=not paradigm.stochastic_evaluation)
        env, label = evaluation_env(program.env), f"{model} (checkpoint)"
    out = Path(out) if out is not None else run_dir / f"replay_{model}.gif"
    fps = fps or DEFAULT_FPS[family]
    if fps < 1:
        raise ConfigError(f"--fps must be at least 1, got {fps}.")
    writer = _writer(out, fps)

    tic = time.perf_counter()
    substeps = smax_substeps(env) if family == "smax" else None
    recorded = record_episodes(env, actor, params, jax.random.PRNGKey(seed), episodes, substeps)
    record_seconds = time.perf_counter() - tic

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = config.env.id.split(":", 1)[1]
    if family == "mpe" and name != "push_forward":
        renderer = _MPERenderer(env, recorded[0])
        fig, ax = renderer.fig, renderer.ax
    else:
        fig, ax = plt.subplots(1, 1, figsize=(5, 5.4))
        renderer = _SMAXRenderer(env, fig, ax) if family == "smax" else _PushForwardRenderer(env, fig, ax)
    # No tick labels: they would be most of every frame's text to draw (and text is the slow part), and the
    # positions they give matter little in a replay.
    ax.set_xticks([])
    ax.set_yticks([])
    fig.subplots_adjust(top=0.86)
    header = (f"{config.env.id} · {config.algo.name} · {config.paradigm.name} · {label}"
              + (f" · run seed {config.seed + run_seed}" if config.seeds > 1 else ""))
    title = fig.suptitle("", fontsize=9)

    tic, cpu_tic = time.perf_counter(), time.process_time()
    total_frames, summaries = 0, []
    out.parent.mkdir(parents=True, exist_ok=True)
    has_win = env.spec.has_win
    with writer.saving(fig, str(out), dpi=dpi):
        for index, episode in enumerate(recorded):
            T = episode.info["length"]
            outcome = (", won" if episode.info["won"] else ", lost") if has_win else ""
            returns = np.concatenate([[0.0], np.cumsum(episode.rewards)])  # the return so far, frame by frame
            if family == "smax":
                frames = renderer.frames(episode)
                steps = [f["step"] for f in frames]
            else:
                count = renderer.load(episode)
                frames, steps = list(range(count)), list(range(count))
            for frame, step in zip(frames, steps):
                renderer.draw(frame)
                title.set_text(f"{header}\nepisode {index + 1}/{len(recorded)} (seed {seed}) · step {step}/{T} · "
                               f"return {returns[step]:.2f} (episode: {episode.info['return']:.2f}{outcome})")
                writer.grab_frame()
            total_frames += len(frames)
            summaries.append({"return": episode.info["return"], "won": episode.info["won"], "length": T,
                              "frames": len(frames)})
    plt.close(fig)
    render_seconds, render_cpu_seconds = time.perf_counter() - tic, time.process_time() - cpu_tic
    result = ReplayResult(path=out, frames=total_frames, fps=fps, render_seconds=render_seconds,
                          render_cpu_seconds=render_cpu_seconds, record_seconds=record_seconds, episodes=summaries)
    if not quiet:
        for i, s in enumerate(summaries):
            won = (f", {'won' if s['won'] else 'lost'}" if has_win else "")
            print(f"episode {i + 1}: return {s['return']:.3f}, length {s['length']}{won}")
        print(f"Wrote {out} ({total_frames} frames at {fps} fps; rendered at {result.frames_per_second:.0f} "
              f"frames/s)")
    return result
