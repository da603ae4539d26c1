"""Building, loading and calling the fused engine's C++ kernel (``csrc/``).

The kernel is compiled once per CPU model, torch version and source text, with the system's
C++ compiler and torch's own headers and libraries, into a cache folder
(``$RECTIFIED_CACHE_DIR``, else ``$XDG_CACHE_HOME/rectified``, else ``~/.cache/rectified``).
It is loaded with ``torch.ops.load_library``, so no Python headers or ninja are needed, only
``g++``.

Nothing is compiled when :mod:`rectified` is imported, nor when the package is installed (a
build at install time would run in pip's isolated build environment, against a torch that pip
downloads there unpinned, not the one the kernel is loaded into). The first step that needs
the kernel builds it, saying so on stderr (through :mod:`logging`, with its duration), or
``python -m rectified.engines.build`` builds it ahead of time. Whether a process uses the kernel
thus depends on the installation (is a compiler there, did a build fail), not on whether an
earlier process already built it: a failed build leaves a note beside the library, so that
later processes warn at once instead of compiling again; ``--force`` retries.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from rectified.engines.fused import instructions

CSRC = Path(__file__).with_name("csrc")
SOURCE = CSRC / "kernel.cpp"
FORMATS_SOURCE = CSRC / "formats.cpp"  # the state formats' kernel, built when first needed
HEADER = "instructions.h"  # generated from instructions.py into the build folder
CXX_FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-std=c++20", "-fopenmp", "-fPIC")

_loaded: bool | None = None  # None: not tried yet in this process
_formats_loaded: bool | None = None
_warned = False
log = logging.getLogger(__name__)


class BuildError(RuntimeError):
    """The kernel could not be compiled (no compiler, or a compiler error)."""


def cache_dir() -> Path:
    if "RECTIFIED_CACHE_DIR" in os.environ:
        return Path(os.environ["RECTIFIED_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rectified"


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++"))


def _cpu() -> bytes:
    """What ``-march=native`` compiles for: the CPU's model and features. Not the host name, so
    that containers started from one image (each with its own host name) share one build."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return f"{platform.machine()} {platform.processor()} {platform.node()}".encode()
    wanted = ("model name", "flags", "Features", "CPU implementer", "CPU part")
    return "\n".join(dict.fromkeys(line for line in lines if line.startswith(wanted))).encode()


def _inputs(source: Path) -> list[bytes]:
    """Everything the library's bytes depend on."""
    texts = [path.read_bytes() for path in sorted(source.parent.glob("*.h"))]
    return [source.read_bytes(), *texts, instructions.cpp_header().encode(),
            " ".join(CXX_FLAGS).encode(), torch.__version__.encode(), sys.version.encode(),
            platform.machine().encode(), _cpu()]


def library_path(source: Path = SOURCE) -> Path:
    """Where the library built from ``source`` for this torch and this machine lives."""
    key = hashlib.sha256()
    for part in _inputs(source):
        key.update(part)
    return cache_dir() / f"{source.stem}-{key.hexdigest()[:16]}.so"


def _command(source: Path, output: Path, includes: Sequence[Path]) -> list[str]:
    import torch.utils.cpp_extension as cpp  # imported here: it costs 0.3 s at import time

    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    paths = [*includes, *cpp.include_paths()]
    libs = [f"-L{path}" for path in cpp.library_paths()]
    rpath = [f"-Wl,-rpath,{path}" for path in cpp.library_paths()]
    return [
        _compiler() or "g++", *CXX_FLAGS, "-shared", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        *(f"-I{path}" for path in paths), str(source), "-o", str(output), *libs, "-lc10",
        "-ltorch_cpu", *rpath,
    ]


def failure_note(target: Path) -> Path:
    """Where a failed build of ``target`` leaves its error."""
    return target.with_suffix(".failed")


