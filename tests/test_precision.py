"""bfloat16 matmuls (algo.matmul_precision): exact rounding semantics, reach into every layer, and that float32
runs are untouched."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ctde.algos.base import collect_and_learn
from ctde.config import build_config
from ctde.nets.cadp import CADPAgent
from ctde.nets.mixers import QMIXMixer
from ctde.nets.precision import bfloat16_matmul, learner_precision, matmul
from ctde.training.runner import build_program
from ctde.training.resolve import resolve
from ctde.training.runner import seed_keys


def _rounded(a):
    return np.asarray(jnp.asarray(a).astype(jnp.bfloat16).astype(jnp.float32), dtype=np.float64)


def test_bfloat16_matmul_rounds_its_inputs_and_accumulates_in_float32():
    kx, kw, kg = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, (3, 50, 96))
    w = jax.random.normal(kw, (96, 40))
    g = jax.random.normal(kg, (3, 50, 40))
    out, vjp = jax.vjp(bfloat16_matmul, x, w)
    dx, dw = vjp(g)
    # Expected: float64 products of the bfloat16-rounded operands (cotangent rounded too in the backward).
    np.testing.assert_allclose(out, _rounded(x) @ _rounded(w), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(dx, _rounded(g) @ _rounded(w).T, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(dw, np.tensordot(_rounded(x), _rounded(g), axes=([0, 1], [0, 1])), rtol=1e-5, atol=1e-3)
    # ... which is not the float32 product: the rounding really happened.
    assert np.max(np.abs(np.asarray(out) - np.asarray(x) @ np.asarray(w))) > 1e-3
    assert out.dtype == dx.dtype == dw.dtype == jnp.float32
    # Outside the context `matmul` is the plain float32 product; inside it, the bfloat16 one.
    np.testing.assert_array_equal(matmul(x, w), x @ w)
    with learner_precision("bfloat16"):
        np.testing.assert_array_equal(jax.jit(matmul)(x, w), out)


def _dot_generals(jaxpr):
    """Every dot_general in a jaxpr, nested jaxprs (scan bodies, custom derivatives, cond branches) included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append(eqn)
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    found += _dot_generals(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    found += _dot_generals(sub)
    return found


def _weight_matmuls(jaxpr):
    """(dtype of lhs, dtype of rhs) of the dot_generals without batch dimensions: the layers' matmuls and
    their weight gradients (the per-sample contractions over teammates and mixing weights have batch axes)."""
    dots = [e for e in _dot_generals(jaxpr) if not e.params["dimension_numbers"][1][0]]
    return [(str(e.invars[0].aval.dtype), str(e.invars[1].aval.dtype)) for e in dots]


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_every_layer_of_a_gradient_step_follows_the_precision(precision):
    """The gradient of a loss through CADP's agent network (dense layers, attention projections, GRU with its
    hand-written backward) and QMIX's hypernetworks: in bfloat16 every weight matmul, forward and backward,
    takes bfloat16 operands; in float32 none does."""
    n, actions, batch, steps = 3, 5, 4, 6
    agent, mixer = CADPAgent(16, actions, heads=2, head_dim=8), QMIXMixer(n, embed_dim=8, hypernet_embed=16)
    xs = jax.random.normal(jax.random.PRNGKey(0), (steps, batch, n, 10))
    state = jax.random.normal(jax.random.PRNGKey(1), (steps, batch, 7))
    resets = jnp.zeros((steps, batch, n), bool)
    h0 = jnp.zeros((batch, n, 16))
    params = {"agent": agent.init(jax.random.PRNGKey(2), h0, xs, resets),
              "mixer": mixer.init(jax.random.PRNGKey(3), xs[..., 0, :n], xs[..., 0, :n], state, None)}

    def loss(params):
        _, scores, attention = agent.apply(params["agent"], h0, xs, resets)
        chosen = scores["centralized"].max(-1)
        return jnp.mean(mixer.apply(params["mixer"], chosen, chosen, state, None) ** 2) + attention.mean()

    with learner_precision(precision):
        jaxpr = jax.make_jaxpr(jax.grad(loss))(params).jaxpr
    operands = _weight_matmuls(jaxpr)
    assert len(operands) > 30  # every layer forward, and both gradients of each
    expected = "bfloat16" if precision == "bfloat16" else "float32"
    assert all(dtypes == (expected, expected) for dtypes in operands), operands


@pytest.mark.parametrize("algo", ["qmix", "mappo"])
def test_the_option_reaches_the_update_and_only_the_update(algo):
    """With algo.matmul_precision=bfloat16 a training iteration contains bfloat16 matmuls (the update) and
    float32 ones (the rollout's acting, which stays float32); with the default it contains no bfloat16 at all."""
    counts = {}
    for precision in ("float32", "bfloat16"):
        config = resolve(build_config(["env=toy:two_step", f"algo={algo}", "seeds=1", "out=/tmp/unused",
                                       "rollout.num_envs=4", f"algo.matmul_precision={precision}"]))
        program = build_program(config)
        state = jax.eval_shape(program.init, seed_keys(config))
        learner = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), state.learner)
        operands = _weight_matmuls(jax.make_jaxpr(functools.partial(collect_and_learn, program.backbone, program.env))(learner).jaxpr)
        counts[precision] = {dtype: sum(lhs == dtype for lhs, _ in operands) for dtype in ("float32", "bfloat16")}
    assert counts["float32"]["bfloat16"] == 0
    assert counts["bfloat16"]["bfloat16"] > 0 and counts["bfloat16"]["float32"] > 0
