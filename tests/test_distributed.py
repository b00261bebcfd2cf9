"""lib.distributed and scripts/sharded_eval.py: shards, gathering, and torchrun runs equal to one process.

The multi-process tests launch ``torchrun --standalone --nproc_per_node=2`` with gloo on the
CPU (``CUDA_VISIBLE_DEVICES`` empty, ``OMP_NUM_THREADS=1``), so they run on any machine with
a torch build that has ``torch.distributed``.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from lib import distributed
from lib.distributed import World

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "sharded_eval.py"
TORCHRUN = Path(sys.executable).parent / "torchrun"

needs_distributed = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="this torch build has no torch.distributed with the gloo backend (needed to run torchrun on CPUs)",
)


@pytest.fixture
def alone(monkeypatch):
    """A process that no launcher started: none of torchrun's variables set."""
    for name in distributed.LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _environment() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in distributed.LAUNCH_VARIABLES}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO))
    return env


def _torchrun(*args) -> list[str]:
    launcher = [str(TORCHRUN)] if TORCHRUN.is_file() else [sys.executable, "-m", "torch.distributed.run"]
    return launcher + ["--standalone", "--nproc_per_node=2", *map(str, args)]


def _run(command: list[str], timeout: float = 150) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=REPO, env=_environment(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done


# --------------------------------------------------------------------------------------------
# Shards
# --------------------------------------------------------------------------------------------


def test_shards_cover_every_item_exactly_once_in_order():
    for size in range(1, 13):
        for n in list(range(0, 40)) + [97, 1000, 1001, 4952]:
            shards = [distributed.shard(n, World(rank=r, world_size=size)) for r in range(size)]
            assert [i for s in shards for i in s] == list(range(n)), (n, size)  # every item once, in rank order
            lengths = [len(s) for s in shards]
            assert max(lengths) - min(lengths) <= 1, (n, size, lengths)
            assert all(s.step == 1 for s in shards)  # contiguous


def test_shard_follows_the_documented_formula():
    # 10 items over 4 ranks: [0, 2), [2, 5), [5, 7), [7, 10) (r * n // W).
    assert [tuple(distributed.shard(10, World(rank=r, world_size=4))) for r in range(4)] == [
        (0, 1), (2, 3, 4), (5, 6), (7, 8, 9)]
    assert [len(distributed.shard(2, World(rank=r, world_size=3))) for r in range(3)] == [0, 1, 1]


def test_shard_refuses_bad_counts_and_worlds():
    one = World()
    with pytest.raises(ValueError, match="n_items"):
        distributed.shard(-1, one)
    with pytest.raises(TypeError, match="n_items"):
        distributed.shard(4.0, one)
    with pytest.raises(TypeError, match="World"):
        distributed.shard(4, 2)
    with pytest.raises(ValueError, match="rank must be below world_size"):
        World(rank=2, world_size=2)
    with pytest.raises(ValueError, match="backend"):
        World(backend="mpi")


# --------------------------------------------------------------------------------------------
# A single process (no launcher): nothing initialised, plain loops
# --------------------------------------------------------------------------------------------


def test_world_without_launcher_is_one_process_and_initialises_nothing(alone):
    here = distributed.world("gloo")
    assert (here.rank, here.world_size, here.local_rank, here.backend) == (0, 1, 0, None)
    assert here.device == torch.device("cpu") and here.is_main and not here.is_distributed
    assert distributed.init("gloo") is False
    assert not torch.distributed.is_initialized()
    distributed.shutdown()  # nothing to shut down: no error


def test_single_process_map_images_is_the_plain_loop(alone):
    items = torch.arange(12.0).view(4, 3)
    got = distributed.map_images(lambda row: {"sum": float(row.sum()), "row": row * 2}, items, world=World())
    assert [g["sum"] for g in got] == [3.0, 12.0, 21.0, 30.0]
    assert torch.equal(torch.stack([g["row"] for g in got]), items * 2)
    assert distributed.map_images(lambda i: i * i, range(5)) == [0, 1, 4, 9, 16]
    tensor = torch.ones(3, 2)
    assert distributed.gather_tensor(tensor, World()) is tensor
    doubled = distributed.sharded(lambda shard: shard * 2, world=World())
    assert torch.equal(doubled(items), items * 2)


@dataclass
class _Scores:
    value: torch.Tensor
    name: str


def test_results_come_back_on_the_cpu_inside_containers(alone):
    grad = torch.ones(2, requires_grad=True)
    got = distributed.map_images(lambda i: [(_Scores(grad * i, "s"), {"t": grad})], [1, 2], world=World())
    scores, extra = got[1][0]
    assert isinstance(scores, _Scores) and scores.name == "s" and torch.equal(scores.value, torch.full((2,), 2.0))
    assert not scores.value.requires_grad and not extra["t"].requires_grad


def test_bad_arguments_raise_one_clear_error(alone, monkeypatch):
    with pytest.raises(ValueError, match="backend must be one of"):
        distributed.init("mpi")
    with pytest.raises(TypeError, match="generator"):
        distributed.map_images(lambda x: x, (i for i in range(3)), world=World())
    with pytest.raises(TypeError, match="callable"):
        distributed.map_images(3, [1], world=World())
    with pytest.raises(TypeError, match="World"):
        distributed.map_images(lambda x: x, [1], world="cpu")
    with pytest.raises(ValueError, match="process group"):
        distributed.map_images(lambda x: x, [1], world=World(rank=0, world_size=2))
    with pytest.raises(ValueError, match="0-d"):
        distributed.gather_tensor(torch.tensor(1.0), World())
    with pytest.raises(ValueError, match="3 results for a shard of 4"):
        distributed.sharded(lambda shard: shard[:3], world=World())(torch.zeros(4, 2))
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT not set"):
        distributed.world("gloo")
    for name, value in (("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29500")):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ValueError, match="do not fit"):
        distributed.world("gloo")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs CUDA"):
            distributed.init("nccl")


