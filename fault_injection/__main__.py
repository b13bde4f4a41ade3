"""``python -m fault_injection``: see `fault_injection._cli`."""

import gc
import sys

from ._cli import main

# The imports leave ~100,000 objects (Mesa's numpy, pandas, scipy, networkx) that live
# until the process exits. Freezing them keeps the cyclic GC from walking them again:
# in every full collection of a run (50 ms each, two in a 100 x 100 run) and at
# interpreter shutdown (0.2 s after the command's work is done). Only the command's own
# process does this; importing the package changes nothing.
gc.freeze()
sys.exit(main())
