"""``python -m neurorecon`` and the ``neurorecon`` script."""

import os
import sys

from neurorecon import _interrupt


def main() -> None:
    """Handle Ctrl-C first, then import and run the command line (imports take a while)."""
    _interrupt.install()
    if sys.argv[1:2] == ["check"]:
        # numpy's OpenBLAS starts a thread per core at import and they spin for a while: ~0.1 s of
        # CPU, a third of checking a 20k-node neuron, for matrix products that checks never make.
        # (Set before numpy is imported; a value the user chose is kept.)
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from neurorecon.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
