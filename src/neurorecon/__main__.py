"""``python -m neurorecon`` and the ``neurorecon`` script."""

from neurorecon import _interrupt


def main() -> None:
    """Handle Ctrl-C first, then import and run the command line (imports take a while)."""
    _interrupt.install()
    from neurorecon.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
