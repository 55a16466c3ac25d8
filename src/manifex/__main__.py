"""``python -m manifex ...`` (also under ``torchrun --nproc-per-node N -m manifex fit ...``)."""

import sys

from .cli import main

sys.exit(main())
