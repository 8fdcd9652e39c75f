"""``python -m asyncws``: the command line, implemented in ``asyncws.cli`` (see its docstring)."""

import sys

from asyncws.cli import main

if __name__ == "__main__":
    sys.exit(main())
