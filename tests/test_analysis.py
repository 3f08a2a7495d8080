"""Tables and figures from a hand-made results store whose means, stds, deltas and counts are known."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from analysis.chair_report import hallucination_counts, top_hallucinated
from analysis.figures import FIGURES, write_figures
from analysis.render import to_csv, to_markdown
from analysis.report import build_report
from analysis.store import load_results, results_frame
from analysis.tables import all_tables, format_params, write_tables
from hificl.errors import DataError
from hificl.results import CellRow, Environment, ResultRow, ResultsStore, Timings

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SEEDS = (0, 1, 2)


def cell(
    group: str, variant: str, task: str, preset: str, seed: int, metrics: dict[str, float], **extra: Any
) -> CellRow:
    """A stored cell with known numbers; `extra` sets fields of its ResultRow (config merges into the default)."""
    trained = preset not in ("zero-shot", "icl")
    config = {"method": {}, "data": {"train_size": 1000}, "seed": seed, **extra.pop("config", {})}
    row = ResultRow(
        task=task,
        preset=preset,
        method=preset,
        seed=seed,
        metrics=metrics,
        num_trainable=2228224 if trained else 0,
        train_size=extra.pop("train_size", 1000 if trained else 0),
        eval_size=200,
        train_steps=160,
        timings=Timings(train_s=10.0 + seed, step_s=0.05, eval_s=3.0, eval_ms_per_sample=15.0),
        train_ids_digest="t",
        eval_ids_digest="e",
        config=config,
        model_fingerprint={"architecture": "test"},
        environment=Environment({"hificl": "test"}, threads=1, device="cpu"),
        **extra,
    )
    return CellRow(f"{group}-{variant}-{task}-{preset}-{seed}", f"run-{variant}-{task}-{seed}", group, variant, row)


def vqa(acc: float) -> dict[str, float]:
    return {"accuracy": acc}


def caption(cider: float, chair_s: float = 0.1, chair_i: float = 0.05, recall: float = 0.9) -> dict[str, float]:
    return {"cider": cider, "chair_s": chair_s, "chair_i": chair_i, "recall": recall}


MAIN_VQA = {"zero-shot": [0.40], "icl": [0.60, 0.62, 0.64], "lora": [0.66, 0.68, 0.70], "hificl": [0.70, 0.72, 0.74]}
MAIN_CIDER = {"zero-shot": [0.50], "icl": [0.90, 0.92, 0.94], "lora": [0.80, 0.80, 0.80], "hificl": [0.85, 0.86, 0.87]}
HIFICL_CHAIR_S = [0.08, 0.10, 0.12]  # the lowest CHAIRs: 10.0 ± 2.0
HALLUCINATED = [{"circle": 3, "square": 1}, {"square": 5, "star": 1}, {"circle": 2}]  # square 6, circle 5, star 1
ABLATION_VQA = {"hificl+teacher": [0.73, 0.73, 0.73], "hificl-alpha1": [0.65, 0.66, 0.67], "hificl-full-k": [0.72] * 3}
MIMIC_VQA = {"mimic": [0.50, 0.52, 0.54], "mimic-vector": [0.40, 0.43], "lora-lm": [0.60, 0.61, 0.62]}


def full_rows() -> list[CellRow]:
    rows = []
    for preset, accs in MAIN_VQA.items():
        rows += [cell("main", preset, "syn-vqa", preset, s, vqa(a)) for s, a in zip(SEEDS, accs, strict=False)]
    for preset, ciders in MAIN_CIDER.items():
        for s, c in zip(SEEDS, ciders, strict=False):
            chair_s = HIFICL_CHAIR_S[s] if preset == "hificl" else 0.2
            objects = HALLUCINATED[s] if preset == "hificl" else {"triangle": 1}
            rows.append(
                cell("main", preset, "syn-caption", preset, s, caption(c, chair_s), hallucinated_objects=objects)
            )
    for variant, accs in ABLATION_VQA.items():
        rows += [cell("ablation", variant, "syn-vqa", variant, s, vqa(a)) for s, a in zip(SEEDS, accs, strict=True)]
    for variant, accs in MIMIC_VQA.items():
        rows += [cell("mimic", variant, "syn-vqa", variant, s, vqa(a)) for s, a in zip(SEEDS, accs, strict=False)]
    for r, acc in ((2, 0.60), (4, 0.70), (8, 0.72), (16, 0.71)):
        rows += [
            cell("rank", f"r={r}", "syn-vqa", "hificl", s, vqa(acc), config={"method": {"rank": r}}) for s in (0, 1)
        ]
    for n, acc in ((4, 0.68), (16, 0.73)):
        rows += [
            cell("tokens", f"n={n}", "syn-vqa", "hificl", s, vqa(acc), config={"method": {"n_tokens": n}})
            for s in (0, 1)
        ]
    for preset in ("hificl", "lora"):
        for size, acc in ((100, 0.50), (300, 0.60), (1000, 0.70)):
            bonus = 0.05 if preset == "hificl" else 0.0
            rows += [
                cell("data", f"size={size}", "syn-vqa", preset, s, vqa(acc + bonus + 0.01 * s), train_size=size)
                for s in (0, 1)
            ]
    return rows


def write_store(root: Path, rows: list[CellRow], bench: dict | None = None) -> Path:
    store = ResultsStore(root / "results")
    for row in rows:
        store.put_cell(row)
    store.cells.mkdir(parents=True, exist_ok=True)
    (store.cells / ".partial.json").write_text("{not json")  # a runner mid-write: ignored
    (store.cells / "abc.json.tmp").write_text("{not json")
    if bench is not None:
        (root / "results" / "bench.json").write_text(json.dumps(bench))
    return root / "results"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return write_store(tmp_path, full_rows())


def markdown_rows(text: str) -> dict[str, list[str]]:
    """Row label -> cells of a Markdown table."""
    rows = [line.strip("|").split(" | ") for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


def test_load_and_flatten(store: Path) -> None:
    rows = load_results(store)
    assert len(rows) == len(full_rows())
    frame = results_frame(rows)
    ranks = frame[frame["group"] == "rank"]["rank"]
    assert sorted(ranks.unique()) == [2.0, 4.0, 8.0, 16.0]  # from config.method
    assert sorted(frame[frame["group"] == "tokens"]["n_tokens"].unique()) == [4.0, 16.0]
    assert frame.loc[frame["group"] == "main", "n_tokens"].isna().all()  # no such setting: NaN, never a guess
    assert sorted(frame[frame["group"] == "data"]["train_size"].unique()) == [100.0, 300.0, 1000.0]
    assert frame.loc[frame["preset"] == "hificl", "num_trainable"].iloc[0] == 2228224
    bare = CellRow.standalone(cell("x", "x", "syn-vqa", "icl", 0, vqa(0.5)).result)
    assert results_frame([bare])[["group", "variant", "accuracy"]].values.tolist() == [["main", "icl", 0.5]]


@pytest.mark.parametrize("content", ['{"task": "syn-vqa"', "{}", "", '{"schema": 0}', "[1, 2]"])
def test_unreadable_cell_is_moved_aside_with_a_warning(
    store: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    broken = store / "cells" / "broken.json"
    broken.write_text(content)
    assert len(load_results(store)) == len(full_rows())  # the good cells are all read
    assert not broken.exists() and (store / "invalid" / "cells" / "broken.json").read_text() == content
    assert "broken.json" in caplog.text and "re-run" in caplog.text


def test_a_cell_with_a_wrong_field_type_is_not_trusted(store: Path) -> None:
    path = next((store / "cells").glob("main-hificl-syn-vqa-*.json"))
    data = json.loads(path.read_text())
    data["result"]["metrics"] = {"accuracy": "high"}
    path.write_text(json.dumps(data))
    assert len(load_results(store)) == len(full_rows()) - 1


def test_a_missing_store_names_its_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere"):
        load_results(tmp_path / "nowhere")


def test_main_table_mean_std_bold_and_params(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "tables"
    write_tables(store, out)
    md = markdown_rows((out / "main.md").read_text())
    assert md["Method"] == ["syn-vqa (Acc)", "syn-caption (CIDEr)", "#params"]
    assert md["HiFICL"] == ["**72.0 ± 2.0**", "86.0 ± 1.0", "2.23M"]
    assert md["8-shot ICL"] == ["62.0 ± 2.0", "**92.0 ± 2.0**", "0"]
    assert md["LoRA"] == ["68.0 ± 2.0", "80.0 ± 0.0", "2.23M"]
    assert md["Zero-shot"] == ["40.0", "50.0", "0"]  # one seed: no std
    assert list(md)[1:] == ["Zero-shot", "8-shot ICL", "LoRA", "HiFICL"]  # the paper's order
    tex = (out / "main.tex").read_text()
    assert r"\textbf{72.0 $\pm$ 2.0}" in tex and r"\textbf{92.0 $\pm$ 2.0}" in tex
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\#params" in tex
    assert tex.count(r"\textbf") == 2
    csv = pd.read_csv(out / "main.csv").set_index("Method")
    assert csv.loc["HiFICL", "syn-vqa (Acc) mean"] == pytest.approx(72.0)
    assert csv.loc["HiFICL", "syn-vqa (Acc) std"] == pytest.approx(2.0)
    assert csv.loc["HiFICL", "syn-vqa (Acc) n"] == 3


def test_ablation_deltas(store: Path) -> None:
    table = all_tables(load_results(store))["ablation"]
    assert table is not None
    md = markdown_rows(to_markdown(table))
    assert md["HiFICL (full)"] == ["72.0 ± 2.0", "–"]
    # Δ is paired by seed: teacher - full = +3, +1, -1 points; alpha1 - full = -5, -6, -7; full-k = +2, 0, -2
    assert md["+ teacher alignment"] == ["**73.0 ± 0.0**", "+1.0 ± 2.0"]
    assert md["w/o SA scaling (α = 1)"] == ["66.0 ± 1.0", "-6.0 ± 1.0"]
    assert md["full-rank K"] == ["72.0 ± 0.0", "+0.0 ± 2.0"]
    csv = pd.read_csv(io.StringIO(to_csv(table))).set_index("Variant")
    assert csv.loc["w/o SA scaling (α = 1)", "Δ syn-vqa mean"] == pytest.approx(-6.0)
    assert csv.loc["w/o SA scaling (α = 1)", "Δ syn-vqa std"] == pytest.approx(1.0)
    assert csv.loc["w/o SA scaling (α = 1)", "Δ syn-vqa n"] == 3


def test_mimic_variants_table(store: Path) -> None:
    """The "mimic" group gets its own table; a variant with fewer seeds is paired on the seeds it ran."""
    table = all_tables(load_results(store))["mimic_variants"]
    assert table is not None
    md = markdown_rows(to_markdown(table))
    assert list(md)[1:] == ["MimIC", "MimIC (learnable vector)", "LoRA (LM only)"]  # the reference first
    assert md["MimIC"] == ["52.0 ± 2.0", "–"]
    assert md["MimIC (learnable vector)"] == ["41.5 ± 2.1", "-9.5 ± 0.7"]  # seeds 0, 1: -10, -9
    assert md["LoRA (LM only)"] == ["**61.0 ± 1.0**", "+9.0 ± 1.0"]


def test_sweeps_data_and_chair(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "tables"
    write_tables(store, out)
    rank = markdown_rows((out / "rank_sweep.md").read_text())
    assert list(rank)[1:] == ["r = 2", "r = 4", "r = 8", "r = 16"]
    assert rank["r = 8"] == ["**72.0 ± 0.0**"]
    tokens = markdown_rows((out / "tokens_sweep.md").read_text())
    assert tokens["n = 16"] == ["**73.0 ± 0.0**"]
    data = markdown_rows((out / "data_efficiency.md").read_text())
    assert data["Method"] == ["syn-vqa (Acc) @ 100", "syn-vqa (Acc) @ 300", "syn-vqa (Acc) @ 1000"]
    assert data["HiFICL"][0] == "**55.5 ± 0.7**"  # 0.55, 0.56
    assert data["LoRA"][2] == "70.5 ± 0.7"
    chair = markdown_rows((out / "chair.md").read_text())
    assert chair["HiFICL"] == ["**10.0 ± 2.0**", "**5.0 ± 0.0**", "**90.0 ± 0.0**"]  # all tie on CHAIRi / recall
    assert chair["LoRA"][0] == "20.0 ± 0.0"


def test_hallucinated_objects_order(store: Path, tmp_path: Path) -> None:
    counts = hallucination_counts(load_results(store))
    assert top_hallucinated(counts[("syn-caption", "hificl")]) == [("square", 6), ("circle", 5), ("star", 1)]
    assert top_hallucinated(counts[("syn-caption", "hificl")], k=2) == [("square", 6), ("circle", 5)]
    write_tables(store, tmp_path)
    md = markdown_rows((tmp_path / "hallucinated_objects.md").read_text())
    assert md["HiFICL"] == ["square (6), circle (5), star (1)"]
    assert md["Zero-shot"] == ["triangle (1)"]


def test_format_params() -> None:
    assert [format_params(n) for n in (0, 950, 12345, 2228224, 7.3e9)] == ["0", "950", "12.3K", "2.23M", "7.30B"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Rendering every figure is the slow part: done once for the tests below."""
    return build_report(write_store(tmp_path_factory.mktemp("report"), full_rows()))


