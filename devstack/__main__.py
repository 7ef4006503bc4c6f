"""``python -m devstack`` runs the demo."""

import sys

from .demo import main

sys.exit(main())
