"""``python -m controller.cni``: the same as the ``stockade-cni`` console script."""

import sys

from controller.cni.entry import main

sys.exit(main())
