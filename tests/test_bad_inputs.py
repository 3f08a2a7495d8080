"""Bad input through the CLI: exit code 2, ONE sentence on stderr naming the file / field / value, no traceback,
nothing half-written. Plus: adapters never unpickle, and the same seed repeats a teacher-based run exactly."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from hificl.cli import main
from hificl.experiment import experiment_config, run_experiment
from hificl.results import ResultRow
from tests.family_models import save, tiny

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = "vqav2/v2_OpenEnded_mscoco_{}2014_questions.json"
ANNOTATIONS = "vqav2/v2_mscoco_{}2014_annotations.json"


def small(world: Path, out: Path) -> list[str]:
    """A tiny training run on the test world that would write `out` if it finished."""
    values = {
        "model": world / "model",
        "progress": "false",
        "output_dir": out,
        "data.train_size": 4,
        "data.eval_size": 2,
        "data.batch_size": 2,
        "data.eval_batch_size": 2,
        "train.epochs": 1,
    }
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


def error_of(stderr: str) -> str:
    """The one `hificl: error:` line (transformers / Lightning may log other lines to stderr)."""
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("hificl: error: ")]
    assert len(lines) == 1, stderr
    message = lines[0].removeprefix("hificl: error: ")
    assert not re.search(r"[.!?]\s+[A-Z]", message), f"more than one sentence: {message}"
    return message


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    code = main(argv)
    assert code == 2
    return error_of(capsys.readouterr().err)


def data_copy(world: Path, tmp: Path) -> Path:
    root = tmp / "data"
    shutil.copytree(world / "synthetic", root)
    return root


def edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def model_copy(world: Path, tmp: Path, model_type: str) -> Path:
    path = tmp / f"model-{model_type}"
    shutil.copytree(world / "model", path)
    edit_json(path / "config.json", lambda c: c.update(model_type=model_type))
    return path


# --- cases: (world, tmp) -> (argv, strings the message must contain) -----------------------------------------
def missing_root(world: Path, tmp: Path) -> tuple[list[str], list[str]]:
    return ["train", *small(world, tmp / "out"), "--set", f"data.data_root={tmp / 'nowhere'}"], [
        f"data root {tmp / 'nowhere'}",
        "does not exist",
    ]


def lone_model(world: Path, tmp: Path) -> Path:
    """The tiny model copied without the synthetic benchmark `hificl base-model` writes beside it."""
    model = tmp / "lone" / "model"
    shutil.copytree(world / "model", model)
    return model


def missing_benchmark(world: Path, tmp: Path) -> tuple[list[str], list[str]]:
    model = lone_model(world, tmp)
    return ["train", *small(world, tmp / "out"), "--set", f"model={model}"], [
        f"The synthetic benchmark of base model {model} is missing: expected it at {model.parent / 'synthetic'}",
        f"hificl base-model --out {model}",
    ]


def missing_image(world: Path, tmp: Path) -> tuple[list[str], list[str]]:
    root = data_copy(world, tmp)
    for image in (root / "coco" / "train2014").iterdir():
        image.unlink()
    argv = ["train", *small(world, tmp / "out"), "--set", f"data.data_root={root}"]
    return argv, [f"image file {root / 'coco' / 'train2014'}/COCO_train2014_", ".png does not exist"]


def malformed_json(world: Path, tmp: Path) -> tuple[list[str], list[str]]:
    root = data_copy(world, tmp)
    path = root / QUESTIONS.format("train")
    path.write_text(path.read_text()[:500])
    argv = ["train", *small(world, tmp / "out"), "--set", f"data.data_root={root}"]
    return argv, [str(path), "malformed JSON at line 1 column 498 (char 497)"]


def no_answers(world: Path, tmp: Path) -> tuple[list[str], list[str]]:
    root = data_copy(world, tmp)
    path = root / ANNOTATIONS.format("train")
    qid: list[int] = []

    def drop(data: dict) -> None:
        qid.append(data["annotations"][3]["question_id"])
        data["annotations"][3]["answers"] = []

    edit_json(path, drop)
    argv = ["train", *small(world, tmp / "out"), "--set", f"data.data_root={root}"]
    return argv, [str(path), f"question_id {qid[0]} has no answers"]


def empty_split(world: Path, tmp: Path) -> tuple[list[str], list[str]]:
    root = data_copy(world, tmp)
    edit_json(root / QUESTIONS.format("val"), lambda d: d.update(questions=[]))
    edit_json(root / ANNOTATIONS.format("val"), lambda d: d.update(annotations=[]))
    argv = ["train", *small(world, tmp / "out"), "--set", f"data.data_root={root}"]
    return argv, [str(root / QUESTIONS.format("val")), "holds no questions (empty split)", "split 'val'"]


def unknown_family(world: Path, tmp: Path) -> tuple[list[str], list[str]]:
    model = model_copy(world, tmp, "martian_vlm")
    argv = [
        "train",
        *small(world, tmp / "out"),
        "--set",
        f"model={model}",
        "--set",
        f"data.data_root={world / 'synthetic'}",
    ]
    return argv, [str(model / "config.json"), "model_type 'martian_vlm'", "supported families: ", "idefics2, idefics3"]


def cross_attention(model_type: str, name: str) -> Callable[[Path, Path], tuple[list[str], list[str]]]:
    def case(world: Path, tmp: Path) -> tuple[list[str], list[str]]:
        model = model_copy(world, tmp, model_type)
        data = f"data.data_root={world / 'synthetic'}"  # the copy has no benchmark beside it
        return ["train", *small(world, tmp / "out"), "--set", f"model={model}", "--set", data], [
            name,
            "cross-attention",
        ]

    return case


def override(setting: str, *expected: str) -> Callable[[Path, Path], tuple[list[str], list[str]]]:
    def case(world: Path, tmp: Path) -> tuple[list[str], list[str]]:
        return ["train", *small(world, tmp / "out"), "--set", setting], list(expected)

    return case


CASES = {
    "missing data root": missing_root,
    "missing synthetic benchmark": missing_benchmark,
    "missing image": missing_image,
    "malformed JSON": malformed_json,
    "annotation without answers": no_answers,
    "empty split": empty_split,
    "unknown model family": unknown_family,
    "cross-attention mllama": cross_attention("mllama", "Llama 3.2 Vision (mllama)"),
    "n = 0": override("method.n_tokens=0", "experiment.method.n_tokens must be >= 1, got 0"),
    "r > head_dim": override("method.rank=9", "rank must be in 1..head_dim=8", "got rank=9"),
    # lr 1e30 (YAML 1.1 would leave it a string; the config reads it as the float): warm-up gives step 0 lr 0,
    # step 1 blows the parameters up, step 2's loss is NaN.
    "NaN loss": override("train.lr=1e30", "training loss became nan at step 2", "training stopped"),
    "unknown preset": override("preset=hificl-xl", "Unknown preset 'hificl-xl'", "hificl+teacher"),
    "unknown config key": override("train.learning_rate=1", "Unknown key(s) ['learning_rate'] in experiment.train"),
    "wrong type": override("train.epochs=two", "experiment.train.epochs must be int | NoneType, got 'two'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_sentence_and_exit_2(
    case: str, tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, expected = CASES[case](tiny_world, tmp_path)
    if case == "NaN loss":
        argv += ["--set", "train.epochs=3"]
    message = run_cli(argv, capsys)
    for part in expected:
        assert part in message, (part, message)
    assert not (tmp_path / "out").exists()  # no output dir, no partial method / predictions / result files


@pytest.mark.parametrize(
    ("setting", "expected"),
    [("preset=nope", "Unknown preset 'nope'"), ("data.sizes=3", "Unknown key(s) ['sizes'] in experiment.data")],
)
def test_installed_entry_point_prints_no_traceback(setting: str, expected: str, tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("hificl")
    proc = subprocess.run(
        [str(exe), "train", "--set", setting, "--set", f"output_dir={tmp_path / 'out'}"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 2
    assert expected in error_of(proc.stderr) and proc.stdout == ""
    assert not (tmp_path / "out").exists()


# --- adapters ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def adapter(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("adapter") / "run"
    assert main(["train", *small(tiny_world, out)]) == 0
    return out / "method"


def evaluate(world: Path, adapter_dir: Path, out: Path, model: Path | None = None) -> list[str]:
    argv = ["evaluate", *small(world, out), "--adapter", str(adapter_dir)]
    if model is not None:  # another model dir has no benchmark beside it: name the test world's
        argv += ["--set", f"model={model}", "--set", f"data.data_root={world / 'synthetic'}"]
    return argv


def test_adapter_of_another_base_model_is_refused(
    adapter: Path, tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = save(lambda: tiny(seed=1), tmp_path / "other-model")  # same architecture, other weights
    message = run_cli(evaluate(tiny_world, adapter, tmp_path / "out", model=other), capsys)
    assert message.startswith(f"{adapter} was trained on another base model ({tiny_world / 'model'}): ")
    assert "weights_digest: saved '" in message and "architecture" not in message
    assert not (tmp_path / "out").exists()


def test_truncated_adapter_is_refused(
    adapter: Path, tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "truncated"
    shutil.copytree(adapter, broken)
    weights = broken / "method.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    message = run_cli(evaluate(tiny_world, broken, tmp_path / "out"), capsys)
    assert message.startswith(f"{weights} cannot be read as safetensors (truncated or corrupt)")
    assert not (tmp_path / "out").exists()


class _Marker:
    """Unpickling this creates a file: the proof that a loader unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (str(self.path), "w"))