def test_every_figure_is_written(report: dict[str, Any]) -> None:
    paths = report["figures"]
    assert sorted(p.name for p in paths) == sorted(f"{n}.{e}" for n in FIGURES for e in ("png", "pdf"))
    for path in paths:
        data = path.read_bytes()
        assert len(data) > 1000
        assert data.startswith(PNG_MAGIC if path.suffix == ".png" else b"%PDF")


def test_missing_data_is_skipped(tmp_path: Path) -> None:
    rows = [cell("main", p, "syn-vqa", p, s, vqa(a)) for p, accs in MAIN_VQA.items() for s, a in enumerate(accs)]
    bench = {"inference": {"zero_shot_ms": 10.0, "hificl_ms": 11.0, "icl_ms": 40.0, "note": "text is ignored"}}
    store = write_store(tmp_path, rows, bench)
    figures = {p.name for p in write_figures(store, tmp_path / "figures")}
    assert figures == {f"{n}.{e}" for n in ("training_cost", "inference_latency") for e in ("png", "pdf")}
    assert {p.name for p in write_tables(store, tmp_path / "tables")} == {"main.csv", "main.md", "main.tex"}


def test_build_report_index(report: dict[str, Any]) -> None:
    store = report["index"].parent.parent
    assert report["index"] == store / "report" / "index.md"
    assert len(report["tables"]) == 8 * 3 and len(report["figures"]) == len(FIGURES) * 2
    assert report["skipped"] == []
    index = report["index"].read_text()
    assert "[md](tables/main.md)" in index and "[pdf](figures/chair.pdf)" in index
    empty = build_report(write_store(store.parent / "empty", []))
    assert empty["tables"] == [] and empty["figures"] == []
    assert "figure chair" in empty["skipped"] and "table main" in empty["skipped"]


def test_benchmark_figure_is_a_png_of_the_requested_images(tmp_path: Path) -> None:
    from PIL import Image

    from hificl.data.synthetic_figure import plot_benchmark

    path = plot_benchmark(tmp_path / "b.png", n=3)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = Image.open(path).size
    assert width > height  # one row of three panels


def test_tables_and_figures_share_one_mean_and_std() -> None:
    from analysis.figures import mean_std
    from analysis.render import Stat

    three = pd.Series([0.70, 0.72, 0.74, None])
    assert mean_std(three, 100.0) == pytest.approx((72.0, 2.0))
    assert Stat.of([0.70, 0.72, 0.74], 100.0) == Stat(*mean_std(three, 100.0), 3)
    mean, std = mean_std(pd.Series([0.4]), 100.0)
    assert mean == pytest.approx(40.0) and math.isnan(std)  # one seed: no spread measured, no error bar
    assert math.isnan(Stat.of([0.4], 100.0).std)
