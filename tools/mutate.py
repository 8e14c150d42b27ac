"""Plant one mistake at a time in a copy of xentlib and see whether the tests catch it.

Usage (from the repository root)::

    .venv/bin/python tools/mutate.py            # every mistake, then a summary
    .venv/bin/python tools/mutate.py --list     # the mistakes and whether each still applies
    .venv/bin/python tools/mutate.py -k sign    # only those whose description has "sign"

Each mistake is one line of the package changed: a sign flipped, a term dropped,
a condition swapped, a check removed. The runner copies ``xentlib/``, ``tests/``
and ``pyproject.toml`` into a temporary folder once, checks that Python imports
the copy there (the venv holds an editable install of the working tree, which
must not be the one tested), runs the unchanged suite once, then for each
mistake writes it into the copy, runs the suite and restores the file. The
working tree is never written to.

A mistake is *caught* when the suite fails, *missed* when it passes, and *stale*
when its original text is no longer found exactly once in the file (the code
moved on: update the list); stale mistakes do not count in the score.

The suite is ``tests/`` without the book's chapters, the site, the slow, the
GPU, the book-reading and the benchmark tests (the package's maths is what is
mutated), stopping at the first failure, on two workers.
"""

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ["xentlib", "tests", "pyproject.toml"]
# The chapters' checks (test_book reads book/, which is not copied), the site (which
# needs a built site) and the benchmark's timings (which fail on a loaded machine, and
# no mistake below is in the benchmark) do not test the maths.
IGNORED = ["tests/test_book.py", "tests/site", "tests/test_bench.py"]
# Replaces pyproject's addopts, which turn on nbval and the doctests of every path.
ADDOPTS = "-rfE --strict-markers --strict-config"
TIMEOUT_S = 600


@dataclasses.dataclass(frozen=True)
class Mistake:
    path: str  # relative to the repository root
    original: str  # must occur exactly once in the file
    replacement: str
    description: str


