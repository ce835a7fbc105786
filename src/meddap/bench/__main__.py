"""python -m meddap.bench: see meddap.bench."""

import sys

from meddap.bench import main

sys.exit(main())
