"""The robustness suite's helper modules (``limited``, ``hostile_files``) import by name."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