M = Mistake
MISTAKES = [
    # _lse.py: the log-sum-exp pieces every path shares.
    M("xentlib/_lse.py", "    return xp.where(xp.isfinite(m), m, 0)", "    return m",
      "finite_shift: an infinite max becomes the shift (masked rows turn NaN)"),
    M("xentlib/_lse.py", "rest = xp.where(m1 >= m2, r1 + (1 + r2) * factor,",
      "rest = xp.where(m1 >= m2, r1 + r2 * factor,",
      "merge_partials: the smaller part loses its exact 1"),
    M("xentlib/_lse.py", "s = xp.log1p(rest)", "s = xp.log(1 + rest)",
      "log1p_rest: log(1 + r) for log1p(r) (tiny losses round to 0)"),
    M("xentlib/_lse.py", "loss = loss + z_loss * lse**2", "loss = loss + z_loss * lse",
      "item_losses: z-loss not squared"),
    M("xentlib/_lse.py", "return (mass + 2 * z_loss * lse) / divisor",
      "return (mass + z_loss * lse) / divisor",
      "grad_coefficient: z-loss gradient without its factor 2"),
    M("xentlib/_lse.py", "        loss = xp.where(undefined, xp.nan, loss)", "        pass",
      "item_losses: dropped check, a +inf logit's loss is no longer NaN"),
    M("xentlib/_lse.py", "ties = (e.shape[1] - xp.count_nonzero(below, axis=-1)) - 1",
      "ties = e.shape[1] - xp.count_nonzero(below, axis=-1)",
      "split_ones: a row of ties keeps the max's own 1 in its rest"),
    M("xentlib/_lse.py", "    for j in range(1, z.shape[1]):",
      "    for j in range(1, z.shape[1] - 1):",
      "short_row_max: the last column left out"),
    # _targets.py: targets as distributions, reductions.
    M("xentlib/_targets.py", "self.spread = label_smoothing / num_classes",
      "self.spread = label_smoothing / (num_classes - 1)",
      "ClassIndices: smoothing spread over C - 1 classes"),
    M("xentlib/_targets.py", "self.hit = (1 - label_smoothing) * label_weight",
      "self.hit = label_weight", "ClassIndices: the label's mass ignores smoothing"),
    M("xentlib/_targets.py", "xp.sum(label_weight)", "label_weight.size",
      "ClassIndices: the weighted mean divides by the item count"),
    M("xentlib/_targets.py", "    if reduction != \"mean\":\n        return reduction\n",
      "    if reduction != \"mean\":\n        return 1\n",
      "reduction_divisor: a number reduction divides by 1"),
    M("xentlib/_targets.py", "at = block.starts + self.labels[block.items]",
      "at = block.starts + self.labels[block.items] - 1",
      "ClassIndices.gather: off-by-one label column"),
    M("xentlib/_targets.py", "            grad[~self.valid[items]] = 0",
      "            pass", "ClassIndices.subtract: ignored rows keep their gradient"),
    M("xentlib/_targets.py", "self.a = 1 - label_smoothing if weight is None",
      "self.a = 1 + label_smoothing if weight is None",
      "Probabilities: wrong sign of the smoothing's share"),
    M("xentlib/_targets.py", "    owned = (local >= 0) & (local < width)",
      "    owned = (local >= 0) & (local <= width)",
      "chunk_labels: off-by-one, a chunk owns the next chunk's first label"),
    M("xentlib/_targets.py", "    return xp.where(mass == 0, 0, mass * s0 - dot)",
      "    return xp.where(mass == 0, 0, mass * s0 + dot)",
      "cross_from_sums: wrong sign of the dot term"),
    M("xentlib/_targets.py", "else self.xp.where(self.valid[items], values, 0)",
      "else self.xp.where(self.valid, values, 0)",
      "ClassIndices.on_items: a block's items masked by the first block's"),
    M("xentlib/_targets.py", "self.uniform_mass = self.uniform_hit + label_smoothing",
      "self.uniform_mass = self.uniform_hit",
      "ClassIndices: the gradient's mass forgets the smoothing"),
    M("xentlib/_targets.py", "        if hit != 1:\n", "        if hit == 1:\n",
      "index_cross: the label's mass skipped when it is not 1"),
    # _pass.py: the fused dense pass.
    M("xentlib/_pass.py", "rest if top_is_one else (e_top - 1) + rest",
      "rest if top_is_one else e_top + rest",
      "Pass._keep_rest: the top's 1 stays in the rest"),
    M("xentlib/_pass.py", "unshifted = 0 <= low and high <= self.unshifted_max",
      "unshifted = high <= self.unshifted_max",
      "Pass._shift: float32 rows with a negative max go unshifted (underflow)"),
    M("xentlib/_pass.py", "- math.log(num_classes) - 1", "- 1",
      "Pass: the float32 unshifted bound forgets the C terms of the sum"),
    M("xentlib/_pass.py", "        total = e_top + rest\n", "        total = 1 + rest\n",
      "Pass._gradient: the total assumes a shifted row"),
    M("xentlib/_pass.py", "            e[undefined] = xp.nan", "            pass",
      "Pass._gradient: a +inf logit's row is left partly finite"),
    M("xentlib/_pass.py", "            regular = math.isfinite(top.sum())",
      "            regular = True",
      "Pass._shift: every small block taken as regular (masked rows not looked for)"),
    M("xentlib/_pass.py", "            total = xp.sum(xp.stack(self.kept))",
      "            total = self.kept[-1]",
      "Pass.reduced: the sum keeps only the last block's items"),
    M("xentlib/_pass.py", "work = e if self.grad is None else scratch.get(",
      "work = e if True else scratch.get(",
      "Pass._keep_rest: short rows lose their max's term before the gradient needs it"),
    M("xentlib/_pass.py", "_ITEM_BYTES = 64", "_ITEM_BYTES = 0",
      "Pass: the block budget counts only the logits (ten classes need twice the memory)"),
    # loss.py: the public dense functions.
    M("xentlib/loss.py", "        grad = xp.moveaxis(out, axis, -1)", "        grad = out",
      "_loss_and_grad: out= not moved to classes-last (wrong axis)"),
    M("xentlib/loss.py", "    return (indices[..., None] == classes).astype(",
      "    return (indices[..., None] != classes).astype(", "one_hot: swapped condition"),
    # linear.py: the chunked layer.
    M("xentlib/linear.py", "    rest = xp.full(items, -1, dtype=dtype)",
      "    rest = xp.full(items, 0, dtype=dtype)",
      "linear _forward: the running sum starts at 1, not 0"),
    M("xentlib/linear.py", "(seen * (t_old - t_new)", "(seen * (t_new - t_old)",
      "linear _forward: the spread term moves to the new shift with the wrong sign"),
    M("xentlib/linear.py", "    hit = xp.where(owned, target.hit[items] / divisor, 0)",
      "    hit = xp.where(owned, target.hit[items], 0)",
      "linear _subtract_target: the label's share not divided by the reduction"),
    M("xentlib/linear.py", "                grad_bias[lo:hi] = xp.sum(g, axis=0)",
      "                grad_bias[lo:hi] = xp.sum(g[1:], axis=0)",
      "linear _backward: the bias gradient skips the first item"),
    M("xentlib/linear.py", "for lo in range(0, classes, self.chunk))",
      "for lo in range(0, classes - 1, self.chunk))",
      "_Linear.chunks: off-by-one, the last class dropped at chunk size 1"),
    # sharded.py
    M("xentlib/sharded.py", "merged[:, _LABEL] = xp.sum(stats[:, :, _LABEL], axis=1)",
      "merged[:, _LABEL] = stats[:, 0, _LABEL]",
      "sharded: the label's logit read from the first shard only"),
    M("xentlib/sharded.py", "part[:, _REST] = (e_top - 1) + others",
      "part[:, _REST] = e_top + others",
      "sharded: a shard keeps its max's own 1 in its rest"),
    # softmax.py
    M("xentlib/softmax.py", "            lse = m + _log_sum_exp_shifted(shifted, xp)",
      "            lse = _log_sum_exp_shifted(shifted, xp)",
      "logsumexp: the shift not added back"),
    M("xentlib/softmax.py", "p = xp.where(xp.isfinite(total), e / xp.where(total == 0, 1, total),",
      "p = xp.where(True, e / xp.where(total == 0, 1, total),",
      "softmax: dropped check, a +inf logit's row is not all NaN"),
    # _checks.py: validation.
    M("xentlib/_checks.py", "    bad = (labels < 0) | (labels >= num_classes)",
      "    bad = (labels < 0) | (labels > num_classes)",
      "index_target: off-by-one, a label equal to C passes"),
    M("xentlib/_checks.py", ".max()) < num_classes:", ".max()) <= num_classes:",
      "index_target: off-by-one in the one-max check, a label equal to C passes"),
    M("xentlib/_checks.py", "    bad = ~((weight >= 0) & (weight < xp.inf))",
      "    bad = ~(weight < xp.inf)", "weight_vector: dropped check, negative weights pass"),
    M("xentlib/_checks.py", "if smoothing is None or not 0 <= smoothing <= 1:",
      "if smoothing is None or not 0 <= smoothing:",
      "options: dropped check, label_smoothing above 1 passes"),
    M("xentlib/_checks.py", "if xp.may_share_memory(out, logits) and not is_same_view(",
      "if False and not is_same_view(", "check_out: dropped check, out= overlapping the logits"),
    # _namespace.py
    M("xentlib/_namespace.py", "_OTHER_ARITHMETIC = (np.ma.MaskedArray, np.matrix)",
      "_OTHER_ARITHMETIC = (np.ma.MaskedArray,)",
      "_refuse_foreign: dropped check, np.matrix passes"),
    M("xentlib/_namespace.py", "            _refuse_foreign(func, name, x)\n",
      "            pass\n",
      "namespace_of: dropped check, foreign arrays (torch, dask) pass"),
]


