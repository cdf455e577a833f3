"""Smoke test of the speed benchmarks at CI size (benchmarks/bench_generate.py, bench_train.py,
bench_reid_train.py, table6_estimate.py): each runs on the CPU and prints the JSON its docs/performance.md rows
come from; the Table 6 estimate adds its parts as the sweep of reidaug/experiment.py does."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def run_script(name: str, args: list[str], capsys, monkeypatch) -> list[dict]:
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [name, *args])
    assert module.main() == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def outputs():
    return {}


def test_bench_generate(capsys, monkeypatch, outputs):
    rows = run_script("bench_generate", ["--ci", "--methods", "patn", "--e2e", "4"], capsys, monkeypatch)
    patn, run = rows
    assert patn["method"] == "patn" and patn["best_batch"] == 4 and patn["generator_parameters"] == 841283
    assert 1.2 < patn["gflop_per_image"] < 1.6  # demo PATN (ngf 16, 3 blocks) at 128x64
    assert patn["img_per_s"] > 0 and patn["plain_img_per_s"] > 0 and patn["fraction_of_peak"] > 0
    assert patn["end_to_end"]["images"] == 4 and patn["end_to_end"]["fast_img_per_s"] > 0
    assert run["run"] == "bench_generate" and run["matmul_peak_tflops"] > 0
    outputs["generate"] = rows


def test_bench_train(capsys, monkeypatch, outputs):
    tiny = ["--set", "model.ngf=8", "--set", "model.n_blocks=1", "--set", "train.num_workers=0"]
    (patn, run) = run_script("bench_train", ["--ci", "--methods", "patn", *tiny], capsys, monkeypatch)
    assert patn["method"] == "patn" and patn["batch_size"] == 2 and patn["schedule_iterations"] == 250
    assert patn["schedule_batch_size"] == 8 and patn["train_it_per_s"] > 0 and patn["peak_memory_mb"] > 0
    assert patn["schedule_hours"] == pytest.approx(250 * 8 / patn["train_img_per_s"] / 3600, abs=0.01)
    assert 0 <= patn["data_wait_share"] < 1 and patn["loader_iterations"] == 1
    outputs["train"] = [patn, run]


def test_bench_reid_train(capsys, monkeypatch, outputs):
    (row, run) = run_script("bench_reid_train", ["--ci", "--recipes", "reid/resnet50-softmax", "--threads", "1"],
                            capsys, monkeypatch)  # fmt: skip
    assert row["recipe"] == "reid/resnet50-softmax" and row["epochs"] == 50 and row["batch_size"] == 8
    assert row["train_img_per_s"] > 0 and row["eval_seconds"] > 0 and row["images_per_epoch"] == 64
    assert row["minutes_per_training"] == pytest.approx(50 * 12936 / row["train_img_per_s"] / 60, rel=0.01)
    assert 0 <= row["loader_data_wait_share"] < 1
    outputs["reid"] = [row, run]


def test_table6_estimate_adds_the_sweep(tmp_path, capsys, monkeypatch, outputs):
    if set(outputs) != {"generate", "train", "reid"}:
        pytest.skip("needs the three benchmark outputs of this module")
    files = {}
    for k, rows in outputs.items():
        files[k] = tmp_path / f"{k}.jsonl"
        files[k].write_text("".join(json.dumps(r) + "\n" for r in rows))
    (est,) = run_script("table6_estimate", ["--train", str(files["train"]), "--generate", str(files["generate"]),
                                            "--reid", str(files["reid"])], capsys, monkeypatch)  # fmt: skip
    assert est["cells"] == 3 * 19 and est["generated_images"] == round(3 * 4.5 * 12936)
    parts = ("generator_training_h", "generation_h", "reid_training_h", "evaluation_h")
    assert est["total_h"] == pytest.approx(sum(est[k] for k in parts), abs=0.02)


def test_table6_estimate_by_hand():
    spec = importlib.util.spec_from_file_location("table6_estimate", BENCH / "table6_estimate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    train = {"schedule_iterations": 3600, "schedule_batch_size": 32, "train_img_per_s": 32.0}  # 1 h
    gen = {"img_per_s": 1000.0, "end_to_end": {"fast_img_per_s": 100.0}}
    reid = {"train_img_per_s": 100.0, "epochs": 1, "eval_seconds": 36.0}
    est = module.estimate(train, gen, reid, seeds=1, portions=(0.5, 1.0), n=3600)
    assert est["generator_training_h"] == 1.0
    assert est["generation_h"] == 0.005  # 1800 images at 100/s
    assert est["reid_training_h"] == 0.025  # (1800 + 3600 + 3600) images at 100/s
    assert est["evaluation_h"] == 0.03 and est["cells"] == 3
