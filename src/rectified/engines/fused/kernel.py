"""Building and loading the fused engine's C++ kernel (``csrc/fused_cpu.cpp``).

The kernel is compiled once per machine, torch version and source text, with the system's C++
compiler and torch's own headers and libraries, into a cache folder
(``$RECTIFIED_CACHE_DIR``, else ``$XDG_CACHE_HOME/rectified``, else ``~/.cache/rectified``).
Nothing is compiled when :mod:`rectified` is imported: ``python -m rectified.engines.build``
builds it ahead of time, and ``fused=True`` builds it on first use. It is loaded with
``torch.ops.load_library``, so no Python headers or ninja are needed, only ``g++``.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch
import torch.utils.cpp_extension as cpp

SOURCE = Path(__file__).with_name("csrc") / "fused_cpu.cpp"
CXX_FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-std=c++20", "-fopenmp", "-fPIC")

_loaded: bool | None = None  # None: not tried yet in this process
_warned = False


class BuildError(RuntimeError):
    """The kernel could not be compiled (no compiler, or a compiler error)."""


def cache_dir() -> Path:
    if "RECTIFIED_CACHE_DIR" in os.environ:
        return Path(os.environ["RECTIFIED_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rectified"


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++"))


def library_path() -> Path:
    """Where the kernel for this source, these flags, this torch and this machine lives."""
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(CXX_FLAGS).encode(), torch.__version__.encode(),
                 sys.version.encode(), platform.machine().encode(), platform.node().encode()):
        key.update(part)
    return cache_dir() / f"fused_cpu-{key.hexdigest()[:16]}.so"


def _command(output: Path) -> list[str]:
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    includes = [f"-I{path}" for path in cpp.include_paths()]
    libs = [f"-L{path}" for path in cpp.library_paths()]
    rpath = [f"-Wl,-rpath,{path}" for path in cpp.library_paths()]
    return [
        _compiler() or "g++", *CXX_FLAGS, "-shared", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        *includes, str(SOURCE), "-o", str(output), *libs, "-lc10", "-ltorch_cpu", *rpath,
    ]


def build(force: bool = False) -> Path:
    """Compile the kernel into the cache (if not there yet, or ``force``); return its path.

    The library is written under a temporary name and renamed, so processes building at the
    same time never load a half-written file.
    """
    target = library_path()
    if target.exists() and not force:
        return target
    if _compiler() is None:
        raise BuildError("no C++ compiler found (set CXX or install g++)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        partial = Path(scratch) / target.name
        result = subprocess.run(_command(partial), capture_output=True, text=True)
        if result.returncode != 0:
            raise BuildError(f"compiling {SOURCE.name} failed:\n{result.stderr[-4000:]}")
        os.replace(partial, target)
    return target


def load(build_if_missing: bool) -> bool:
    """Whether the kernel is loaded, loading it from the cache (or building it if asked).

    A failed build warns once and returns False, so callers fall back to the foreach engine.
    """
    global _loaded, _warned
    if _loaded is not None:
        return _loaded
    path = library_path()
    if not path.exists():
        if not build_if_missing:
            return False
        try:
            path = build()
        except BuildError as error:
            if not _warned:
                warnings.warn(f"fused engine unavailable, using foreach: {error}", stacklevel=3)
                _warned = True
            _loaded = False
            return False
    torch.ops.load_library(str(path))
    _loaded = True
    return True


def is_loaded() -> bool:
    return bool(_loaded)