@contextlib.contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """Hold the cache folder's build lock, so that processes starting together (torchrun, a
    sweep's jobs) compile once; the others wait and then find the library."""
    fcntl: Any
    try:
        import fcntl
    except ImportError:  # not POSIX: concurrent builds stay correct, only redundant
        fcntl = None
    with open(folder / ".build.lock", "w") as handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.warning("rectified: waiting for another process to build the fused CPU "
                            "kernel")
                fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def build(force: bool = False, source: Path = SOURCE) -> Path:
    """Compile ``source`` (the kernel by default) into the cache, if not there yet or
    ``force``; return the library's path. Raises :class:`BuildError` (and, unless there is no
    compiler at all, notes the failure beside the library) if it cannot be built.

    The library is written under a temporary name and renamed, so processes building at the
    same time never load a half-written file.
    """
    target = library_path(source)
    if target.exists() and not force:
        return target
    if _compiler() is None:
        raise BuildError("no C++ compiler found (set CXX or install g++)")
    note = failure_note(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive(target.parent):
            if target.exists() and not force:
                return target  # built by another process while this one waited
            if note.exists() and not force:
                raise BuildError(f"an earlier build failed ({note}; `python -m "
                                 f"rectified.engines.build --force` retries): "
                                 f"{note.read_text().strip()[-2000:]}")
            _compile(source, target, note)
    except OSError as error:
        raise BuildError(f"cannot write the kernel cache {target.parent} ({error}); set "
                         "RECTIFIED_CACHE_DIR to a writable folder") from error
    return target


def _compile(source: Path, target: Path, note: Path) -> None:
    """Compile, saying so on stderr (through :mod:`logging`: a pause of many seconds in a
    library call should never be silent) before and after, with the duration."""
    log.warning("rectified: compiling the fused CPU kernel (%s) once for this installation, "
                "10-60 s, into %s", source.name, target.parent)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        (Path(scratch) / HEADER).write_text(instructions.cpp_header())
        partial = Path(scratch) / target.name
        command = _command(source, partial, [Path(scratch), CSRC])
        try:
            result = subprocess.run(command, capture_output=True, text=True)
        except OSError as error:  # not a cache problem: the compiler itself would not start
            raise BuildError(f"cannot run the compiler {command[0]}: {error}") from error
        if result.returncode != 0:
            message = f"compiling {source.name} failed:\n{result.stderr[-4000:]}"
            note.write_text(message)
            raise BuildError(message)
        os.replace(partial, target)
    note.unlink(missing_ok=True)
    log.warning("rectified: fused CPU kernel built in %.1f s", time.perf_counter() - start)


def load(build_if_missing: bool) -> bool:
    """Whether the kernel is loaded, loading it from the cache (or building it if asked).

    A failed build or load warns once and returns False, so callers fall back to the
    foreach engine. The answer is kept for the rest of the process, except a False given
    without trying to build.
    """
    global _loaded, _warned
    if _loaded is not None:
        return _loaded
    try:
        path = library_path()
        if not path.exists():
            if not build_if_missing:
                return False
            path = build()
        torch.ops.load_library(str(path))
    except (BuildError, OSError, RuntimeError) as error:
        if not _warned:
            warnings.warn(f"rectified: fused engine unavailable, using foreach: {error}",
                          stacklevel=3)
            _warned = True
        _loaded = False
        return False
    _loaded = True
    return True


def is_loaded() -> bool:
    return bool(_loaded)


def run_program_(program, slots: Sequence[Sequence[torch.Tensor]],
                 read_only: Sequence[int] = ()) -> tuple[list[int], list[int]]:
    """Run ``program`` with ``slots[s][i]`` as input list s of parameter i (the lists
    ``read_only`` are only read); return the indices of the parameters left untouched: those
    the kernel cannot read, and those whose memory overlaps another tensor of the call."""
    flat = [x for tensors in zip(*slots) for x in tensors]
    if not flat:
        return [], []
    skipped, aliased = torch.ops.rectified_fused.run_program_(
        flat, program.n_slots, list(read_only), program.n_registers, program.code,
        program.scalars
    )
    return list(skipped), list(aliased)


def overlapping(slots: Sequence[Sequence[torch.Tensor]], read_only: Sequence[int]) -> list[int]:
    """The indices of the parameters whose tensors share memory with another tensor of
    ``slots`` where one of the two is written (see
    :func:`rectified.engines.tensors.overlapping`)."""
    flat = [x for tensors in zip(*slots) for x in tensors]
    if not flat:
        return []
    return torch.ops.rectified_fused.overlapping(flat, len(slots), list(read_only))


def first_unfit(params: list[torch.Tensor], grads: list[torch.Tensor],
                states: list[torch.Tensor | None], n_keys: int) -> int:
    """The index of the first parameter whose step cannot be right, or -1 (see
    :func:`rectified.engines.state.check_gradients`)."""
    return torch.ops.rectified_fused.first_unfit(params, grads, states, n_keys)


def advance_steps_(steps: list[torch.Tensor]) -> list[float]:
    """Add 1 to one-element float CPU step counters, in one call; raises RuntimeError (having
    changed nothing) if any is not one."""
    return torch.ops.rectified_fused.advance_steps_(steps)


def plan(slots: list[torch.Tensor], steps: list[torch.Tensor], frozen: list[torch.Tensor],
         n_slots: int, also_written: Sequence[torch.Tensor] = ()):
    """The kernel's kept plan of a group (see :mod:`.plans`); ``also_written``: tensors the
    step writes besides ``slots`` (a new gradient sharing their memory leaves the plan)."""
    return torch.classes.rectified_fused.Plan(slots, steps, frozen, n_slots, list(also_written))


def load_formats() -> bool:
    """Whether the state formats' kernel (``csrc/formats.cpp``) is loaded, building it on the
    first call that needs it, as the main kernel is (a failure warns once; the formatted steps
    then run through torch operations)."""
    global _formats_loaded
    if _formats_loaded is None:
        try:
            torch.ops.load_library(str(build(source=FORMATS_SOURCE)))
            _formats_loaded = True
        except (BuildError, OSError, RuntimeError) as error:
            warnings.warn(f"rectified: the state formats' fused kernel is unavailable, so "
                          f"formatted steps run through torch operations: {error}",
                          stacklevel=3)
            _formats_loaded = False
    return _formats_loaded


def formatted_step_(operation: str, params: list[torch.Tensor], grads: list[torch.Tensor],
                    moments: list[torch.Tensor], scales: list[torch.Tensor], n_moments: int,
                    eight_bit: bool, stochastic_params: bool, seed: int, step: int,
                    positions: list[int], offsets: list[int], scalars: Sequence[float]) -> None:
    """``operation`` (``adam_step_`` or ``bounded_step_``) with ``scalars`` over moments
    stored as 8-bit codes (and their scales) or bfloat16, in one pass (``csrc/one_pass.h``);
    raises RuntimeError, having changed nothing, if a tensor is not as described there.
    ``positions`` and ``offsets``: each parameter's rounding stream (see
    :class:`rectified.engines.stored.Stored`)."""
    torch.ops.rectified_formats.formatted_step_(
        instructions.OPCODES[operation], params, grads, moments, scales, n_moments, eight_bit,
        stochastic_params, seed & 0xFFFFFFFF, seed >> 32, step, positions, offsets,
        list(scalars))


def decode_codes_(codes: torch.Tensor, scales: torch.Tensor, out: torch.Tensor,
                  is_signed: bool) -> None:
    torch.ops.rectified_formats.decode_codes_(codes, scales, out, is_signed)


def encode_codes_(values: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor,
                  is_signed: bool, stream: int, shift: int) -> None:
    """8-bit codes of float32 ``values``; ``shift`` 0/16: those random bits of the stream
    (stochastic), -1: to nearest."""
    torch.ops.rectified_formats.encode_codes_(values, codes, scales, is_signed, stream, shift)


def round_bfloat16_(values: torch.Tensor, out: torch.Tensor, stream: int, mode: int) -> None:
    """float32 ``values`` into bfloat16 ``out``: mode 0/1 with the stream's low/high random
    bits, 2 with a parameter's bits, 3 to nearest."""
    torch.ops.rectified_formats.round_bfloat16_(values, out, stream, mode)
