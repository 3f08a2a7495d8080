"""Hostile input through the CLI, class by class: every case ends in exit code 2 with one sentence naming the
file / field / value, fails before the first training step, and leaves nothing behind (no output directory, no
stage). Plus: output directories are written as one unit and never lose a file the package did not write."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from hificl.cli import main
from hificl.lightning.module import ICLApproxModule
from tests.test_bad_inputs import data_copy, edit_json, run_cli, small

Case = Callable[[Path, Path], tuple[list[str], list[str]]]


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any training step is a test failure: the cases below must be refused before the first one."""

    def trained(*args: object, **kwargs: object) -> None:
        raise AssertionError("a training step ran before the bad input was refused")

    monkeypatch.setattr(ICLApproxModule, "training_step", trained)


def leftovers(tmp: Path) -> list[str]:
    """The output directory or any stage / trash beside it."""
    return sorted(p.name for p in tmp.iterdir() if p.name == "out" or p.name.startswith(".out."))


def train(*settings: str) -> Case:
    def case(world: Path, tmp: Path) -> tuple[list[str], list[str]]:
        return ["train", *small(world, tmp / "out"), *[a for s in settings for a in ("--set", s)]], []

    return case


def expect(case: Case, *parts: str) -> Case:
    def wrapped(world: Path, tmp: Path) -> tuple[list[str], list[str]]:
        argv, _ = case(world, tmp)
        return argv, [p.format(tmp=tmp, world=world) for p in parts]

    return wrapped


def with_config(text: bytes) -> Case:
    def case(world: Path, tmp: Path) -> tuple[list[str], list[str]]:
        path = tmp / "exp.yaml"
        path.write_bytes(text)
        return ["train", "--config", str(path), *small(world, tmp / "out")], []

    return case


def model_variant(edit: Callable[[Path], None]) -> Case:
    def case(world: Path, tmp: Path) -> tuple[list[str], list[str]]:
        model = tmp / "model"
        shutil.copytree(world / "model", model)
        edit(model)
        argv = ["train", *small(world, tmp / "out"), "--set", f"model={model}"]
        return [*argv, "--set", f"data.data_root={world / 'synthetic'}"], []

    return case


def text_config(**changes: object) -> Callable[[Path], None]:
    def edit(model: Path) -> None:
        def change(config: dict) -> None:
            config["text_config"].update(changes)
            config["text_config"].pop("layer_types", None)

        edit_json(model / "config.json", change)

    return edit


def truncate(model: Path) -> None:
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])


def pickle_only(model: Path) -> None:
    (model / "model.safetensors").unlink()
    torch.save({"weight": torch.zeros(2)}, model / "pytorch_model.bin")


def corrupt_eval_image(world: Path, tmp: Path) -> tuple[list[str], list[str]]:
    root = data_copy(world, tmp)
    for image in (root / "coco" / "val2014").iterdir():  # whichever the evaluation subset draws
        image.write_bytes(b"not an image at all")
    argv = ["train", *small(world, tmp / "out"), "--set", f"data.data_root={root}"]
    return argv, [f"image file {root / 'coco' / 'val2014'}/", "is not an image PIL can read"]


def output_under_a_file(world: Path, tmp: Path) -> tuple[list[str], list[str]]:
    (tmp / "file").write_text("a file, not a directory")
    argv, _ = train()(world, tmp)
    return [*argv, "--set", f"output_dir={tmp / 'file' / 'out'}"], [f"output_dir {tmp / 'file' / 'out'}"]


def output_is_a_file(world: Path, tmp: Path) -> tuple[list[str], list[str]]:
    (tmp / "afile").write_text("not a directory")
    argv, _ = train()(world, tmp)
    return [*argv, "--set", f"output_dir={tmp / 'afile'}"], [f"output_dir {tmp / 'afile'} exists and is not a dir"]


