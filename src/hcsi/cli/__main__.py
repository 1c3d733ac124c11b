"""`python -m hcsi.cli ...` (as torchrun runs it): the same as `hcsi ...`."""
import sys

from . import main

sys.exit(main())
