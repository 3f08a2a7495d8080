"""Training through Lightning's DDP strategy: 2 CPU processes (gloo) on the random-init tiny LMM.

Lightning's "ddp" launcher re-executes sys.argv for rank 1, so the run lives in a standalone script
(tests/ddp_worker.py) started here as a subprocess; it writes what each rank holds and this test compares.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hificl.data.official import load_task
from hificl.metrics.vqa import VQAAccuracy

ROOT = Path(__file__).resolve().parents[1]


def _accuracy(predictions: list[dict], answers: dict[int, list[str]]) -> float:
    metric = VQAAccuracy()
    metric.update([p["prediction"] for p in predictions], [answers[p["question_id"]] for p in predictions])
    return float(metric.compute())


@pytest.fixture(scope="module")
def ddp_run(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "WORLD_SIZE")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT), TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "ddp_worker.py"), str(tiny_world), str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def test_both_ranks_learn_bit_identical_parameters(ddp_run: Path) -> None:
    init = [load_file(str(ddp_run / f"init{r}.safetensors")) for r in range(2)]
    final = [load_file(str(ddp_run / f"rank{r}.safetensors")) for r in range(2)]
    assert set(final[0]) == set(final[1]) == {"k_a", "k_b", "v_a", "v_b"}
    for name in final[0]:
        assert torch.equal(init[0][name], init[1][name]), name  # same seed, same start
        assert torch.equal(final[0][name], final[1][name]), name  # all-reduced gradients, same updates
    assert not torch.equal(final[0]["v_b"], init[0]["v_b"])  # V_B starts at 0: it must have moved
    assert init[0]["v_b"].abs().max() == 0 and final[0]["v_b"].abs().max() > 0
    for name in ("k_a", "k_b", "v_a"):
        assert not torch.equal(final[0][name], init[0][name]), name


def test_each_rank_sees_half_the_data(ddp_run: Path) -> None:
    dumps = [json.loads((ddp_run / f"metrics{r}.json").read_text()) for r in range(2)]
    assert [d["world_size"] for d in dumps] == [2, 2]
    # 16 samples / (2 ranks x batch 4) = 2 steps per epoch, x 2 epochs (one process alone would take 8).
    assert [d["global_step"] for d in dumps] == [4, 4]


def test_test_metrics_are_synced_over_the_union_of_both_ranks(ddp_run: Path, tiny_world: Path) -> None:
    dumps = [json.loads((ddp_run / f"metrics{r}.json").read_text()) for r in range(2)]
    answers = {r.question_id: list(r.answers) for r in load_task("vqav2", tiny_world / "synthetic", "val")}
    ids = [{p["question_id"] for p in d["predictions"]} for d in dumps]
    assert len(ids[0]) == len(ids[1]) == 4 and not ids[0] & ids[1]  # DistributedSampler: disjoint halves of 8
    union = dumps[0]["predictions"] + dumps[1]["predictions"]
    expected = _accuracy(union, answers)
    assert dumps[0]["metrics"] == dumps[1]["metrics"] == {"accuracy": pytest.approx(expected)}
    # Each rank's own predictions score differently, so agreeing on the union's value means a real reduction.
    own = [_accuracy(d["predictions"], answers) for d in dumps]
    assert own[0] != own[1]
    assert expected == pytest.approx(sum(own) / 2)
    assert 0 < expected < 1
