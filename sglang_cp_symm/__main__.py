"""``python -m sglang_cp_symm``: the command line (``tools.cli``)."""

import sys

from .tools.cli import main

sys.exit(main())
