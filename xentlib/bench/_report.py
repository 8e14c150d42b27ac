"""The benchmark's results as text tables and matplotlib figures."""

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._methods import SWEPT

__all__ = ["plot", "plot_sweep", "table", "table_large_vocab", "table_options", "table_sweep"]

Results = Sequence[dict[str, Any]]

# The methods of `plot`, and the look of each method of `plot_sweep`: a colour per
# library, solid for the loss, dashed for the loss with its gradient.
SHOWN = ("xentlib fused", "xentlib fused in-place", "xentlib loss", "numpy stable",
         "naive gather", "scipy logsumexp")
_SWEEP_STYLE: dict[str, tuple[str, Any]] = {
    "xentlib loss": ("C0", "-"), "xentlib fused": ("C0", "--"),
    "torch": ("C1", "-"), "torch + backward": ("C1", "--"),
    "numpy stable": ("C2", "-"), "numpy stable + grad": ("C2", "--"),
}


def table(results: Results) -> str:
    """The results of `run` as aligned text, one line per (C, method); options apart."""
    lines = [f"{'C':>7} {'N':>6}  {'method':<24} {'ms':>8} {'ratio':>6} {'/floor':>6}"
             f" {'memory':>7}"]
    for r in results:
        if r["option"] is not None:
            continue
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        memory = "" if r["memory"] is None else f"{r['memory']:.3f}"
        lines.append(f"{r['classes']:>7} {r['rows']:>6}  {r['method']:<24}"
                     f" {1e3 * r['seconds']:>8.2f} {ratio:>6} {r['floor_ratio']:>6.2f}"
                     f" {memory:>7}")
    return "\n".join(lines)


def table_options(results: Results) -> str:
    """What each option costs in `run`, as its time over the same library's plain call.

    One line per (C, option): xentlib's loss and in-place loss and gradient,
    the in-place call's peak extra memory in logits' sizes, and where torch
    was timed, its loss and loss with backward (blank for the z-loss, which
    torch lacks).
    """
    ratio = {(r["classes"], r["method"]): r["ratio"] for r in results}
    memory = {(r["classes"], r["method"]): r["memory"] for r in results}
    with_torch = any(r["method"].startswith("torch") and r["option"] for r in results)
    torch_columns = ((("torch, {}", "torch", 6), ("torch + backward, {}", "torch+grad", 10))
                     if with_torch else ())
    lines = [f"{'C':>7}  {'option':<16} {'loss':>6} {'in-place':>8} {'memory':>7}"
             + "".join(f" {title:>{width}}" for _, title, width in torch_columns)]
    for c, option in dict.fromkeys((r["classes"], r["option"]) for r in results if r["option"]):
        line = (f"{c:>7}  {option:<16} {ratio[c, f'xentlib loss, {option}']:>6.2f}"
                f" {ratio[c, f'xentlib in-place, {option}']:>8.2f}"
                f" {memory[c, f'xentlib in-place, {option}']:>7.3f}")
        for method, _, width in torch_columns:
            value = ratio.get((c, method.format(option)))
            line += f" {'' if value is None else f'{value:.2f}':>{width}}"
        lines.append(line.rstrip())
    return "\n".join(lines)