CASES: dict[str, Case] = {
    # config files and overrides
    "--set value not YAML": expect(train("train.lr=[1,"), "The value of override 'train.lr=[1,' is not valid YAML"),
    "--set without a key": expect(train("=3"), "Override '=3' names no key"),
    "duplicate key in YAML": expect(
        with_config(b"train:\n  lr: 0.1\n  lr: 0.2\n"), "{tmp}/exp.yaml: key 'lr' appears twice", "line 3"
    ),
    "config not UTF-8": expect(with_config(b"train:\n  lr: \xff\xfe\n"), "{tmp}/exp.yaml is not UTF-8 text"),
    "config is a list": expect(with_config(b"- 1\n- 2\n"), "{tmp}/exp.yaml must hold a mapping", "not list"),
    "section is a string": expect(with_config(b"method: fast\n"), "experiment.method must be dict, got 'fast'"),
    # ranges, one place, before any model is loaded
    "negative lr": expect(train("train.lr=-0.001"), "experiment.train.lr must be a finite number > 0, got -0.001"),
    "epochs = 0": expect(train("train.epochs=0"), "experiment.train.epochs must be >= 1, got 0"),
    "epochs < 0": expect(train("train.epochs=-2"), "experiment.train.epochs must be >= 1, got -2"),
    "batch size 0": expect(train("data.batch_size=0"), "experiment.data.batch_size must be >= 1, got 0"),
    "eval batch size 0": expect(train("data.eval_batch_size=0"), "experiment.data.eval_batch_size must be >= 1"),
    "accumulate 0": expect(train("train.accumulate=0"), "experiment.train.accumulate must be >= 1, got 0"),
    "decoding": expect(train("train.decoding=beam7"), "train.decoding must be one of", "got 'beam7'"),
    "val size 0": expect(train("data.val_size=0"), "experiment.data.val_size must be >= 1, got 0"),
    "workers < 0": expect(train("data.num_workers=-1"), "experiment.data.num_workers must be >= 0, got -1"),
    "devices 0": expect(train("train.devices=0"), "experiment.train.devices must be >= 1, -1 (all) or 'auto', got 0"),
    "warm-up ratio 1.5": expect(train("train.warmup_ratio=1.5"), "experiment.train.warmup_ratio must be in [0, 1)"),
    "precision": expect(train("train.precision=fp17"), "experiment.train.precision must be one of", "got 'fp17'"),
    "negative seed": expect(train("seed=-1"), "experiment.seed must be in 0..4294967295, got -1"),
    "lr nan": expect(train("train.lr=.nan"), "experiment.train.lr must be a finite number > 0, got nan"),
    # the method's config is typed when the experiment config is read
    "mistyped method key": expect(train("method.rnak=4"), "Unknown hificl setting(s) ['rnak']"),
    "method value wrong type": expect(train("method.rank=two"), "experiment.method.rank must be int, got 'two'"),
    "rank 0": expect(train("method.rank=0"), "experiment.method.rank must be >= 1, got 0"),
    "LoRA dropout 1": expect(train("preset=lora", "method.dropout=1.0"), "LoRA dropout must be in [0, 1)"),
    "method keys on zero-shot": expect(
        train("preset=zero-shot", "method.rank=4"), "preset 'zero-shot' trains no method"
    ),
    # base models: corrupt, truncated, mismatched, pickled, custom code
    "truncated weights": expect(model_variant(truncate), "{tmp}/model/model.safetensors is truncated"),
    "garbage weights": expect(
        model_variant(lambda m: (m / "model.safetensors").write_bytes(b"\0" * 40)),
        "{tmp}/model/model.safetensors is not a safetensors file",
    ),
    "config with more layers than the weights": expect(
        model_variant(text_config(num_hidden_layers=3)), "The weights in {tmp}/model lack 12 tensor(s)"
    ),
    "config with fewer layers than the weights": expect(
        model_variant(text_config(num_hidden_layers=1)), "The weights in {tmp}/model hold 7 tensor(s)"
    ),
    "config with another MLP width": expect(
        model_variant(text_config(intermediate_size=128)), "{tmp}/model/config.json needs", "shapes [32, 128]"
    ),
    "pickle-only weights": expect(model_variant(pickle_only), "holds weights only as pytorch_model.bin"),
    "config.json not UTF-8": expect(
        model_variant(lambda m: (m / "config.json").write_bytes(b'{"model_type": "llava\xff"}')),
        "{tmp}/model/config.json is not a readable UTF-8 JSON file",
    ),
    "config.json without model_type": expect(
        model_variant(lambda m: (m / "config.json").write_text("[1, 2]")), "{tmp}/model/config.json is not a model"
    ),
    "auto_map": expect(
        model_variant(lambda m: edit_json(m / "config.json", lambda c: c.update(auto_map={"AutoConfig": "x.Y"}))),
        "{tmp}/model/config.json has an auto_map",
    ),
    "auto_map in the processor": expect(
        model_variant(lambda m: edit_json(m / "processor_config.json", lambda c: c.update(auto_map={"A": "x.Y"}))),
        "{tmp}/model/processor_config.json has an auto_map",
    ),
    # late failures that must come early
    "unreadable evaluation image": corrupt_eval_image,
    "output dir under a file": output_under_a_file,
    "output dir is a file": output_is_a_file,
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_input_is_one_sentence_exit_2_before_training(
    case: str, tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_training: None
) -> None:
    argv, expected = CASES[case](tiny_world, tmp_path)
    message = run_cli(argv, capsys)
    for part in expected:
        assert part in message, (part, message)
    assert leftovers(tmp_path) == []
    if case.startswith("auto_map"):
        assert "[y/N]" not in capsys.readouterr().out


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_output_parent_fails_before_the_model_loads(
    tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_training: None
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    message = run_cli(["train", *small(tiny_world, locked / "out")], capsys)
    assert message == f"output_dir {locked / 'out'} cannot be created: {locked} is not a writable directory."
    assert list(locked.iterdir()) == []


def test_check_verifies_weight_headers_against_the_config(
    tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--model", str(tiny_world / "model")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"]["weights"] == {"files": ["model.safetensors"], "tensors": 53, "parameters": 62304}
    model = tmp_path / "model"
    shutil.copytree(tiny_world / "model", model)
    truncate(model)
    assert run_cli(["check", "--model", str(model)], capsys).startswith(f"{model}/model.safetensors is truncated")
    shutil.copytree(tiny_world / "model", model, dirs_exist_ok=True)
    text_config(num_hidden_layers=3)(model)
    assert "lack 12 tensor(s)" in run_cli(["check", "--model", str(model)], capsys)


# --- ablation matrices of the wrong structure, refused before any run --------------------------------------
MATRIX = {
    "defaults": {"data": {"train_size": 4, "eval_size": 2}, "train": {"epochs": 1}},
    "tasks": ["syn-vqa"],
    "seeds": [0],
    "groups": {"main": {"variants": {"zero-shot": {"preset": "zero-shot"}, "hificl": {"preset": "hificl"}}}},
}


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda m: m.update(tasks="syn-vqa"), "tasks must be a non-empty list of task names, got 'syn-vqa'"),
        (lambda m: m.update(seeds=[0, "one"]), "seeds must be a non-empty list of integers"),
        (lambda m: m.update(groups=["main"]), "groups must be a non-empty mapping of group names"),
        (lambda m: m["groups"]["main"].update(tasks="syn-vqa"), "groups.main.tasks must be a non-empty list"),
        (lambda m: m["groups"]["main"]["variants"].update(x="hificl"), "groups.main.variants.x must be a mapping"),
        (lambda m: m["groups"]["main"].update(varaints={}), "groups.main must be a mapping with 'variants'"),
        (
            lambda m: m["groups"]["main"]["variants"].update(bad={"preset": "hificl", "train": {"lr": -1}}),
            "Cell main/bad/syn-vqa/seed 0: experiment.train.lr must be a finite number > 0, got -1",
        ),
        (
            lambda m: m["groups"]["main"]["variants"].update(typo={"preset": "hificl", "method": {"rnak": 2}}),
            "Cell main/typo/syn-vqa/seed 0: Unknown hificl setting(s) ['rnak']",
        ),
    ],
)
def test_bad_matrix_is_refused_before_any_run(
    edit: Callable[[dict], None], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = json.loads(json.dumps(MATRIX))
    edit(spec)
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(spec))
    message = run_cli(["ablate", "--config", str(tmp_path / "m.yaml"), "--results", str(tmp_path / "r")], capsys)
    assert expected in message
    assert not (tmp_path / "r").exists()


