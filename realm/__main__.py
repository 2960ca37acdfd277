"""`python -m realm` is the `realm` command."""

import sys

from realm.cli import main

sys.exit(main())
