"""`python -m swf_pool`: the command line."""

import sys

from .cli import main

sys.exit(main())