def table_sweep(results: Results) -> str:
    """The results of `run_sweep` as a Markdown table, one line per (C, N).

    Median microseconds per call of each method, then xentlib's loss and
    fused loss + gradient over torch's loss and forward + backward (over the
    whole-array NumPy versions where torch was not timed).
    """
    seconds = {(r["classes"], r["rows"], r["method"]): r["seconds"] for r in results}
    timed = {r["method"] for r in results}
    names = [name for name in SWEPT if name in timed]
    torch = "torch" in timed
    base = ("torch", "torch + backward") if torch else ("numpy stable", "numpy stable + grad")
    ratios = (("xentlib loss", base[0]), ("xentlib fused", base[1]))
    short = "torch" if torch else "NumPy"
    header = (["C", "N", "N·C"] + [f"{name} µs" for name in names]
              + [f"loss / {short}", f"fused / {short}"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c, n, size in dict.fromkeys((r["classes"], r["rows"], r["elements"]) for r in results):
        cells = [str(c), str(n), f"{size:.2g}".replace("e+0", "e")]
        cells += [_micros(seconds[c, n, name]) for name in names]
        cells += [f"{seconds[c, n, a] / seconds[c, n, b]:.2f}" for a, b in ratios]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _micros(seconds: float) -> str:
    """Seconds as microseconds with three significant digits, no exponent."""
    micros = 1e6 * seconds
    return f"{micros:.3g}" if micros < 1000 else f"{micros:.0f}"


def table_large_vocab(results: Results) -> str:
    """The results of `run_large_vocab` as aligned text, one line per vocabulary size.

    ``time`` is the chunked loss and gradients over the dense ones, ``loss``
    the chunked loss alone over the dense logits and loss; ``threads`` and
    ``cluster`` are the sharded loss over the dense one. With shards, a second
    table says where the cluster's time went.
    """
    mib = 2.0**20
    lines = [f"{'V':>7} {'logits':>9} {'dense':>9} {'chunked':>8} {'memory':>7} {'time':>6}"
             f" {'loss':>6} {'threads':>8} {'cluster':>8}"]
    for r in results:
        sharded = (f"{r['sharded_threads_ratio']:>8.2f} {r['sharded_ratio']:>8.2f}"
                   if "sharded_ratio" in r else "")
        lines.append(f"{r['vocabulary']:>7} {r['logits_bytes'] / mib:>5.0f} MiB"
                     f" {r['memory']['dense'] / mib:>5.0f} MiB"
                     f" {r['memory']['chunked'] / mib:>4.1f} MiB"
                     f" {r['memory_ratio']:>7.3f} {r['time_ratio']:>6.2f}"
                     f" {r['loss_time_ratio']:>6.2f} {sharded}")
    breakdowns = [(r["vocabulary"], r["sharded_breakdown"]) for r in results
                  if "sharded_breakdown" in r]
    if breakdowns:
        names = list(breakdowns[0][1])
        lines += ["", "Where the cluster's median round went, in seconds (Dask's task stream):",
                  f"{'V':>7}" + "".join(f" {name:>17}" for name in names)]
        lines += [f"{vocab:>7}" + "".join(f" {parts[name]:>17.3g}" for name in names)
                  for vocab, parts in breakdowns]
    return "\n".join(lines)


def plot(results: Results, ax: Any = None) -> Any:
    """Bar chart of each method's time in `run` over its baseline, one group per class count.

    Returns the matplotlib figure. Methods not in ``results`` are skipped.
    """
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.6), layout="constrained")
    classes = sorted({r["classes"] for r in results})
    names = [n for n in SHOWN if any(r["method"] == n for r in results)]
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        ratio = {r["classes"]: r["ratio"] for r in results if r["method"] == name}
        ax.bar([i + j * width for i in range(len(classes))],
               [ratio.get(c, np.nan) for c in classes], width, label=name)
    baseline = "torch" if any(r["baseline"] == "torch" for r in results) else "whole-array NumPy"
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(classes))],
                  [f"C = {c}" for c in classes])
    ax.set_yscale("log")
    # Ratios read as plain numbers (0.5, 2, 10), not as powers of ten.
    ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_ylabel(f"median time / {baseline}\n(log scale, lower is faster)")
    ax.legend(fontsize="small", ncols=3, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    ax.grid(alpha=0.3, axis="y")
    return ax.figure


def plot_sweep(results: Results) -> Any:
    """Log–log lines of `run_sweep`'s time per logit against ``N * C``, a panel per ``C``.

    A line per method: a colour per library, solid for the loss and dashed
    for the loss with its gradient. The panels share their axes, so that the
    class counts compare. Returns the matplotlib figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    classes = sorted({r["classes"] for r in results})
    names = [name for name in SWEPT if any(r["method"] == name for r in results)]
    figure, axes = plt.subplots(1, len(classes), figsize=(2.6 * len(classes) + 1.2, 3.8),
                                sharex=True, sharey=True, layout="constrained", squeeze=False)
    for ax, c in zip(axes[0], classes, strict=True):
        for name in names:
            colour, style = _SWEEP_STYLE[name]
            points = sorted((r["elements"], r["ns_per_logit"]) for r in results
                            if r["method"] == name and r["classes"] == c)
            ax.plot(*zip(*points, strict=True), color=colour, linestyle=style, marker="o",
                    markersize=3, linewidth=1.2)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"C = {c}", fontsize="medium")
        ax.set_xlabel("N · C (logits per call)")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("median time per logit (ns)")
    # a legend column per library, the loss above the loss with its gradient
    handles = [Line2D([], [], color=colour, linestyle=style, label=name)
               for name, (colour, style) in _SWEEP_STYLE.items() if name in names]
    figure.legend(handles=handles, fontsize="small", ncols=(len(handles) + 1) // 2,
                  loc="outside upper center")
    return figure
