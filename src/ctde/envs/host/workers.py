"""A set of host-side environments, stepped together: each in its own process (default when there are several),
or all in this one (`rollout.host_processes=false`; cheap for tests and for a single environment).

A worker process runs `serve` on one end of a pipe. It is started as a fresh interpreter that imports this package
without `ctde/__init__.py` (which imports JAX): a worker costs its environment and NumPy, not a JAX runtime, and
no JAX process is ever forked. Commands go out to every addressed worker before any answer is read, so the
environments step side by side.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import traceback
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from pathlib import Path

from ctde.errors import CtdeError

# Run by the worker's interpreter: stand-in `ctde` and `ctde.envs` packages whose __init__ files are not run.
_BOOT = """
import sys, types
root = sys.argv[1]
for name, sub in (("ctde", ""), ("ctde.envs", "/envs")):
    module = types.ModuleType(name)
    module.__path__ = [root + sub]
    sys.modules[name] = module
from multiprocessing.connection import Connection
from ctde.envs.host.workers import serve
serve(Connection(int(sys.argv[2])))
"""


def serve(conn: Connection) -> None:
    """The worker loop: ("make", factory, seed), then ("reset", seed) / ("step", actions) / ("close",).

    Ctrl-C reaches the whole process group: the worker ignores it and the trainer closes it. If the trainer dies,
    the pipe ends and the worker closes its environment (a StarCraft II process) and exits."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    env = None
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            command = message[0]
            try:
                if command == "make":
                    env = message[1].make(message[2])
                    conn.send(("ok", env.info()))
                elif command == "reset":
                    conn.send(("ok", env.reset(message[1])))
                elif command == "step":
                    conn.send(("ok", env.step(message[1])))
                elif command == "close":
                    conn.send(("ok", None))
                    break
            except Exception as e:  # noqa: BLE001 - sent to the trainer, which raises it with the worker's traceback
                try:
                    conn.send(("error", e, traceback.format_exc()))
                except Exception:  # noqa: BLE001 - an exception that does not pickle
                    conn.send(("error", RuntimeError(repr(e)), traceback.format_exc()))
    finally:
        if env is not None:
            env.close()
        conn.close()


class _Remote:
    """One environment in its own process."""

    def __init__(self, factory, seed: int):
        parent, child = Pipe()
        root = str(Path(__file__).parents[2])  # the ctde package directory
        self.process = subprocess.Popen([sys.executable, "-c", _BOOT, root, str(child.fileno())],
                                        pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL)
        child.close()
        self.conn = parent
        self.env_id = factory.env_id
        self.send("make", factory, seed)

    def send(self, *message) -> None:
        try:
            self.conn.send(message)
        except (BrokenPipeError, OSError):
            raise RuntimeError(f"The {self.env_id} worker process (pid {self.process.pid}) has exited "
                               f"(status {self.process.poll()}).") from None

    def receive(self):
        try:
            status, *payload = self.conn.recv()
        except (EOFError, OSError):
            raise RuntimeError(f"The {self.env_id} worker process (pid {self.process.pid}) died (status "
                               f"{self.process.wait(timeout=5)}); its output above says why.") from None
        if status == "error":
            error, trace = payload
            if isinstance(error, CtdeError):
                raise error
            raise RuntimeError(f"{self.env_id} failed in its worker process:\n{trace}") from error
        return payload[0]

    def close(self) -> None:
        try:
            self.send("close")
            self.receive()
        except Exception:  # noqa: BLE001 - closing a worker that already died
            pass
        self.conn.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class _Local:
    """One environment in this process, with the same send-then-receive calls."""

    def __init__(self, factory, seed: int):
        self.env = factory.make(seed)
        self._answer = self.env.info()

    def send(self, command, *args) -> None:
        if command == "reset":
            self._answer = self.env.reset(args[0])
        elif command == "step":
            self._answer = self.env.step(args[0])
        elif command == "close":
            self.env.close()
            self._answer = None

    def receive(self):
        return self._answer

    def close(self) -> None:
        self.send("close")


class HostEnvs:
    """`len(seeds)` environments built by `factory`, environment k seeded with seeds[k] when it starts."""

    def __init__(self, factory, seeds: list[int], processes: bool):
        self.workers = []
        try:
            for seed in seeds:
                self.workers.append((_Remote if processes else _Local)(factory, int(seed)))
            self.infos = [w.receive() for w in self.workers]
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return len(self.workers)

    def _all(self, command: str, indices, args) -> list[dict]:
        for k, arg in zip(indices, args):
            self.workers[k].send(command, arg)
        return [self.workers[k].receive() for k in indices]

    def reset(self, indices, seeds) -> list[dict]:
        return self._all("reset", indices, seeds)

    def step(self, indices, actions) -> list[dict]:
        return self._all("step", indices, actions)

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
        self.workers = []