# --- output directories ------------------------------------------------------------------------------------
def test_rerun_into_an_output_dir_refuses_then_overwrite_keeps_foreign_files(
    tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["train", *small(tiny_world, out)]) == 0
    first = json.loads((out / "result.json").read_text())
    (out / "notes.txt").write_text("mine")
    (out / "method" / "README").write_text("also mine")  # inside a directory the package owns
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    message = run_cli(["train", *small(tiny_world, out)], capsys)
    assert message.startswith(f"output_dir {out} already holds files (method, notes.txt, predictions.json")
    assert "--overwrite" in message
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    argv = ["train", *small(tiny_world, out), "--set", "seed=1", "--overwrite"]
    assert main(argv) == 0
    second = json.loads((out / "result.json").read_text())
    assert (second["seed"], first["seed"]) == (1, 0)
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["method", "notes.txt", "predictions.json", "result.json"]
    # the method directory is the package's, but the user's README there stays beside the new model card
    assert (out / "method" / "README").read_text() == "also mine"
    assert sorted(p.name for p in (out / "method").iterdir()) == [
        "README",
        "README.md",
        "experiment.yaml",
        "method.json",
        "method.safetensors",
    ]
    assert load_file(str(out / "method" / "method.safetensors"))  # the new adapter, written whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no stage, no trash


