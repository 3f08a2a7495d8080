"""Two gloo processes each see half the data; every metric's compute() equals the single-process value."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from hificl.metrics import CHAIR, CIDEr, VQAAccuracy

PREDS = ["2", "yes", "no", "red / white"]
ANSWERS = [["2"] * 2 + ["3"] * 8, ["yes"] * 10, ["yes"] * 9 + ["no"], ["red/white"] * 5 + ["red"] * 5]
CAPS = ["A man with two dogs.", "A cat on a bed.", "A bus near a stop sign.", "Three pizzas."]
OBJECTS = [{"person"}, {"cat", "couch"}, {"bus"}, {"pizza"}]
REFS = [["a man walks two dogs"], ["a cat sleeping on a couch"], ["a bus on a street"], ["pizzas on a table"]]


def _all(rank: int | None) -> dict[str, float]:
    part = slice(None) if rank is None else slice(2 * rank, 2 * rank + 2)
    vqa, chair = VQAAccuracy(), CHAIR()
    vqa.update(PREDS[part], ANSWERS[part])
    chair.update(CAPS[part], OBJECTS[part])
    out = {"vqa": vqa.compute().item(), **{k: v.item() for k, v in chair.compute().items()}}
    out["hallucinated"] = chair.most_hallucinated()
    if shutil.which("java"):
        # The corpus is what must sync (strings travel as uint8 tensors); scoring it is pycocoevalcap's job.
        cider = CIDEr()
        cider.update(CAPS[part], REFS[part])
        with cider.sync_context():
            out["cider_corpus"] = list(cider.gathered())
    return out


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        Path(out_dir, f"{rank}.json").write_text(json.dumps(_all(rank)))
    finally:
        dist.destroy_process_group()


def test_two_rank_sync_equals_single_process(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    expected = json.loads(json.dumps(_all(None)))
    for rank in range(2):
        got = json.loads(Path(tmp_path, f"{rank}.json").read_text())
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            assert got[key] == (value if isinstance(value, list) else pytest.approx(value)), key
