"""``python -m example_project``: run the shop demo end to end (see ``driver``)."""

from __future__ import annotations

import sys

from example_project.driver import main

if __name__ == "__main__":
    sys.exit(main())
