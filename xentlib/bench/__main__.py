"""``python -m xentlib.bench``: see `xentlib.bench.main`."""

from ._cli import main

if __name__ == "__main__":
    main()