def test_stage_of_a_killed_run_is_cleaned_and_a_half_commit_finished(tiny_world: Path, tmp_path: Path) -> None:
    from hificl.outputs import OutputDir

    out = tmp_path / "out"
    # a run killed while training: its stage (owner pid gone) holds a partial adapter
    dead = tmp_path / ".out.hificl-stage-dead"
    (dead / "method").mkdir(parents=True)
    (dead / "method" / "method.safetensors").write_bytes(b"half")
    (dead / ".hificl-owner.json").write_text(json.dumps({"host": __import__("socket").gethostname(), "pid": 2**22}))
    # a run killed between the two renames of its commit: old outputs in the trash, new ones in the stage
    (tmp_path / "other").mkdir()
    half = tmp_path / ".other.hificl-stage-x"
    (half / "method").mkdir(parents=True)
    (half / "result.json").write_text('{"new": 1}')
    (half / "notes.txt").write_text("user file carried over")
    trash = tmp_path / ".other.hificl-trash-x"
    (tmp_path / "other").rename(trash)
    (trash / "result.json").write_text('{"old": 1}')

    OutputDir.prepare(out).discard()
    OutputDir.prepare(tmp_path / "other", overwrite=True).discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other"]
    assert json.loads((tmp_path / "other" / "result.json").read_text()) == {"new": 1}
    assert (tmp_path / "other" / "notes.txt").read_text() == "user file carried over"


