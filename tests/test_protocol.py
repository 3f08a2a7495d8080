"""The papers' schedule and evaluation protocol as the configs resolve them (docs/presets.md, docs/protocol.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hificl.config import read_yaml
from hificl.data.prompts import DECODINGS, MAX_NEW_TOKENS
from hificl.errors import ConfigError
from hificl.experiment import experiment_config
from hificl.lightning.module import TrainConfig

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def test_live_trains_ten_epochs_at_1000_samples_the_others_five() -> None:
    epochs = {p: experiment_config({"preset": p}).train.epochs_for(1000) for p in ("hificl", "mimic", "lora", "live")}
    assert epochs == {"hificl": 5, "mimic": 5, "lora": 5, "live": 10}
    assert {p: experiment_config({"preset": p}).train.epochs_for(500) for p in ("hificl", "live")} == {
        "hificl": 10,
        "live": 10,
    }
    assert experiment_config({"preset": "live", "train": {"epochs": 3}}).train.epochs_for(1000) == 3


def test_decoding_is_the_papers_beam_search_by_default_and_greedy_by_name() -> None:
    assert DECODINGS == {"beam3": {"num_beams": 3, "length_penalty": 0.0}, "greedy": {"num_beams": 1}}
    assert MAX_NEW_TOKENS == {"vqa": 10, "caption": 20}
    assert TrainConfig().decoding == "beam3" and TrainConfig().max_new_tokens is None
    with pytest.raises(ConfigError, match=r"train\.decoding must be one of \['beam3', 'greedy'\]; got 'beam5'"):
        experiment_config({"train": {"decoding": "beam5"}})


def test_paper_configs_use_the_papers_protocol_and_the_embedded_ones_say_greedy() -> None:
    single = experiment_config(read_yaml(EXPERIMENTS / "idefics2-vqav2.yaml"))
    assert single.train.decoding == "beam3" and single.train.accumulate == 2 and single.data.batch_size == 2
    paper = read_yaml(EXPERIMENTS / "paper-idefics2.yaml")["defaults"]
    assert paper["train"]["decoding"] == "beam3" and paper["data"]["train_size"] == 1000
    for name in ("ablations.yaml",):
        assert read_yaml(EXPERIMENTS / name)["defaults"]["train"]["decoding"] == "greedy"
    assert read_yaml(EXPERIMENTS / "tune.yaml")["experiment"]["train"]["decoding"] == "greedy"
