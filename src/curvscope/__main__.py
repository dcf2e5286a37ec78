"""``python -m curvscope`` (also under ``torchrun``)."""

import sys

from curvscope.cli.main import main

sys.exit(main())
