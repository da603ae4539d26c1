import sys
from pathlib import Path

import pytest
import torch

# `tests.registry` and `tests.helpers` import as a package from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="module")
def fused_kernel():
    """The fused engine's C++ kernel, built if missing; skips where it cannot be built."""
    from rectified.engines.fused import kernel

    try:
        kernel.build()
    except kernel.BuildError as error:
        pytest.skip(f"no fused kernel on this machine: {error}")
    assert kernel.load(build_if_missing=False)
