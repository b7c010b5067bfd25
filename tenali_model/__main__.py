"""python -m tenali_model COMMAND ...: the model-side `tenali` commands (see cli.py)."""

import sys

from .cli import main

sys.exit(main())
