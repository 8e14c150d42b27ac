"""The benchmark runs end to end on tiny arrays; its numbers are not checked, only their shape."""

import json

import numpy as np
import pytest

from xentlib import bench

TINY = dict(classes=[5, 64], elements=1 << 10, repeat=2)


@pytest.fixture(scope="module")
def results():
    return bench.run(**TINY, use_torch=False)


def test_one_row_per_class_count_and_method(results):
    methods = {r["method"] for r in results}
    assert {"xentlib fused", "xentlib fused in-place", "xentlib loss", "naive gather", "naive one-hot",
            "scipy logsumexp", "numpy stable", "numpy stable + grad", "exp floor"} <= methods
    assert len(results) == len(TINY["classes"]) * len(methods)
    assert {(r["classes"], r["rows"]) for r in results} == {(5, 204), (64, 16)}


def test_ratios_are_to_the_numpy_baseline_without_torch(results):
    for r in results:
        assert len(r["times"]) == TINY["repeat"]
        if r["kind"] == "floor":
            assert r["baseline"] is None and r["floor_ratio"] == 1.0
            continue
        plain = {"loss": "numpy stable", "loss+grad": "numpy stable + grad"}
        of_an_option = {"loss": "xentlib loss", "loss+grad": "xentlib fused in-place"}
        assert r["baseline"] == (plain if r["option"] is None else of_an_option)[r["kind"]]
        if r["method"] == r["baseline"]:
            assert r["ratio"] == 1.0


def test_memory_of_the_in_place_gradient_is_below_a_fresh_one():
    # 1 MiB of logits in rows of 1024 classes, so that the per-item arrays hardly count.
    rows = bench.run(classes=[1024], elements=1 << 18, repeat=1, use_torch=False,
                     methods=["xentlib fused", "xentlib fused in-place"])
    memory = {r["method"]: r["memory"] for r in rows}
    assert memory["xentlib fused in-place"] < 0.2 and 1.0 <= memory["xentlib fused"] < 1.2


def test_a_subset_keeps_the_baselines_in_turn():
    rows = bench.run(classes=[8], elements=64, repeat=1, methods=["xentlib in-place, probabilities"],
                     use_torch=False)
    assert {r["method"] for r in rows} == {"xentlib in-place, probabilities", "xentlib fused in-place",
                                             "numpy stable + grad", "exp floor"}


def test_an_unknown_method_is_named():
    with pytest.raises(ValueError, match=r"run: methods = \['xentlib los'\] are not benchmarked"):
        bench.run(classes=[8], elements=64, repeat=1, methods=["xentlib los"], use_torch=False)


def test_options_table_has_a_line_per_class_count_and_option(results):
    lines = bench.table_options(results).splitlines()
    assert len(lines) == 1 + len(TINY["classes"]) * len(bench.OPTIONS)
    assert lines[1].split()[:2] == ["5", "probabilities"]
    assert lines[0].split()[-1] == "memory"  # no torch, no columns for it


def test_main_writes_json_and_figure(tmp_path, capsys):
    bench.main(["--quick", "--classes", "4,16", "--elements", "256", "--repeat", "1", "--no-torch",
                "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["settings"]["classes"] == [4, 16]
    assert len(saved["results"]) == 2 * (9 + 2 * len(bench.OPTIONS))
    assert (tmp_path / "bench.png").stat().st_size > 0
    out = capsys.readouterr()
    assert "xentlib fused in-place" in out.out and "label smoothing" in out.out
    assert "wrote" in out.err


def test_plot_labels_its_axes(results):
    figure = bench.plot(results)
    ax = figure.axes[0]
    assert "whole-array NumPy" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["C = 5", "C = 64"]


def test_large_vocab_chunked_memory_stays_flat_and_sharded_agrees():
    # 8 MiB and 32 MiB of logits: several chunks, so the chunked step holds only a few.
    results = bench.run_large_vocab(vocabularies=[2048, 8192], rows=1024, width=16, repeat=1,
                                    shards=3)
    assert [r["vocabulary"] for r in results] == [2048, 8192]
    for r in results:
        assert r["memory"]["dense"] >= r["logits_bytes"]
        assert r["loss_difference"] < 1e-5 and r["sharded_difference"] < 1e-5
    chunked = [r["memory"]["chunked"] for r in results]
    assert max(chunked) < 1.5 * min(chunked) and results[-1]["memory_ratio"] < 0.5


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_array_the_benchmark_builds_has_the_dtype_asked_for(dtype):
    # NumPy 2 promotes float32_array / np.sqrt(k) to float64: the large-vocabulary
    # classifier was float64, and with it the logits, while the benchmark said float32.
    rng = np.random.default_rng(0)
    logits = bench._logits(rng, 8, 5, dtype)
    built = {"logits": logits}
    for option, (target, kwargs) in bench._option_arguments(logits, np.arange(8) % 5, rng).items():
        for name, value in [("target", target), *kwargs.items()]:
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                built[f"{option}: {name}"] = value
    hidden, classifier, labels = bench._large_vocab_arrays(rng, 4, 16, 8, dtype)
    built |= {"hidden": hidden, "classifier": classifier}
    assert len(built) == 5  # logits, probability targets, class weights, hidden, classifier
    assert {name: str(a.dtype) for name, a in built.items()} == dict.fromkeys(built, dtype)
    assert labels.dtype.kind == "i"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_large_vocab_computes_and_reports_in_the_dtype_asked_for(dtype):
    [r] = bench.run_large_vocab(vocabularies=[64], rows=8, width=4, repeat=1, dtype=dtype)
    assert r["dtype"] == dtype
    assert r["logits_bytes"] == 8 * 64 * np.dtype(dtype).itemsize


def test_torch_times_the_options_it_has():
    pytest.importorskip("torch", reason="torch is the optional peer of the benchmark")
    rows = bench.run(classes=[16], elements=256, repeat=1)
    options = {r["option"] for r in rows if r["method"].startswith("torch") and r["option"]}
    assert options == set(bench.OPTIONS) - {"z-loss"}
    for r in rows:
        if r["method"].startswith("torch") and r["option"]:
            assert r["baseline"] == ("torch" if r["kind"] == "loss" else "torch + backward")
