"""`algo.cpu_kernels`: which XLA:CPU kernels each compiled program uses (see ctde.training.cpu_kernels)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ctde.config import ConfigError, build_config
from ctde.training import cpu_kernels
from ctde.training.runner import build_program
from ctde.training.resolve import resolve

YNN_FIELD = "xla_cpu_experimental_ynn_fusion_type"


@pytest.mark.parametrize("algo, precision, learning, expected", [
    ("mappo", "float32", True, "native"),
    ("ippo", "float32", True, "native"),
    ("mappo", "bfloat16", True, "ynnpack_dots"),
    ("qmix", "float32", True, "ynnpack"),  # few env steps per update: the replayed updates dominate
    ("vdn", "bfloat16", True, "ynnpack"),
    ("qmix", "float32", False, "native"),
    ("mappo", "bfloat16", False, "native"),
])
def test_auto_applies_the_measured_table(algo, precision, learning, expected):
    assert cpu_kernels.kernel_choice("auto", algo=algo, precision=precision, learning=learning) == expected


@pytest.mark.parametrize("steps_per_update, expected", [(0, "ynnpack"), (256, "ynnpack"), (511, "ynnpack"),
                                                       (512, "ynnpack_dots"), (1120, "ynnpack_dots")])
def test_value_decomposition_sends_only_dots_to_ynnpack_when_the_environment_has_a_large_share(
        steps_per_update, expected):
    for precision in ("float32", "bfloat16"):
        assert cpu_kernels.kernel_choice("auto", algo="qmix", precision=precision, learning=True,
                                         env_steps_per_update=steps_per_update) == expected
    # MAPPO's choice does not depend on it
    assert cpu_kernels.kernel_choice("auto", algo="mappo", precision="float32", learning=True,
                                     env_steps_per_update=steps_per_update) == "native"


@pytest.mark.parametrize("forced", ["ynnpack", "ynnpack_dots", "native"])
def test_a_forced_choice_holds_for_every_program(forced):
    for algo in ("qmix", "mappo"):
        for learning in (True, False):
            assert cpu_kernels.kernel_choice(forced, algo=algo, precision="float32", learning=learning) == forced


def test_options_select_the_kernels_and_unknown_values_are_refused():
    options = lambda setting: cpu_kernels.compiler_options(setting, algo="mappo", precision="float32")  # noqa: E731
    assert options("ynnpack") is None  # XLA's own default: nothing to override
    assert options("native") == {YNN_FIELD: ""}
    assert options("ynnpack_dots") == {YNN_FIELD: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
    with pytest.raises(ValueError, match="choose from auto, ynnpack, ynnpack_dots, native"):
        options("eigen")
    with pytest.raises(ConfigError, match="native"):
        build_config(["algo.cpu_kernels=eigen"])


def test_native_kernels_compute_the_same_reduction_without_library_calls():
    """A distance reduction like SMAX's (over two coordinates) compiles to no YNNPACK call under `native`, and
    every choice XLA accepts computes the same values."""
    def distances(positions):  # [units, 2] -> [units, units]
        return jnp.sqrt(jnp.sum((positions[:, None] - positions[None]) ** 2, axis=-1))

    positions = jax.random.normal(jax.random.PRNGKey(0), (11, 2))
    lowered = jax.jit(distances).lower(positions)
    results = {}
    for setting in ("ynnpack", "ynnpack_dots", "native"):
        options = cpu_kernels.compiler_options(setting, algo="mappo", precision="float32")
        compiled = lowered.compile(compiler_options=options)
        if setting == "native":
            assert "__ynn" not in compiled.as_text()
        results[setting] = np.asarray(compiled(positions))
    for value in results.values():
        np.testing.assert_allclose(value, results["native"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("overrides, expected", [
    (["algo=mappo"], {YNN_FIELD: ""}),
    (["algo=mappo", "algo.matmul_precision=bfloat16"], {YNN_FIELD: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}),
    (["algo=qmix"], None),  # hallway: 8 envs x 5 steps / 4 updates = 10 env steps per update
    (["algo=qmix", "rollout.num_envs=512"], {YNN_FIELD: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}),  # 640 per update
    (["algo=qmix", "algo.cpu_kernels=native"], {YNN_FIELD: ""}),
])
def test_a_run_compiles_its_programs_with_the_configured_kernels(overrides, expected):
    program = build_program(resolve(build_config(["env=toy:hallway", "out=/tmp/unused", *overrides])))
    assert program.compiler_options() == expected
    assert program.compiler_options(learning=False) == {YNN_FIELD: ""}  # evaluation: the environment dominates


def test_straight_line_threefry_draws_the_same_bits_without_a_loop():
    from jax._src.interpreters import mlir
    from jax._src.random import threefry2x32

    def draws(key):
        first, second = jax.random.split(key)
        return (jax.random.split(key, 7), jax.random.uniform(first, (1000,)), jax.random.normal(second, (33, 5)),
                jax.random.categorical(first, jnp.zeros((100, 11))),
                jax.vmap(lambda k: jax.random.bits(k, (3,), jnp.uint32))(jax.random.split(second, 16)))

    key = jax.random.PRNGKey(42)
    # JAX's own CPU lowering (a 5-trip loop) first, then ours; a fresh function each time, so nothing is reused.
    mlir.register_lowering(threefry2x32.threefry2x32_p, threefry2x32._threefry2x32_cpu_lowering_rule,
                           platform="cpu")
    try:
        looped = jax.jit(lambda k: draws(k))
        assert "while" in looped.lower(key).as_text()
        expected = looped(key)
        assert cpu_kernels.unroll_threefry()
        straight = jax.jit(lambda k: draws(k))
        assert "while" not in straight.lower(key).as_text()
        for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(straight(key))):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    finally:
        cpu_kernels.unroll_threefry()  # leave the process as every training program leaves it
