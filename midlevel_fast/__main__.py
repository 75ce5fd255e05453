"""``python -m midlevel_fast``: the ``midlevel-fast`` command, for environments whose scripts folder is not on PATH."""
import sys

from midlevel_fast.cli import main

sys.exit(main())
