"""``python -m memgen``: the same as the ``memgen`` command."""

import sys

from memgen.cli import main

if __name__ == "__main__":
    sys.exit(main())
