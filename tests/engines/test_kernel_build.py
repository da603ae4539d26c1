"""The fused kernel for an installed package: built on first use with a message, the same engine
in every process, one warning and the foreach engine when it cannot be built or cached.

The compiler is replaced by small scripts (``CXX``): one that fails, one that writes the library
this machine already built, so that these tests run the real build path in seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import rectified
from rectified.engines import engine_for, engines_of
from rectified.engines.build import main as build_main
from rectified.engines.fused import kernel
from tests.helpers import make_params

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fresh_loader(monkeypatch, tmp_path) -> Path:
    """A process that has not decided on the kernel yet, with an empty cache; returns a folder
    for compiler scripts."""
    monkeypatch.setattr(kernel, "_loaded", None)
    monkeypatch.setattr(kernel, "_warned", False)
    monkeypatch.setenv("RECTIFIED_CACHE_DIR", str(tmp_path / "cache"))
    tools = tmp_path / "tools"
    tools.mkdir()
    return tools


def script(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def foreach_result() -> list[torch.Tensor]:
    params = make_params(torch.float32)
    optimizer = rectified.RAdam(params, lr=0.1, foreach=True)
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()
    return params


def step_radam(**kwargs) -> list[torch.Tensor]:
    params = make_params(torch.float32)
    optimizer = rectified.RAdam(params, lr=0.1, **kwargs)
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()
    assert engines_of(optimizer) == ["foreach"]
    return params


def test_failed_build_warns_once_runs_foreach_and_is_not_retried(fresh_loader, monkeypatch,
                                                                 capsys):
    calls = fresh_loader / "calls"
    compiler = script(fresh_loader, "cxx", f'echo run >> {calls}\necho "error: boom" >&2\nexit 1\n')
    monkeypatch.setenv("CXX", str(compiler))
    with pytest.warns(UserWarning, match=r"fused engine unavailable, using foreach: compiling "
                                         r"kernel.cpp failed:\nerror: boom"):
        result = step_radam()  # fused=None: the Adam family asks for the kernel
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert engine_for(rectified.RAdam(make_params(), fused=True).param_groups[0]) == "foreach"
    for p, q in zip(result, foreach_result()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert calls.read_text().count("run") == 1
    assert kernel.failure_note(kernel.library_path()).read_text().endswith("error: boom\n")

    # The next process (a fresh loader) does not compile again, and says how to retry.
    monkeypatch.setattr(kernel, "_loaded", None)
    monkeypatch.setattr(kernel, "_warned", False)
    with pytest.warns(UserWarning, match=r"an earlier build failed .*--force` retries"):
        step_radam(fused=True)
    assert calls.read_text().count("run") == 1
    assert build_main(["--force"]) == 1
    assert calls.read_text().count("run") == 2
    assert "error: boom" in capsys.readouterr().err


@pytest.mark.parametrize("fused", [None, True])
def test_unwritable_cache_warns_and_runs_foreach(fresh_loader, monkeypatch, fused):
    blocker = fresh_loader / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("RECTIFIED_CACHE_DIR", str(blocker / "cache"))  # below a file
    with pytest.warns(UserWarning, match=r"using foreach: cannot write the kernel cache .*"
                                         r"set RECTIFIED_CACHE_DIR to a writable folder"):
        result = step_radam(fused=fused)
    for p, q in zip(result, foreach_result()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


PROBE = """
import torch, rectified
model = torch.nn.Linear(3, 2)
opt = rectified.RAdam(model.parameters())
model(torch.ones(4, 3)).sum().backward()
opt.step()
print(rectified.engines.engines_of(opt))
"""


def test_first_use_builds_with_a_message_and_every_process_runs_fused(fused_kernel, tmp_path):
    """Two fresh processes of one installation: the first compiles (saying so, with the
    duration, on stderr), the second loads; both run the fused engine with ``fused=None``."""
    built = kernel.library_path()
    compiler = script(tmp_path, "cxx", 'while [ "$1" != -o ]; do shift; done\n'
                                       f'cp {built} "$2"\n')
    env = {**os.environ, "CXX": str(compiler), "RECTIFIED_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(ROOT / "src")}
    first, second = (subprocess.run([sys.executable, "-c", PROBE], capture_output=True,
                                    text=True, env=env, check=True) for _ in range(2))
    assert first.stdout.strip() == second.stdout.strip() == "['fused']"
    lines = first.stderr.strip().splitlines()
    assert len(lines) == 2, first.stderr
    assert lines[0].startswith("rectified: compiling the fused CPU kernel (kernel.cpp) once")
    assert lines[1].startswith("rectified: fused CPU kernel built in ")
    assert lines[1].endswith(" s")
    assert second.stderr == ""


def test_groups_without_cpu_tensors_do_not_build_the_kernel(fresh_loader, monkeypatch):
    """The CPU kernel is built for CPU tensors only: a group on another device (CUDA in
    practice, where Adam steps go to torch's kernels; meta here) never compiles or warns."""
    calls = fresh_loader / "calls"
    monkeypatch.setenv("CXX", str(script(fresh_loader, "cxx", f"echo run >> {calls}\nexit 1\n")))
    off_cpu = rectified.RAdam([torch.zeros(3, device="meta", requires_grad=True)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert engines_of(off_cpu) == ["fused"]
    assert not calls.exists() and not kernel.is_loaded()
    on_cpu = rectified.RAdam([torch.zeros(3, device="meta"), torch.zeros(3)])
    with pytest.warns(UserWarning, match="fused engine unavailable"):
        assert engines_of(on_cpu) == ["foreach"]
    assert calls.read_text() == "run\n"


FORMATS_PROBE = """
import torch, rectified
from rectified.engines.fused import kernel
model = torch.nn.Linear(100, 100)
opt = rectified.RAdam(model.parameters(), state_format=STATE_FORMAT, min_8bit_size=0)
for _ in range(2):
    model(torch.ones(4, 100)).sum().backward()
    opt.step()
print(rectified.engines.engines_of(opt), kernel.library_path(kernel.FORMATS_SOURCE).exists())
"""


def test_the_state_formats_kernel_is_built_only_when_a_format_is_used(fused_kernel, tmp_path):
    """It doubles the compile time, so a program with float32 state never builds it; the
    first step over 8-bit state does, with the same two lines on stderr."""
    formats = kernel.build(source=kernel.FORMATS_SOURCE)
    compiler = script(tmp_path, "cxx", 'source=""\nfor a in "$@"; do case "$a" in *.cpp) '
                      'source="$a";; esac; done\nwhile [ "$1" != -o ]; do shift; done\n'
                      f'case "$source" in *formats.cpp) cp {formats} "$2";; '
                      f'*) cp {kernel.library_path()} "$2";; esac\n')
    env = {**os.environ, "CXX": str(compiler), "RECTIFIED_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(ROOT / "src")}

    def run(state_format: str) -> subprocess.CompletedProcess:
        code = FORMATS_PROBE.replace("STATE_FORMAT", repr(state_format))
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=env, check=True)

    plain = run("float32")
    assert plain.stdout.strip() == "['fused'] False"
    assert "kernel.cpp" in plain.stderr and "formats.cpp" not in plain.stderr
    eight_bit = run("8bit")
    assert eight_bit.stdout.strip() == "['fused'] True"
    lines = eight_bit.stderr.strip().splitlines()
    assert len(lines) == 2 and "(formats.cpp) once" in lines[0], eight_bit.stderr
    assert run("8bit").stderr == ""
