"""The benchmark runs end to end on tiny arrays; its numbers are not checked, only their shape."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from xentlib import bench
from xentlib.bench import _large_vocab, _methods, _timing

TINY = dict(classes=[5, 64], elements=1 << 10, repeat=2)


@pytest.fixture(scope="module")
def results():
    return bench.run(**TINY, use_torch=False)


def test_one_row_per_class_count_and_method(results):
    methods = {r["method"] for r in results}
    assert {"xentlib fused", "xentlib fused in-place", "xentlib loss", "naive gather",
            "naive one-hot", "scipy logsumexp", "numpy stable", "numpy stable + grad",
            "exp floor"} <= methods
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
    rows = bench.run(classes=[8], elements=64, repeat=1,
                     methods=["xentlib in-place, probabilities"], use_torch=False)
    assert {r["method"] for r in rows} == {"xentlib in-place, probabilities",
                                           "xentlib fused in-place", "numpy stable + grad",
                                           "exp floor"}


def test_an_unknown_method_is_named():
    with pytest.raises(ValueError, match=r"run: methods = \['xentlib los'\] are not benchmarked"):
        bench.run(classes=[8], elements=64, repeat=1, methods=["xentlib los"], use_torch=False)


def test_options_table_has_a_line_per_class_count_and_option(results):
    lines = bench.table_options(results).splitlines()
    assert len(lines) == 1 + len(TINY["classes"]) * len(bench.OPTIONS)
    assert lines[1].split()[:2] == ["5", "probabilities"]
    assert lines[0].split()[-1] == "memory"  # no torch, no columns for it


def test_main_writes_json_and_figure(tmp_path, capsys):
    bench.main(["--quick", "--classes", "4,16", "--elements", "256", "--repeat", "1",
                "--no-torch", "--out", str(tmp_path)])
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
    for r in results:  # the cluster's time, accounted for by Dask's task stream
        parts = r["sharded_breakdown"]
        assert parts["tasks"] > 3 and parts["compute"] > 0 and parts["wall"] > 0
        assert parts["before_first_task"] >= parts["build"] > 0
    table = bench.table_large_vocab(results)
    assert "cluster" in table and "before_first_task" in table
    for r in results:  # the loss alone, chunked and dense, timed in the same rounds
        assert r["loss_time_ratio"] == r["seconds"]["chunked loss"] / r["seconds"]["dense loss"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_array_the_benchmark_builds_has_the_dtype_asked_for(dtype):
    # NumPy 2 promotes float32_array / np.sqrt(k) to float64: the large-vocabulary
    # classifier was float64, and with it the logits, while the benchmark said float32.
    rng = np.random.default_rng(0)
    logits = _methods._logits(rng, 8, 5, dtype)
    built = {"logits": logits}
    options = _methods._option_arguments(logits, np.arange(8) % 5, rng)
    for option, (target, kwargs) in options.items():
        for name, value in [("target", target), *kwargs.items()]:
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                built[f"{option}: {name}"] = value
    hidden, classifier, labels = _large_vocab._large_vocab_arrays(rng, 4, 16, 8, dtype)
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


SWEEP = dict(classes=[10, 1000], max_elements=10**4, repeat=2, min_seconds=0.0005,
             use_torch=False)


@pytest.fixture(scope="module")
def sweep():
    return bench.run_sweep(**SWEEP)


def test_sweep_covers_powers_of_ten_from_the_class_count(sweep):
    sizes = {c: sorted({(r["rows"], r["elements"]) for r in sweep if r["classes"] == c})
             for c in SWEEP["classes"]}
    assert sizes == {10: [(10, 100), (100, 1000), (1000, 10**4)], 1000: [(1, 1000), (10, 10**4)]}
    # a size below the class count rounds up to one row; a row of 32768 is the first size
    rows = bench.run_sweep(classes=[32768], max_elements=10**5, repeat=1, min_seconds=0,
                           use_torch=False)
    assert {(r["rows"], r["elements"]) for r in rows} == {(3, 3 * 32768)}


def test_sweep_rows_have_the_schema_and_consistent_times(sweep):
    methods = {"xentlib loss", "xentlib fused", "numpy stable", "numpy stable + grad"}
    assert {r["method"] for r in sweep} == methods  # no torch asked for
    assert len(sweep) == 5 * len(methods)
    for r in sweep:
        assert set(r) == {"classes", "rows", "elements", "dtype", "method", "kind", "seconds",
                          "ns_per_logit", "calls", "times"}
        assert r["dtype"] == "float32" and r["elements"] == r["rows"] * r["classes"]
        assert r["kind"] == ("loss" if r["method"] in ("xentlib loss", "numpy stable")
                             else "loss+grad")
        assert len(r["times"]) == SWEEP["repeat"] and r["calls"] >= 1
        assert r["seconds"] == pytest.approx(np.median(r["times"]), rel=1e-12)
        assert r["ns_per_logit"] == pytest.approx(1e9 * r["seconds"] / r["elements"])


class _Clock:
    """A perf_counter that moves only when the timed method is called: timing without time."""

    def __init__(self, seconds_per_call):
        self.now, self.step = 0.0, seconds_per_call

    def __call__(self):
        return self.now

    def call(self):
        self.now += self.step


@pytest.mark.parametrize(("seconds_per_call", "calls"), [(1e-5, 50), (3e-4, 2), (1e-3, 1)])
def test_fast_calls_are_repeated_until_a_sample_lasts_min_seconds(monkeypatch, seconds_per_call,
                                                                  calls):
    clock = _Clock(seconds_per_call)
    monkeypatch.setattr(_timing.time, "perf_counter", clock)
    method = _methods._Method("loss", clock.call)
    assert _timing._calls_per_sample(method, min_seconds=5e-4) == calls
    assert _timing._sample(method, calls) == pytest.approx(seconds_per_call)


def test_a_slow_first_call_is_timed_alone(monkeypatch):
    # A call of a tenth of a second needs no company, and is not repeated to find out.
    clock = _Clock(0.2)
    monkeypatch.setattr(_timing.time, "perf_counter", clock)
    assert _timing._calls_per_sample(_methods._Method("loss", clock.call), 5e-3) == 1
    assert clock.now == pytest.approx(0.2)


def test_sweep_table_has_a_line_per_size_and_ratios_to_numpy(sweep):
    lines = bench.table_sweep(sweep).splitlines()
    assert len(lines) == 2 + 5
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[:3] == ["C", "N", "N·C"]
    assert header[-2:] == ["loss / NumPy", "fused / NumPy"]
    first = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert first[:3] == ["10", "10", "1e2"]


def test_sweep_figure_has_a_panel_per_class_count_and_a_line_per_method(sweep):
    figure = bench.plot_sweep(sweep)
    assert [ax.get_title() for ax in figure.axes] == ["C = 10", "C = 1000"]
    for ax in figure.axes:
        assert ax.get_xscale() == ax.get_yscale() == "log"
        assert "N · C" in ax.get_xlabel()
        assert len(ax.get_lines()) == 4
    assert "ns" in figure.axes[0].get_ylabel()
    plt = pytest.importorskip("matplotlib.pyplot")
    plt.close(figure)


def test_sweep_with_torch_times_its_loss_and_backward():
    pytest.importorskip("torch", reason="torch is the optional peer of the benchmark")
    rows = bench.run_sweep(classes=[10], max_elements=100, repeat=1, min_seconds=0)
    assert {r["method"] for r in rows} >= {"torch", "torch + backward"}
    assert bench.table_sweep(rows).splitlines()[0].endswith("| loss / torch | fused / torch |")


def _main_sweep(tmp_path, capsys, *extra):
    bench.main(["--sweep", "--quick", "--classes", "10", "--elements", "1000", "--repeat", "2",
                "--no-torch", "--out", str(tmp_path), *extra])
    return capsys.readouterr()


def test_main_sweep_writes_json_and_figure(tmp_path, capsys):
    out = _main_sweep(tmp_path, capsys)
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert set(saved) == {"environment", "settings", "results"}
    assert saved["settings"]["max_elements"] == 1000 and saved["settings"]["classes"] == [10]
    assert saved["settings"]["dtype"] == "float32"
    assert {(r["rows"], r["elements"]) for r in saved["results"]} == {(10, 100), (100, 1000)}
    assert (tmp_path / "sweep.png").stat().st_size > 0
    assert out.out.startswith("| C | N | N·C |")


def test_progress_bar_reaches_its_total_and_wrote_has_its_own_line(tmp_path, capsys):
    # The bar used to stop at (repeat + 1) / (repeat + 2) of its total, and "wrote ..."
    # then ended the bar's line.
    err = _main_sweep(tmp_path, capsys).err
    counts = re.findall(r"(\d+)/(\d+)", err)
    assert counts and counts[-1][0] == counts[-1][1]
    assert "100%" in err
    assert re.search(r"\nwrote \S+sweep\.json and \S+sweep\.png\n$", err)


def test_progress_counts_every_step_of_each_benchmark(monkeypatch):
    totals = []
    real = _timing._Progress.__exit__

    def check(self, *exc):
        totals.append((self.done, self.total))
        return real(self, *exc)

    monkeypatch.setattr(_timing._Progress, "__exit__", check)
    bench.run(classes=[8], elements=64, repeat=3, use_torch=False)
    bench.run_sweep(classes=[10], max_elements=1000, repeat=3, min_seconds=0, use_torch=False)
    bench.run_large_vocab(vocabularies=[64], rows=8, width=4, repeat=3)
    assert len(totals) == 3 and all(done == total > 0 for done, total in totals)


def test_without_matplotlib_the_figure_is_skipped_before_measuring(tmp_path, capsys,
                                                                   monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    err = _main_sweep(tmp_path, capsys).err
    assert (tmp_path / "sweep.json").exists() and not (tmp_path / "sweep.png").exists()
    note = err.index("matplotlib is not installed: the figure is skipped")
    assert note < err.index("%|")  # said before the first step was timed
    assert re.search(r"\nwrote \S+sweep\.json\n$", err)


def test_the_measuring_functions_need_neither_tqdm_nor_matplotlib(tmp_path):
    code = ("import sys\n"
            "sys.modules['tqdm'] = sys.modules['matplotlib'] = None\n"
            "from xentlib import bench\n"
            "bench.run(classes=[8], elements=64, repeat=1, use_torch=False)\n"
            "bench.run_sweep(classes=[10], max_elements=100, repeat=1, use_torch=False)\n"
            "bench.main(['--sweep', '--classes', '10', '--elements', '100', '--repeat', '1',\n"
            "            '--no-torch', '--out', sys.argv[1]])\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "tqdm is not installed: no progress bar" in done.stderr


def test_python_m_runs_the_command_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "xentlib.bench", "--help"], capture_output=True,
                          text=True, check=True)
    assert "--sweep" in done.stdout and "xentlib[bench]" in done.stdout
