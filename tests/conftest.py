import sys
from pathlib import Path

import torch

# `tests.registry` and `tests.helpers` import as a package from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
torch.set_num_threads(min(2, torch.get_num_threads()))