# --------------------------------------------------------------------------------------------
# Two processes under torchrun (gloo)
# --------------------------------------------------------------------------------------------

_CHECKS = textwrap.dedent('''
    import json, sys
    import torch
    from lib import distributed

    here = distributed.world("gloo")
    report = {"world": [here.rank, here.world_size, here.local_rank, str(here.device), here.backend]}
    # 5 items over 2 ranks: rank 0 computes items 0-1, rank 1 items 2-4.
    rows = distributed.map_images(lambda i: {"item": i, "by": here.rank, "t": torch.full((2,), i / 3)}, range(5), world=here)
    report["items"] = [r["item"] for r in rows]
    report["by"] = [r["by"] for r in rows]
    report["tensors"] = torch.stack([r["t"] for r in rows]).tolist()
    part = distributed.shard(5, here)
    values = torch.arange(5 * 3, dtype=torch.float64).view(5, 3)[part.start:part.stop] / 7
    report["gathered"] = distributed.gather_tensor(values, here).tolist()
    flags = torch.tensor([i % 2 == 0 for i in part])
    report["flags"] = distributed.gather_tensor(flags, here).tolist()
    report["empty_shard"] = distributed.gather_tensor(torch.arange(1)[distributed.shard(1, here).start:distributed.shard(1, here).stop], here).tolist()
    squares = distributed.sharded(lambda shard: shard ** 2, world=here)
    report["sharded"] = squares(torch.arange(7)).tolist()
    report["sharded_list"] = distributed.sharded(lambda shard: [str(x) for x in shard], world=here)(list(range(3)))

    def fails_at_3(i):
        if i == 3:
            raise ValueError("item three is bad")
        return i

    try:
        distributed.map_images(fails_at_3, range(5), world=here)
    except Exception as error:
        report["failure"] = [type(error).__name__, str(error)]
    try:
        distributed.map_images(lambda i: i, range(3 + here.rank), world=here)
    except Exception as error:
        report["unequal"] = [type(error).__name__, str(error)]
    report["after"] = distributed.map_images(lambda i: -i, range(3), world=here)  # the group still works
    distributed.shutdown()
    with open(sys.argv[1] + f".{here.rank}.json", "w") as file:
        json.dump(report, file)
''')


