"""``python -m xentlib.bench``: run a benchmark, print its table, write JSON and a figure."""

import argparse
import importlib.util
import inspect
import json
import os
import platform
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import _blocked
from ._compare import run
from ._large_vocab import run_large_vocab
from ._methods import _import_torch
from ._report import plot, plot_sweep, table, table_large_vocab, table_options, table_sweep
from ._sweep import run_sweep

__all__ = ["main"]

# --quick runs each benchmark's defaults; these are the full runs.
FULL: dict[str, Any] = dict(classes=(1000, 32768, 131072), elements=1 << 23, repeat=15)
SWEEP_QUICK: dict[str, Any] = dict(max_elements=10**7, repeat=3, min_seconds=0.002)
LARGE_VOCAB_QUICK: dict[str, Any] = dict(vocabularies=(4096, 16384), rows=1024, repeat=1)


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported (False where ``sys.modules`` blocks it with None)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # in sys.modules as None, or without a spec
        return module in sys.modules and sys.modules[module] is not None


def _environment() -> dict[str, Any]:
    """What the numbers depend on: versions, cores, xentlib's block and thread settings."""
    torch = _import_torch()
    return dict(
        python=platform.python_version(), numpy=np.__version__, machine=platform.machine(),
        processor=platform.processor(), cpu_count=os.cpu_count(),
        torch=None if torch is None else torch.__version__,
        torch_threads=None if torch is None else torch.get_num_threads(),
        xentlib_threads=_blocked.THREADS, xentlib_block_bytes=_blocked.BLOCK_BYTES,
    )


def _parser() -> argparse.ArgumentParser:
    """The command line of ``python -m xentlib.bench``."""
    parser = argparse.ArgumentParser(
        prog="python -m xentlib.bench",
        description="Time xentlib against torch (when installed) and NumPy on the same arrays.",
        epilog="The progress bar needs tqdm and the figures matplotlib "
               "(pip install 'xentlib[bench]'); without matplotlib the figure is skipped.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--sweep", action="store_true",
                      help="time per logit from N*C = 10^2 to 10^8 (sweep.json, sweep.png)")
    mode.add_argument("--large-vocab", action="store_true",
                      help="dense vs chunked linear cross-entropy (N=4096, D=256), and Dask")
    parser.add_argument("--quick", action="store_true", help="smaller arrays, fewer rounds")
    parser.add_argument("--out", default=".", help="folder for the JSON file and the figure")
    parser.add_argument("--classes", type=lambda s: [int(c) for c in s.split(",")],
                        help="comma-separated class counts (vocabularies with --large-vocab)")
    parser.add_argument("--elements", type=int,
                        help="N * C (default 2**23, or 2**20 with --quick); "
                             "with --sweep the largest N * C (10**8, or 10**7 with --quick)")
    parser.add_argument("--repeat", type=int, help="interleaved timed rounds")
    parser.add_argument("--rows", type=int, help="with --large-vocab: items N (default 4096)")
    parser.add_argument("--width", type=int,
                        help="with --large-vocab: hidden features D (default 256)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--no-torch", action="store_true", help="compare with NumPy only")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark that ``argv`` asks for, print its table, write its files into ``--out``.

    Without matplotlib the figure is skipped (said before anything is timed),
    and without tqdm the progress bar.
    """
    args = _parser().parse_args(argv)
    progress = _installed("tqdm")
    if not progress:
        print("tqdm is not installed: no progress bar", file=sys.stderr)
    figure = not args.large_vocab and _installed("matplotlib")
    if not args.large_vocab and not figure:
        print("matplotlib is not installed: the figure is skipped, the JSON file is written "
              "(pip install 'xentlib[bench]' to draw it)", file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    if args.sweep:
        settings = _sweep_settings(args)
        results = run_sweep(**settings, use_torch=not args.no_torch, progress=progress)
        print(table_sweep(results))
        written = _write(args.out, "sweep", _with_defaults(run_sweep, settings), results,
                         plot_sweep(results) if figure else None)
    elif args.large_vocab:
        settings = _large_vocab_settings(args)
        results = run_large_vocab(**settings, shards=4, progress=progress)
        print(table_large_vocab(results))
        written = _write(args.out, "bench-large-vocab", _with_defaults(run_large_vocab, settings),
                         results, None)
    else:
        settings = _run_settings(args)
        results = run(**settings, use_torch=not args.no_torch, progress=progress)
        print(table(results))
        print("\nOptions, as a multiple of the plain call's time:")
        print(table_options(results))
        written = _write(args.out, "bench", _with_defaults(run, settings), results,
                         plot(results) if figure else None)
    print(f"wrote {' and '.join(written)}", file=sys.stderr)


def _run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """`run`'s arguments: its defaults with --quick, else `FULL`, then the options given."""
    settings = {} if args.quick else dict(FULL)
    for key in ("classes", "elements", "repeat"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    return settings | {"dtype": args.dtype}


def _sweep_settings(args: argparse.Namespace) -> dict[str, Any]:
    """`run_sweep`'s arguments: its defaults, or `SWEEP_QUICK`, then the options given."""
    settings = dict(SWEEP_QUICK) if args.quick else {}
    for key, option in (("classes", "classes"), ("max_elements", "elements"),
                        ("repeat", "repeat")):
        if getattr(args, option) is not None:
            settings[key] = getattr(args, option)
    return settings | {"dtype": args.dtype}


def _large_vocab_settings(args: argparse.Namespace) -> dict[str, Any]:
    """`run_large_vocab`'s arguments: its defaults, or `LARGE_VOCAB_QUICK`, then the options."""
    settings = dict(LARGE_VOCAB_QUICK) if args.quick else {}
    for key, option in (("vocabularies", "classes"), ("repeat", "repeat"), ("rows", "rows"),
                        ("width", "width")):
        if getattr(args, option) is not None:
            settings[key] = getattr(args, option)
    return settings | {"dtype": args.dtype}


def _with_defaults(function: Callable[..., object], settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` completed with ``function``'s defaults, as the JSON file records them."""
    parameters = inspect.signature(function).parameters.values()
    defaults = {p.name: p.default for p in parameters if p.default is not p.empty}
    return {name: value for name, value in defaults.items() if name != "progress"} | settings


def _write(folder: str, name: str, settings: dict[str, Any], results: list[dict[str, Any]],
           figure: Any) -> list[str]:
    """Write ``<name>.json`` (and ``<name>.png`` when there is a figure); return the paths."""
    paths = [os.path.join(folder, f"{name}.json")]
    with open(paths[0], "w") as f:
        json.dump(dict(environment=_environment(), settings=settings, results=results), f,
                  indent=1)
    if figure is not None:
        paths.append(os.path.join(folder, f"{name}.png"))
        figure.savefig(paths[1], dpi=120)
        import matplotlib.pyplot as plt

        plt.close(figure)
    return paths
