"""Time xentlib against its peers on the same arrays: ``python -m xentlib.bench``.

Three benchmarks, each a function that returns its results as a list of
dicts (which is how the book's chapters call them) and a mode of the command
line, which adds a progress bar, a table, a JSON file and a figure:

- `run` (``python -m xentlib.bench``): every method on logits of one size,
  ``N * C`` fixed, for a few class counts; each time as a ratio to the
  baseline of its kind, the peak extra memory, and what each option costs.
- `run_sweep` (``--sweep``): xentlib, torch and whole-array NumPy, the loss
  and the loss with its gradient, over ``N * C`` from 10^2 to 10^8; the time
  per logit shows the fixed cost of a call, the cache and memory.
- `run_large_vocab` (``--large-vocab``): dense against chunked linear
  cross-entropy, and the sharded loss on Dask.

Methods of `run` (``kind`` says what each computes):

- ``xentlib fused``, ``xentlib fused in-place``: `xentlib.cross_entropy_with_grad`,
  the gradient in a fresh array or written over the logits (``out=logits``);
- ``xentlib loss``: `xentlib.cross_entropy`;
- ``naive gather``, ``naive one-hot``: `xentlib.naive` softmax, then the
  gathered or one-hot loss, as tutorials write them;
- ``scipy logsumexp``: ``scipy.special.logsumexp(z) - z[y]``;
- ``numpy stable``, ``numpy stable + grad``: the careful whole-array NumPy a user
  would write (max shift, logsumexp, softmax minus one-hot), the baseline when
  torch is missing;
- ``torch`` and ``torch + backward``: ``torch.nn.functional.cross_entropy`` on
  tensors torch allocated itself, with its default threads;
- ``exp floor``: one ``numpy.exp`` of every logit, in cache-sized blocks split
  over xentlib's threads: no NumPy loss can take less;
- ``xentlib loss, <option>`` and ``xentlib in-place, <option>``: the loss, and
  the in-place loss and gradient, with one option of `OPTIONS` (probability
  targets, label smoothing, class weights, ignore_index, z-loss).

Ratios compare each method with the baseline of its kind (torch when it is
installed, and the plain xentlib call for an option) and with the exp floor.
Timings are interleaved rounds (one sample of each method in turn, the order
rotating) and the median is reported; peak memory is measured apart, with
`tracemalloc` (NumPy methods only: torch allocates outside Python's view).

The progress bar needs tqdm and the figures matplotlib, both in the
``bench`` extra (``pip install 'xentlib[bench]'``); the functions that
measure need neither.
"""

from ._cli import main
from ._compare import OPTIONS, run
from ._large_vocab import run_large_vocab
from ._report import plot, plot_sweep, table, table_large_vocab, table_options, table_sweep
from ._sweep import run_sweep

__all__ = [
    "OPTIONS",
    "main",
    "plot",
    "plot_sweep",
    "run",
    "run_large_vocab",
    "run_sweep",
    "table",
    "table_large_vocab",
    "table_options",
    "table_sweep",
]
