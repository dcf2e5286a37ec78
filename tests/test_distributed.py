"""Two gloo processes on 127.0.0.1 give the single-process results (float64, 1e-10)."""

import os
import socket
import subprocess
import sys
import time

import pytest
import torch

from dist_cases import compute, make_problem

HERE = os.path.dirname(__file__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp_path, mode: str, timeout: float = 120, world: int = 2, script: str = "dist_worker.py", args=()):
    """Start ``world`` gloo workers ``script RANK WORLD PORT OUTDIR MODE *args``; their codes, logs and wall time."""
    port = str(free_port())
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")]),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, os.path.join(HERE, script), str(r), str(world), port, str(tmp_path), mode, *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(world)
    ]
    t0 = time.time()
    outs = [p.communicate(timeout=timeout)[0].decode() for p in procs]
    return [p.returncode for p in procs], outs, time.time() - t0


def test_two_processes_equal_one(tmp_path):
    codes, outs, _ = launch(tmp_path, "ok")
    assert codes == [0, 0], outs
    single = compute(*make_problem())
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got.keys() == single.keys()
        for key, want in single.items():
            want = torch.as_tensor(want, dtype=torch.float64)
            err = (torch.as_tensor(got[key], dtype=torch.float64) - want).abs().max().item()
            assert err <= 1e-10 * max(want.abs().max().item(), 1.0), f"rank {rank} {key}: {err:.2e}"


def test_a_dead_rank_fails_the_other_clearly(tmp_path):
    codes, outs, elapsed = launch(tmp_path, "die", timeout=90)
    assert codes == [2, 3], outs
    message = (tmp_path / "error0.txt").read_text()
    assert "DistributedError" in message and "Another rank probably died" in message, message
    assert elapsed < 60


@pytest.mark.parametrize(
    "mode,phrase", [("empty", "data is empty"), ("nan", "the inputs contain NaN")], ids=["empty_shard", "nan_batch"]
)
def test_bad_input_on_one_rank_is_refused_by_every_rank(tmp_path, mode, phrase):
    """Input checks are agreed on before any collective: both ranks raise the same error, naming rank 1."""
    codes, outs, elapsed = launch(tmp_path, mode, timeout=90)
    assert codes == [2, 2], outs
    messages = [(tmp_path / f"error{r}.txt").read_text().splitlines()[0] for r in range(2)]
    assert messages[0] == messages[1], messages
    assert "failed on 1 of 2 ranks" in messages[0] and "rank 1: ValueError: " in messages[0], messages
    assert phrase in messages[0] and elapsed < 30


@pytest.mark.parametrize("rank,world,expected", [(0, 2, [0, 2, 4]), (1, 2, [1, 3]), (0, 1, [0, 1, 2, 3, 4])])
def test_round_robin_shards(rank, world, expected):
    from curvscope.distributed import shard_batches

    assert shard_batches(list(range(5)), rank, world) == expected