def pytest_command(workers, ignored):
    command = [
        sys.executable, "-m", "pytest", "tests", "-x", "-q", "-p", "no:cacheprovider",
        "-o", f"addopts={ADDOPTS}", "-m", "not site and not slow and not gpu",
    ]
    command += [f"--ignore={path}" for path in IGNORED + ignored]
    if workers > 1:
        command += ["-n", str(workers)]
    return command


def environment(copy):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(copy)
    # A mutated file may keep its size and mtime second; a stale .pyc would hide the mistake.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("HYPOTHESIS_PROFILE", None)
    return env


def make_copy(target, package_rev=None):
    """The working tree's files into ``target``; ``xentlib/`` from a commit if one is given."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    for name in COPIED:
        source = ROOT / name
        if name == "xentlib" and package_rev:
            archive = subprocess.run(["git", "archive", package_rev, name], cwd=ROOT,
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
        elif source.is_dir():
            shutil.copytree(source, target / name, ignore=ignore)
        else:
            shutil.copy2(source, target / name)


def check_import(copy):
    """Fail unless ``import xentlib`` in the copy finds the copy, not the working tree."""
    probe = "import xentlib, sys; sys.stdout.write(xentlib.__file__)"
    found = subprocess.run([sys.executable, "-c", probe], cwd=copy, env=environment(copy),
                           capture_output=True, text=True, check=True).stdout
    expected = copy / "xentlib" / "__init__.py"
    if Path(found).resolve() != expected.resolve():
        sys.exit(f"mutate: the copy imports {found}, not {expected}; refusing to run")


def run_suite(copy, workers, ignored):
    """(passed, seconds, last line of output); a run past TIMEOUT_S counts as failed."""
    start = time.perf_counter()
    try:
        result = subprocess.run(pytest_command(workers, ignored), cwd=copy, env=environment(copy),
                                capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return False, time.perf_counter() - start, f"timed out after {TIMEOUT_S} s"
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    summary = (failed or lines or ["(no output)"])[0 if failed else -1]
    return result.returncode == 0, time.perf_counter() - start, summary


def applies(copy, mistake):
    return (copy / mistake.path).read_text().count(mistake.original) == 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the mistakes and stop")
    parser.add_argument("-k", default="", help="only mistakes whose description contains this")
    parser.add_argument("-n", "--workers", type=int, default=2, help="pytest-xdist workers")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the run of the unchanged suite")
    parser.add_argument("--package", metavar="REV",
                        help="take xentlib/ from this commit instead of the working tree")
    parser.add_argument("--ignore", action="append", default=[], metavar="PATH",
                        help="a further test file to leave out (repeatable)")
    args = parser.parse_args(argv)
    chosen = [m for m in MISTAKES if args.k in m.description]
    with tempfile.TemporaryDirectory(prefix="xentlib-mutate-") as folder:
        copy = Path(folder)
        make_copy(copy, args.package)
        if args.list:
            for i, m in enumerate(chosen, 1):
                state = "ok   " if applies(copy, m) else "stale"
                print(f"{i:3d} {state} {m.path}: {m.description}")
            return 0
        check_import(copy)
        began = time.perf_counter()
        if not args.no_baseline:
            passed, seconds, summary = run_suite(copy, args.workers, args.ignore)
            print(f"baseline: {'pass' if passed else 'FAIL'} in {seconds:.0f} s: {summary}",
                  flush=True)
            if not passed:
                sys.exit("mutate: the unchanged suite fails; fix that first")
        counts = {"caught": 0, "missed": 0, "stale": 0}
        for i, m in enumerate(chosen, 1):
            path = copy / m.path
            text = path.read_text()
            if text.count(m.original) != 1:
                counts["stale"] += 1
                print(f"{i:3d} stale  {m.path}: {m.description}", flush=True)
                continue
            path.write_text(text.replace(m.original, m.replacement))
            try:
                passed, seconds, summary = run_suite(copy, args.workers, args.ignore)
            finally:
                path.write_text(text)
            verdict = "missed" if passed else "caught"
            counts[verdict] += 1
            print(f"{i:3d} {verdict} {m.path}: {m.description} ({seconds:.0f} s)\n"
                  f"      {summary}", flush=True)
        total = time.perf_counter() - began
        scored = counts["caught"] + counts["missed"]
        print(f"\n{counts['caught']} of {scored} caught, {counts['missed']} missed, "
              f"{counts['stale']} stale; {total / 60:.1f} min in all")
        return 0 if counts["missed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
