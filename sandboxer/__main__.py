"""``python -m sandboxer``: the same as the ``sandboxer`` command."""

import sys

from .cli import main

sys.exit(main())