def test_tilde_means_home_in_every_path_option(
    tiny_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir(), cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    shutil.copytree(tiny_world / "synthetic", home / "data")
    argv = ["train", *small(tiny_world, Path("~/out")), "--set", "data.data_root=~/data"]
    assert main(argv) == 0
    assert (home / "out" / "result.json").is_file()
    row = json.loads((home / "out" / "result.json").read_text())
    assert row["config"]["output_dir"] == str(home / "out") and row["config"]["data"]["data_root"] == str(home / "data")
    assert list(cwd.iterdir()) == []  # no literal ./~ directory
    assert row["environment"]["threads"] == torch.get_num_threads() and row["environment"]["device"] == "cpu"


# --- adapters: wrong structure, wrong tensors, another base model ----------------------------------------
@pytest.fixture(scope="module")
def adapter(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("adapter") / "run"
    assert main(["train", *small(tiny_world, out)]) == 0
    return out / "method"


def _edit_weights(edit: Callable[[dict[str, torch.Tensor]], None]) -> Callable[[Path], None]:
    def change(directory: Path) -> None:
        tensors = load_file(str(directory / "method.safetensors"))
        edit(tensors)
        save_file(tensors, str(directory / "method.safetensors"))

    return change


ADAPTER_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "extra tensor": (
        _edit_weights(lambda t: t.update(extra=torch.zeros(3))),
        "method.safetensors holds tensors ['extra'] that method 'hificl' does not have",
    ),
    "wrong shape": (
        _edit_weights(lambda t: t.update(k_a=t["k_a"][..., :1].contiguous())),
        "method.safetensors: tensor 'k_a' has shape",
    ),
    "integer tensor": (
        _edit_weights(lambda t: t.update(k_a=t["k_a"].to(torch.int64))),
        "tensor 'k_a' is torch.int64, not a floating-point tensor",
    ),
    "method.json not UTF-8": (
        lambda d: (d / "method.json").write_bytes(b'{"method": "hificl\xff"}'),
        "method.json is not UTF-8 text",
    ),
    "method.json a list": (lambda d: (d / "method.json").write_text("[]"), "method.json must hold a JSON object"),
    "method.json without config": (
        lambda d: edit_json(d / "method.json", lambda m: m.pop("config")),
        "method.json needs 'config' as a JSON dict, got None",
    ),
    "method.json with a bad setting": (
        lambda d: edit_json(d / "method.json", lambda m: m["config"].update(rnak=3)),
        "method.json describes a method that cannot be built: Unknown hificl setting(s) ['rnak']",
    ),
}


@pytest.mark.parametrize("case", list(ADAPTER_CASES))
def test_bad_adapter_is_one_sentence(
    case: str, adapter: Path, tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "adapter"
    shutil.copytree(adapter, broken)
    edit, expected = ADAPTER_CASES[case]
    edit(broken)
    message = run_cli(["evaluate", *small(tiny_world, tmp_path / "out"), "--adapter", str(broken)], capsys)
    assert expected in message and str(broken) in message
    assert leftovers(tmp_path) == []


def test_adapter_refused_on_a_model_whose_attention_weights_changed(
    adapter: Path, tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "finetuned"
    shutil.copytree(tiny_world / "model", model)
    tensors = load_file(str(model / "model.safetensors"))
    changed = [name for name in tensors if "self_attn.v_proj.weight" in name and "language_model" in name]
    assert changed  # the embeddings, the vision tower and every other weight stay as they were
    for name in changed:
        tensors[name] = tensors[name] + 0.01 * torch.randn_like(tensors[name])
    save_file(tensors, str(model / "model.safetensors"), metadata={"format": "pt"})
    argv = ["evaluate", *small(tiny_world, tmp_path / "out"), "--adapter", str(adapter)]
    argv += ["--set", f"model={model}", "--set", f"data.data_root={tiny_world / 'synthetic'}"]
    message = run_cli(argv, capsys)
    assert message.startswith(f"{adapter} was trained on another base model") and "weights_digest" in message
    assert leftovers(tmp_path) == []
    # the unchanged copy is accepted (the digest is of the weights, not of the path)
    same = tmp_path / "same"
    shutil.copytree(tiny_world / "model", same)
    argv = ["evaluate", *small(tiny_world, tmp_path / "ok"), "--adapter", str(adapter), "--set", f"model={same}"]
    assert main([*argv, "--set", f"data.data_root={tiny_world / 'synthetic'}"]) == 0


# --- tune and ablate: refused before any trial or cell starts -----------------------------------------------
TUNE = str(Path(__file__).resolve().parents[1] / "experiments" / "tune.yaml")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--set", "study.name=../../evil"], "tune.study.name '../../evil' must be a plain file name"),
        (["--set", "experiment.train.lr=-1"], "experiment.train.lr must be a finite number > 0, got -1.0"),
        (["--set", "experiment.method.rnak=2"], "Unknown hificl setting(s) ['rnak']"),
        (["--set", "study.sampler.seed=-3"], "tune.study.sampler.seed must be a non-negative integer or null"),
        (["--base-model", "no-such-model"], "Model directory no-such-model does not exist"),
    ],
)
def test_bad_study_is_refused_before_anything_is_written(
    argv: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path}/db/study.db"
    message = run_cli(["tune", "--config", TUNE, "--storage", storage, *argv], capsys)
    assert expected in message
    assert list(tmp_path.iterdir()) == []  # no database, no results/tune/<name>, nothing outside it either
    assert not (tmp_path.parent / "evil").exists()


def test_ablate_checks_workers_and_models_before_any_cell(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(MATRIX))
    argv = ["ablate", "--config", str(tmp_path / "m.yaml"), "--results", str(tmp_path / "r")]
    assert run_cli([*argv, "--workers", "0"], capsys) == "--workers must be >= 1, got 0."
    message = run_cli([*argv, "--base-model", str(tmp_path / "nowhere")], capsys)
    assert message == f"Model path {tmp_path / 'nowhere'} does not exist."
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.yaml"]


def test_weights_digest_samples_the_whole_of_a_tensor_past_float32_indexing() -> None:
    from hificl.models.fingerprint import weights_digest

    model = torch.nn.Embedding(2**24 + 3, 1)  # numel past 2**24: a float linspace of indices would overshoot
    torch.nn.init.zeros_(model.weight)
    before = weights_digest(model)
    with torch.no_grad():
        model.weight[-1] = 1.0  # the last element is one of the samples
    assert weights_digest(model) != before
    with torch.no_grad():
        model.weight[-1], model.weight[1] = 0.0, 1.0  # an element between two samples is not: that is the cost
    assert weights_digest(model) == before
