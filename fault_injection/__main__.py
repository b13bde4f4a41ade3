"""``python -m fault_injection``: see `fault_injection._cli`."""

import sys

from ._cli import main

sys.exit(main())
