"""Times JaxMARL's own `qmix_rnn` baseline at the settings of `throughput.py`'s setting (b).

JaxMARL's baselines are not part of its PyPI package, and none of their code is in this repository: pass
the path of a JaxMARL checkout's `baselines/QLearning/qmix_rnn.py`, and run this with a Python that has
jaxmarl, flashbax, hydra-core, omegaconf, wandb and six installed (throughput.py does this for you with
--jaxmarl-python). A fresh one: `python -m venv jaxmarl-venv && jaxmarl-venv/bin/pip install jaxmarl flashbax
hydra-core omegaconf wandb six`.

    python jaxmarl_qmix_baseline.py /path/to/JaxMARL/baselines/QLearning/qmix_rnn.py --steps 204800

Prints one JSON line: compile seconds, run seconds and env steps/s (the training program alone, test
evaluation off, as in our measurement).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

os.environ.setdefault("WANDB_MODE", "disabled")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("qmix_file")
    parser.add_argument("--steps", type=float, default=204_800)
    parser.add_argument("--map", default="5m_vs_6m")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    sys.path.insert(0, os.path.dirname(os.path.abspath(args.qmix_file)))
    spec = importlib.util.spec_from_file_location("jaxmarl_qmix_rnn", args.qmix_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import jax

    # JaxMARL's ql_rnn_smax.yaml defaults, except hidden size (64, as ours) and test evaluation (off: we time
    # the training program alone on both sides).
    config = {
        "TOTAL_TIMESTEPS": args.steps, "NUM_ENVS": 16, "NUM_STEPS": 128, "BUFFER_SIZE": 5000,
        "BUFFER_BATCH_SIZE": 32, "HIDDEN_SIZE": args.hidden, "MIXER_EMBEDDING_DIM": 64,
        "MIXER_HYPERNET_HIDDEN_DIM": 256, "MIXER_INIT_SCALE": 0.001, "EPS_START": 1.0, "EPS_FINISH": 0.05,
        "EPS_DECAY": 0.1, "MAX_GRAD_NORM": 10, "TARGET_UPDATE_INTERVAL": 10, "TAU": 1.0, "NUM_EPOCHS": 8,
        "LR": 0.00005, "LEARNING_STARTS": 10000, "LR_LINEAR_DECAY": False, "GAMMA": 0.99, "REW_SCALE": 10.0,
        "ENV_NAME": "HeuristicEnemySMAX", "MAP_NAME": args.map,
        "ENV_KWARGS": {"see_enemy_actions": True, "walls_cause_death": True, "attack_mode": "closest"},
        "TEST_DURING_TRAINING": False, "TEST_INTERVAL": 0.05, "TEST_NUM_STEPS": 128, "TEST_NUM_ENVS": 512,
        "NUM_SEEDS": 1, "SEED": 0, "WANDB_MODE": "disabled",
    }
    env, _ = module.env_from_config(dict(config, ENV_KWARGS=dict(config["ENV_KWARGS"])))
    train = jax.jit(jax.vmap(module.make_train(config, env)))
    keys = jax.random.split(jax.random.PRNGKey(0), 1)
    tic = time.perf_counter()
    compiled = train.lower(keys).compile()
    compile_seconds = time.perf_counter() - tic
    runs = []
    for r in range(args.repeats):
        tic = time.perf_counter()
        jax.block_until_ready(compiled(jax.random.split(jax.random.PRNGKey(r), 1)))
        runs.append(time.perf_counter() - tic)
    updates = int(config["TOTAL_TIMESTEPS"]) // config["NUM_STEPS"] // config["NUM_ENVS"]
    env_steps = updates * config["NUM_STEPS"] * config["NUM_ENVS"]
    runs.sort()
    median = runs[len(runs) // 2]
    print(json.dumps({"compile_seconds": compile_seconds, "run_seconds": runs, "env_steps": env_steps,
                      "steps_per_second": env_steps / median, "jax": jax.__version__}))


if __name__ == "__main__":
    main()