@needs_distributed
def test_two_processes_gather_in_order_and_fail_together(tmp_path):
    checks = tmp_path / "checks.py"
    checks.write_text(_CHECKS)
    _run(_torchrun(checks, tmp_path / "report"), timeout=120)
    reports = [json.loads((tmp_path / f"report.{rank}.json").read_text()) for rank in (0, 1)]
    for rank, report in enumerate(reports):
        assert report["world"] == [rank, 2, rank, "cpu", "gloo"]
        assert report["items"] == [0, 1, 2, 3, 4]
        assert report["by"] == [0, 0, 1, 1, 1]  # shard(5) of 2 ranks: [0, 2) and [2, 5)
        assert report["tensors"] == [torch.full((2,), i / 3).tolist() for i in range(5)]  # pickled, exact
        assert report["gathered"] == (torch.arange(15, dtype=torch.float64).view(5, 3) / 7).tolist()
        assert report["flags"] == [True, False, True, False, True]
        assert report["empty_shard"] == [0]  # rank 0's shard of 1 item is empty
        assert report["sharded"] == [i * i for i in range(7)]
        assert report["sharded_list"] == ["0", "1", "2"]
        assert report["after"] == [0, -1, -2]
        assert report["unequal"][0] == "ValueError" and "[3, 4]" in report["unequal"][1]
    # Item 3 is rank 1's: it raises its own error, rank 0 one that names rank 1 and the item.
    assert reports[1]["failure"] == ["ValueError", "item three is bad"]
    name, message = reports[0]["failure"]
    assert name == "RuntimeError" and "rank 1" in message and "item 3" in message and "item three is bad" in message


def _table(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.reader(file))


@needs_distributed
def test_sharded_eval_under_torchrun_equals_one_process(tmp_path):
    options = ["--method", "gradcam", "--n-images", "3", "--profile", "smoke", "--backend", "gloo"]
    _run([sys.executable, str(SCRIPT), *options, "--out", str(tmp_path / "one.csv")])
    two = _run(_torchrun(SCRIPT, *options, "--out", tmp_path / "two.csv"))
    assert "2 process(es)" in two.stdout
    one_table, two_table = _table(tmp_path / "one.csv"), _table(tmp_path / "two.csv")
    assert one_table[0] == ["image", "label", "insertion_auc", "deletion_auc", "pointing_hit", "difficult",
                            "point_x", "point_y"]
    # One row per image, sorted by id; rank 0 evaluated chelsea alone, rank 1 coffee and camera.
    assert [row[0] for row in one_table[1:]] == ["camera", "chelsea", "coffee"]
    assert two_table == one_table  # the same floats, written with repr, character for character
    for row in one_table[1:]:
        insertion, deletion = float(row[2]), float(row[3])
        assert 0 < insertion < 1 and 0 < deletion < 1  # probabilities' areas, not placeholders
    assert (tmp_path / "two.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()


def test_sharded_eval_refuses_bad_arguments(tmp_path, capsys):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import sharded_eval
    finally:
        sys.path.remove(str(SCRIPT.parent))
    assert sharded_eval.main(["--method", "no_such_method", "--out", str(tmp_path / "t.csv")]) == 2
    assert "--method" in capsys.readouterr().err
    assert sharded_eval.main(["--out", str(tmp_path / "t.txt")]) == 2
    assert ".csv" in capsys.readouterr().err
    assert sharded_eval.main(["--n-images", "0", "--out", str(tmp_path / "t.csv")]) == 2
    assert "--n-images" in capsys.readouterr().err
