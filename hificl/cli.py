"""One command line: base-model, train, evaluate, compare, ablate, tune, figures, bench, check.

Every command reads typed YAML configs (experiments/) with `--set key.sub=value` overrides. Bad input ends in
one sentence on stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hificl.config import expand_path
from hificl.errors import ConfigError, HificlError

Command = Callable[[argparse.Namespace], int]


def _experiment(args: argparse.Namespace, **forced: Any) -> Any:
    from hificl.config import apply_overrides, deep_merge, read_yaml
    from hificl.experiment import experiment_config

    values = read_yaml(args.config) if args.config else {}
    if getattr(args, "overwrite", False):
        forced = {**forced, "overwrite": True}
    values = apply_overrides(deep_merge(values, forced), args.set)
    return experiment_config(values)


def _positive(text: str) -> float:
    """argparse type of a resource amount: a number > 0 (argparse turns the error into one line and exit 2)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def _at_least(option: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(f"{option} must be >= {low}, got {value}.")


def cmd_base_model(args: argparse.Namespace) -> int:
    from hificl.data.synthetic import export_benchmark
    from hificl.experiment import synthetic_root
    from hificl.tiny import DEFAULT_SEED, build_base_model

    out = build_base_model(Path(args.out), seed=DEFAULT_SEED if args.seed is None else args.seed)
    export_benchmark(synthetic_root(out), seed=args.benchmark_seed)
    print(f"base model: {out}\nbenchmark:  {synthetic_root(out)}")
    return 0


def _print_rows(rows: list[Any]) -> None:
    from hificl.results import CellRow, results_frame

    frame = results_frame([CellRow.standalone(row) for row in rows])
    print(frame.to_string(index=False))


def cmd_train(args: argparse.Namespace) -> int:
    from hificl.experiment import run_experiment

    row = run_experiment(_experiment(args))
    if row.environment.global_rank == 0:
        train_time_s = row.timings.train_s
        print(json.dumps({"task": row.task, "preset": row.preset, "seed": row.seed, "metrics": row.metrics,
                          "num_trainable": row.num_trainable, "train_time_s": train_time_s}))  # fmt: skip
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from hificl.experiment import run_experiment

    forced = {"adapter": args.adapter} if args.adapter else {}
    row = run_experiment(_experiment(args, **forced))
    if row.environment.global_rank == 0:
        eval_ms_per_sample = row.timings.eval_ms_per_sample
        print(json.dumps({"task": row.task, "preset": row.preset, "seed": row.seed, "metrics": row.metrics,
                          "eval_ms_per_sample": eval_ms_per_sample}))  # fmt: skip
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Train and evaluate several presets on one task, then print one table."""
    from hificl.experiment import run_experiment

    configs = [_experiment(args, preset=p) for p in args.presets]  # every preset's config is checked first
    for config in configs:  # one output directory per preset, not one that each run would overwrite
        config.output_dir = str(Path(config.output_dir) / config.preset) if config.output_dir else None
    rows = [run_experiment(config) for config in configs]
    _print_rows(rows)
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from analysis.report import build_report
    from hificl.ablation import run_matrix
    from hificl.launch import make_runner

    _at_least("--workers", args.workers, 1)
    results = Path(args.results) / ("quick" if args.quick else "")
    runner = make_runner(args.launcher, args.workers, args.address)
    stored_before = set((results / "cells").glob("*.json"))
    try:
        run_matrix(
            args.config,
            args.results,
            quick=args.quick,
            model=args.base_model,
            runner=runner,
            cpus_per_run=args.cpus_per_run,
        )
    except Exception:
        # Some runs failed after others were stored by this call: the report of what finished is still written
        # (its index names what it holds), then the first error is raised; a re-run runs only the missing cells.
        if set((results / "cells").glob("*.json")) - stored_before:
            _print_report(build_report(results), results, partial=True)
        raise
    _print_report(build_report(results), results)
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    from analysis.report import build_report

    if args.rescore:
        from hificl.rescore import rescore_store

        counts = rescore_store(args.results)
        print(
            f"rescored {counts['rescored']} of {counts['runs']} run(s) from their kept generations; "
            f"{counts['changed']} changed"
        )
    _print_report(build_report(Path(args.results)), Path(args.results))
    return 0


def _print_report(report: dict[str, Any], results: Path, partial: bool = False) -> None:
    tables, figures = len(report.get("tables", [])), len(report.get("figures", []))
    note = ", from the cells that finished: some runs failed (below)" if partial else ""
    print(f"report: {results / 'report'} ({tables} tables, {figures} figures{note})")


def cmd_tune(args: argparse.Namespace) -> int:
    from hificl.launch import make_runner
    from hificl.tuning import tune

    sets = [*args.set, *([f"experiment.model={args.base_model}"] if args.base_model else [])]
    runner = make_runner(args.launcher, args.workers, args.address)
    best = tune(
        args.config,
        sets,
        workers=args.workers,
        storage=args.storage,
        n_trials=args.n_trials,
        runner=runner,
        cpus_per_run=args.cpus_per_run,
    )
    print(json.dumps(best, indent=2, default=str))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from hificl.bench import bench_model, run_bench, summary

    _at_least("--repeats", args.repeats, 1)
    _at_least("--prompt-len", args.prompt_len, 1)
    _at_least("--threads", args.threads, 1)

    device = torch.device(args.device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    config = args.model_config or ("embedded" if device.type == "cpu" else "large")
    model = bench_model(config, args.base_model, device, dtype)
    results = run_bench(
        model, out=args.out, prompt_len=args.prompt_len, repeats=args.repeats, paper_scale=not args.no_paper_scale
    )
    print(summary(results))
    print(f"written: {args.out}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Dry run: what the package finds in a model directory and a data root, without training."""
    report: dict[str, Any] = {}
    if args.model:
        from hificl.models.loading import describe_model

        report["model"] = describe_model(args.model)
    if args.data:
        from hificl.data.official import describe_data

        report["data"] = describe_data(args.data)
    print(json.dumps(report, indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hificl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Command, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.set_defaults(fn=fn)
        return p

    def with_config(p: argparse.ArgumentParser, outputs: bool = True) -> None:
        p.add_argument("--config", type=expand_path, help="YAML experiment config (experiments/)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.lr=1e-3")
        if outputs:
            p.add_argument(
                "--overwrite", action="store_true", help="replace the package's own files in an existing output_dir"
            )

    def add_launcher(p: argparse.ArgumentParser) -> None:
        p.add_argument("--launcher", choices=["local", "ray"], default="local", help="where runs execute")
        p.add_argument("--address", help="Ray cluster: auto, HOST:PORT or ray://HOST:10001 (default: RAY_ADDRESS)")
        p.add_argument("--cpus-per-run", type=_positive, default=1.0, help="CPUs (and torch threads) each run reserves")

    p = add("base-model", cmd_base_model, "pretrain the embedded tiny LMM and export its benchmark (cached)")
    p.add_argument("--out", default="base-model", type=expand_path)
    p.add_argument("--seed", type=int, default=None, help="pretraining seed (default: hificl.tiny.DEFAULT_SEED)")
    p.add_argument("--benchmark-seed", type=int, default=0, help="seed of the exported synthetic benchmark")

    with_config(add("train", cmd_train, "train a method and evaluate it"))
    p = add("evaluate", cmd_evaluate, "evaluate zero-shot, k-shot ICL or a saved method")
    with_config(p)
    p.add_argument("--adapter", type=expand_path, help="directory of a saved method (method.safetensors + method.json)")
    p = add("compare", cmd_compare, "train and evaluate several presets on one task; print a table")
    with_config(p)
    p.add_argument("--presets", nargs="+", default=["zero-shot", "icl", "lora", "live", "mimic", "hificl"])

    p = add("ablate", cmd_ablate, "run the ablation matrix (resumable), then write tables and figures")
    p.add_argument("--config", default="experiments/ablations.yaml", type=expand_path)
    p.add_argument("--results", default="results", type=expand_path)
    p.add_argument(
        "--base-model", default=None, type=expand_path, help="model directory for every cell (default: the matrix's)"
    )
    p.add_argument("--quick", action="store_true", help="the QUICK variant: one seed, smaller evaluation")
    p.add_argument("--workers", type=int, default=1, help="cells run in parallel processes (--launcher local)")
    add_launcher(p)
    p = add("figures", cmd_figures, "rebuild tables and figures from the results store, without running anything")
    p.add_argument("--results", default="results", type=expand_path)
    p.add_argument("--rescore", action="store_true", help="first score every run's kept generations again")
    p = add("tune", cmd_tune, "Optuna search over HiFICL's n and r (persistent, multi-worker)")
    with_config(p, outputs=False)
    p.set_defaults(config="experiments/tune.yaml")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--storage", help="Optuna storage URL (default sqlite under results/tune) or journal:PATH")
    p.add_argument("--n-trials", type=int, default=None)
    p.add_argument("--base-model", default=None, type=expand_path, help="model directory every trial trains on")
    add_launcher(p)

    p = add("bench", cmd_bench, "side-by-side timings and memory ratios (benchmarks, not tests)")
    p.add_argument("--base-model", default="base-model", type=expand_path)
    p.add_argument(
        "--model-config",
        choices=["embedded", "tiny", "medium", "large"],
        default=None,
        help="embedded: the pretrained tiny LMM; tiny: its architecture, random weights; medium/large: random "
        "LLaVA (default: embedded on CPU, large on CUDA)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="CPU intra-op threads; 1 measures thread CPU time")
    p.add_argument("--no-paper-scale", action="store_true", help="skip the Mistral-7B-wide layer line")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--prompt-len", type=int, default=256)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default="results/bench.json", type=expand_path)

    p = add("check", cmd_check, "report what a model directory and a data root contain, without training")
    p.add_argument("--model", type=expand_path)
    p.add_argument("--data", type=expand_path)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except HificlError as err:
        message = " ".join(str(err).split())  # one line, whatever a library put in the message
        print(f"hificl: error: {message}", file=sys.stderr)
        return 2
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as err:
        print(f"hificl: error: {err.filename}: {err.strerror}.", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