def test_pickle_posing_as_safetensors_is_refused_unopened(
    adapter: Path, tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evil, marker = tmp_path / "pickled", tmp_path / "UNPICKLED"
    shutil.copytree(adapter, evil)
    payload = pickle.dumps({"k_a": _Marker(marker)})
    pickle.loads(payload)["k_a"].close()  # the payload works: loading it really creates the marker
    assert marker.exists()
    marker.unlink()
    (evil / "method.safetensors").write_bytes(payload)
    torch.save({"k_a": _Marker(marker)}, evil / "method.bin")  # a torch pickle beside it is ignored too
    message = run_cli(evaluate(tiny_world, evil, tmp_path / "out"), capsys)
    assert message.startswith(f"{evil / 'method.safetensors'} cannot be read as safetensors")
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


# --- determinism ---------------------------------------------------------------------------------------------
def test_same_seed_repeats_a_teacher_based_run_exactly(tiny_world: Path, tmp_path: Path) -> None:
    def mimic(seed: int, out: str) -> ResultRow:
        values = {
            "model": str(tiny_world / "model"),
            "preset": "mimic",
            "seed": seed,
            "progress": False,
            "output_dir": str(tmp_path / out),
            "method": {"teacher_shots": 2},
            "data": {"train_size": 8, "eval_size": 4, "batch_size": 4, "eval_batch_size": 4},
            "train": {"epochs": 2},
        }
        return run_experiment(experiment_config(values))

    rows = [mimic(0, "a"), mimic(0, "b"), mimic(1, "c")]
    params = [load_file(str(tmp_path / d / "method" / "method.safetensors")) for d in "abc"]
    assert rows[0].train_steps == 4 and set(params[0]) == {"shift", "f_weight", "f_bias"}
    assert rows[0].metrics == rows[1].metrics
    predictions = [json.loads((tmp_path / d / "predictions.json").read_text()) for d in "ab"]
    assert predictions[0] == predictions[1]
    for name in params[0]:
        assert torch.equal(params[0][name], params[1][name]), name
        assert not torch.equal(params[0][name], params[2][name]), name  # the comparison can tell seeds apart
    assert params[0]["f_bias"].abs().max() > 0  # f_bias starts at 0: training moved it


@pytest.mark.parametrize("command", ["ablate", "tune"])
@pytest.mark.parametrize("amount", ["-1", "0", "nan", "inf", "two"])
def test_cpus_per_run_must_be_a_positive_number(
    command: str, amount: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ray refuses a negative resource with a traceback deep inside the runner; the CLI names it first."""
    with pytest.raises(SystemExit) as exited:
        main([command, "--launcher", "ray", "--cpus-per-run", amount, "--results", str(tmp_path / "r")])
    assert exited.value.code == 2
    assert f"--cpus-per-run: must be a number > 0, got '{amount}'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("command", ["ablate", "tune"])
def test_a_missing_benchmark_stops_a_matrix_or_study_before_any_run(
    command: str, tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked once for the whole batch: without it every run failed alone, after its own process and load."""
    model = lone_model(tiny_world, tmp_path)
    if command == "ablate":
        spec = {"tasks": ["syn-vqa"], "seeds": [0], "groups": {"main": {"variants": {"zs": {"preset": "zero-shot"}}}}}
        (tmp_path / "m.yaml").write_text(yaml.safe_dump(spec))
        argv = ["ablate", "--config", str(tmp_path / "m.yaml"), "--results", str(tmp_path / "results")]
        argv += ["--base-model", str(model)]
    else:
        study = {
            "study": {"name": "s", "storage": f"sqlite:///{tmp_path / 'results' / 's.db'}", "n_trials": 2},
            "search": {"n_tokens": [1], "rank": [1]},
            "experiment": {"model": str(model), "preset": "hificl", "data": {"task": "syn-vqa"}},
        }
        (tmp_path / "t.yaml").write_text(yaml.safe_dump(study))
        argv = ["tune", "--config", str(tmp_path / "t.yaml")]
    message = run_cli(argv, capsys)
    assert f"The synthetic benchmark of base model {model} is missing" in message
    assert not (tmp_path / "results").exists()
