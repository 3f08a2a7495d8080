"""kill -9 at random moments of `hificl train` into an existing output directory: the directory always holds
one whole run (the old one or the new one, never a mix), the user's own files survive, and a re-run gives the
uninterrupted run's outputs with no stage or trash left beside them."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.test_bad_inputs import small

ROOT = Path(__file__).resolve().parents[1]


def _train(world: Path, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "hificl.cli", "train", *small(world, out), "--overwrite", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def _whole_run(out: Path) -> dict:
    """What the directory holds: one run's result, method and predictions, consistent with each other."""
    result = json.loads((out / "result.json").read_text())
    method = json.loads((out / "method" / "method.json").read_text())
    predictions = json.loads((out / "predictions.json").read_text())
    assert method["config"]["rank"] == result["config"]["method"]["rank"]
    assert len(predictions) == result["eval_size"]
    assert (out / "method" / "method.safetensors").stat().st_size > 0
    return result


def test_kill_9_during_train_leaves_one_whole_run_and_a_rerun_matches(tiny_world: Path, tmp_path: Path) -> None:
    whole = tmp_path / "whole" / "out"
    start = time.monotonic()
    proc = _train(tiny_world, whole)
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()[-2000:]
    duration = time.monotonic() - start
    expected = _whole_run(whole)

    out = tmp_path / "killed" / "out"
    proc = _train(tiny_world, out, "--set", "method.rank=4")  # an older run, another rank, in the same place
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()[-2000:]
    (out / "notes.txt").write_text("the user's own file")
    rng = random.Random(0)
    for _ in range(2):
        proc = _train(tiny_world, out)
        time.sleep(rng.uniform(0.3, 1.0) * duration)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        held = _whole_run(out)  # the old run or the new one, whole
        assert held["config"]["method"]["rank"] in (4, 8)
        assert (out / "notes.txt").read_text() == "the user's own file"

    proc = _train(tiny_world, out)
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()[-2000:]
    again = _whole_run(out)
    assert again["metrics"] == expected["metrics"] and again["config"] == {**expected["config"], "output_dir": str(out)}
    assert json.loads((out / "predictions.json").read_text()) == json.loads((whole / "predictions.json").read_text())
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]  # no stage, no trash
    assert (out / "notes.txt").read_text() == "the user's own file"
