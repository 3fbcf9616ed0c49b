"""``python -m mtlcli``: the same as the ``mtl`` command."""

from mtlcli.cli import main

if __name__ == "__main__":
    main()
