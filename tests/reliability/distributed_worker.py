"""Training on real ``torch.distributed`` (gloo, CPU, loopback) for the distributed tests.

:func:`launch` spawns ``world_size`` processes that run the checks of one scenario (DDP, ZeRO or
FSDP2) for many optimizers in the same process group, and returns, for each check (optimizer,
engine and what is checked), a dict of measured numbers and flags, or its error text. The
tests compare those numbers with their bounds, so every optimizer is one test result.
"""

from __future__ import annotations

import datetime
import math
import os
import socket
import tempfile
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.registry import CASES, Case
from tests.reliability.support import (
    BATCH,
    ENGINE_OPTIONS,
    RULE_CASES,
    TinyNet,
    batch,
    build_for,
    engines_of,
    loss_of,
    max_relative_error,
    model_groups,
)

STEPS, MORE_STEPS = 8, 6  # 8 + 6 crosses RAdam's threshold and Lookahead's k = 2, 3, 6
NAN_STEP = 3
COLLECTIVE_TIMEOUT = datetime.timedelta(seconds=30)
RENDEZVOUS_TIMEOUT = datetime.timedelta(seconds=5)  # ranks leave a check together
ZERO_CASES = tuple(case for case in RULE_CASES if isinstance(case.build, type))

Results = dict[str, dict[str, Any]]


class Check(NamedTuple):
    name: str
    engine: str
    run: Callable[[Path], dict[str, Any]]


def key(case: Case, engine: str, check: str = "") -> str:
    return f"{case.name}@{engine}{'/' + check if check else ''}"


# -- launching ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(scenario: str, world_size: int, timeout: float = 240.0) -> Results:
    """Run every check of ``scenario`` on ``world_size`` spawned processes.

    Every rank writes its results after each check. If a check leaves the ranks out of step
    (an error on some ranks only) or kills a process (a crash in native code), it is recorded
    as an error and the checks after it run in a new launch; after a crash, the remaining
    checks of the same engine are recorded as not run.
    """
    checks = plan(scenario)
    engine_of = {check.name: check.engine for check in checks}
    names = [check.name for check in checks]
    results: Results = {}
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryDirectory() as folder:
        while names:
            failure = _spawn(scenario, names, world_size, Path(folder), deadline)
            done, partial_errors = _merge(Path(folder), world_size)
            results.update(done)
            names = [name for name in names if name not in done]
            if failure is None or not names:
                break
            failed, names = names[0], names[1:]
            results[failed] = {"error": partial_errors.get(failed) or f"process died: {failure}"}
            if failed not in partial_errors:  # a crash: the engine's other checks are skipped
                skipped = [n for n in names if engine_of[n] == engine_of[failed]]
                for name in skipped:
                    results[name] = {"error": f"not run: {failed} crashed a process ({failure})"}
                names = [n for n in names if n not in skipped]
    return results


def _spawn(scenario: str, names: list[str], world_size: int, folder: Path,
           deadline: float) -> str | None:
    """Run ``names`` once; None if every process finished, else what went wrong."""
    for rank in range(world_size):
        (folder / f"rank{rank}.pt").unlink(missing_ok=True)
    context = mp.start_processes(
        _entry, args=(world_size, free_port(), scenario, names, str(folder)),
        nprocs=world_size, join=False, start_method="spawn",
    )
    try:
        while not context.join(timeout=1.0):
            if time.monotonic() > deadline:
                return "timed out"
    except (mp.ProcessExitedException, mp.ProcessRaisedException) as error:
        return str(error).strip().splitlines()[-1]
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    return None


def _merge(folder: Path, world_size: int) -> tuple[Results, dict[str, str]]:
    """The checks every rank finished (rank 0's numbers, every rank's error), and the errors
    of checks only some ranks finished."""
    per_rank = []
    for rank in range(world_size):
        path = folder / f"rank{rank}.pt"
        per_rank.append(torch.load(path, weights_only=False) if path.exists() else {})
    done: Results = {}
    partial_errors: dict[str, str] = {}
    for name in {name for results in per_rank for name in results}:
        entries = [results[name] for results in per_rank if name in results]
        errors = "\n".join(entry["error"] for entry in entries if "error" in entry)
        if len(entries) == world_size:
            done[name] = {**per_rank[0][name], **({"error": errors} if errors else {})}
        elif errors:
            partial_errors[name] = errors
    return done, partial_errors


def _entry(rank: int, world_size: int, port: int, scenario: str, names: list[str],
           folder: str) -> None:
    torch.set_num_threads(1)
    store = dist.TCPStore("127.0.0.1", port, world_size, is_master=rank == 0,
                          timeout=COLLECTIVE_TIMEOUT)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size,
                            timeout=COLLECTIVE_TIMEOUT)
    checks = {check.name: check for check in plan(scenario)}
    results: Results = {}
    out = Path(folder) / f"rank{rank}.pt"
    try:
        for index, name in enumerate(names):
            results[name] = _run_check(checks[name].run, Path(folder))
            torch.save(results, out.with_suffix(".tmp"))
            os.replace(out.with_suffix(".tmp"), out)
            _leave_together(store, index, "error" in results[name])
    finally:
        dist.destroy_process_group()


def _leave_together(store: dist.Store, index: int, failed: bool) -> None:
    """Wait until every rank has finished check ``index``; raise (ending this launch) unless
    all of them succeeded or all of them failed, since the process group may then be out of
    step."""
    world_size, rank = dist.get_world_size(), dist.get_rank()
    store.set(f"check{index}/rank{rank}", "error" if failed else "ok")
    keys = [f"check{index}/rank{r}" for r in range(world_size)]
    store.wait(keys, RENDEZVOUS_TIMEOUT)
    if len({store.get(k) for k in keys}) > 1:
        raise RuntimeError(f"check {index} failed on some ranks only")


def _run_check(check: Callable[[Path], dict[str, Any]], folder: Path) -> dict[str, Any]:
    """Run one check; an exception becomes the entry's ``error`` (with this rank)."""
    try:
        return check(folder)
    except Exception as error:  # reported by the test that reads this entry
        trace = traceback.format_exc(limit=4)
        return {"error": f"rank {dist.get_rank()}: {error!r}\n{trace}"}


def _local_batch(step: int, dtype=torch.float64):
    """This rank's equal share of the global batch of ``step``."""
    x, y = batch(step, dtype)
    size = BATCH // dist.get_world_size()
    rank = dist.get_rank()
    return x[rank * size:(rank + 1) * size], y[rank * size:(rank + 1) * size]


def _reference(case: Case, engine: str, steps: range, skip: frozenset[int] = frozenset(),
               scale_shape: tuple[int, ...] = (), empty: bool = True,
               dtype: torch.dtype = torch.float64, **overrides: Any) -> TinyNet:
    """One process, the global batch: what the distributed run must equal."""
    model = TinyNet(dtype=dtype, scale_shape=scale_shape, empty=empty)
    optimizer = build_for(case, model, engine, **overrides)
    for step in steps:
        if step in skip:
            continue
        x, y = batch(step, dtype)
        optimizer.zero_grad()
        loss_of(model, x, y).backward()
        optimizer.step()
    return model


def _ranks_agree(tensors: list[torch.Tensor]) -> bool:
    """Whether every rank holds the same values, bit for bit."""
    flat = torch.cat([t.detach().reshape(-1) for t in tensors])
    gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    return all(torch.equal(g, gathered[0]) for g in gathered)


# -- DistributedDataParallel --------------------------------------------------------------------
def _ddp_run(case: Case, engine: str, nan_step: int | None = None, **overrides: Any):
    from torch.nn.parallel import DistributedDataParallel

    model = TinyNet()
    ddp = DistributedDataParallel(model)
    optimizer = build_for(case, model, engine, **overrides)
    for step in range(STEPS):
        x, y = _local_batch(step)
        if step == nan_step and dist.get_rank() == dist.get_world_size() - 1:
            x = x.clone()
            x[0, 0] = math.nan
        optimizer.zero_grad()
        loss_of(ddp, x, y).backward()
        optimizer.step()
    return model, optimizer


def _ddp_check(case: Case, engine: str, folder: Path) -> dict[str, Any]:
    model, _ = _ddp_run(case, engine)
    expected = _reference(case, engine, range(STEPS))
    params = list(model.parameters())
    return {"error_vs_single": max_relative_error(params, list(expected.parameters())),
            "ranks_agree": _ranks_agree(params)}


def _ddp_nonfinite_check(case: Case, engine: str, folder: Path) -> dict[str, Any]:
    """A NaN in the last rank's inputs at one step: every rank skips it (as one process
    does on the global batch) and the replicas stay identical."""
    model, optimizer = _ddp_run(case, engine, nan_step=NAN_STEP, skip_nonfinite=True)
    expected = _reference(case, engine, range(STEPS), skip=frozenset({NAN_STEP}),
                          skip_nonfinite=True)
    params = list(model.parameters())
    return {"error_vs_single": max_relative_error(params, list(expected.parameters())),
            "ranks_agree": _ranks_agree(params),
            "skips": [g.get("nonfinite_skips", 0) for g in optimizer.param_groups]}


def _ddp_format_check(case: Case, engine: str, state_format: str,
                      folder: Path) -> dict[str, Any]:
    """Moments in a state format: stochastic rounding draws the same bits on every rank."""
    options = {"state_format": state_format, "min_8bit_size": 0}
    model, optimizer = _ddp_run(case, engine, **options)
    expected = _reference(case, engine, range(STEPS), **options)
    params = list(model.parameters())
    inner = getattr(optimizer, "optimizer", optimizer)
    state = [v for p in params for k, v in inner.state[p].items() if k != "step"]
    return {"error_vs_single": max_relative_error(params, list(expected.parameters())),
            "ranks_agree": _ranks_agree(params) and _ranks_agree(
                [t.double() for t in state])}


FORMAT_CASES = ("Adam-amsgrad", "RAdam", "Ranger")


def ddp_plan() -> list[Check]:
    checks = [Check(key(case, engine), engine, partial(_ddp_check, case, engine))
              for case in CASES for engine in engines_of(case)]
    checks += [Check(key(case, engine, state_format), engine,
                     partial(_ddp_format_check, case, engine, state_format))
               for case in RULE_CASES if case.name in FORMAT_CASES
               for engine in engines_of(case) for state_format in ("8bit", "bfloat16")]
    checks += [Check(key(case, engine, "nonfinite"), engine,
                     partial(_ddp_nonfinite_check, case, engine))
               for case in RULE_CASES for engine in engines_of(case)]
    return checks


def ddp_wide_plan() -> list[Check]:
    """For more ranks: every optimizer once, on the engine it runs by default here."""
    return [Check(key(case, engines_of(case)[-1]), engines_of(case)[-1],
                  partial(_ddp_check, case, engines_of(case)[-1])) for case in CASES]


# -- ZeroRedundancyOptimizer --------------------------------------------------------------------
def _zero(case: Case, engine: str, model: TinyNet, **overrides: Any):
    from torch.distributed.optim import ZeroRedundancyOptimizer

    kwargs = {**case.kwargs, **ENGINE_OPTIONS[engine], **overrides}
    return ZeroRedundancyOptimizer(model_groups(model, case), optimizer_class=case.build,
                                   **kwargs)


def _zero_train(ddp, optimizer, steps: range, nan_param: torch.Tensor | None = None) -> None:
    for step in steps:
        x, y = _local_batch(step)
        optimizer.zero_grad()
        loss_of(ddp, x, y).backward()
        if step == NAN_STEP and nan_param is not None:
            nan_param.grad.view(-1)[0] = math.nan
        optimizer.step()


def _zero_check(case: Case, engine: str, folder: Path, **overrides: Any) -> dict[str, Any]:
    """Train, compare with one process; consolidate, save, resume into a fresh ZeRO (against
    the uninterrupted run) and into a plain optimizer in one process."""
    from torch.nn.parallel import DistributedDataParallel

    model = TinyNet()
    ddp = DistributedDataParallel(model)
    zero = _zero(case, engine, model, **overrides)
    _zero_train(ddp, zero, range(STEPS))
    single = _reference(case, engine, range(STEPS), **overrides)
    entry: dict[str, Any] = {
        "error_vs_single": max_relative_error(list(model.parameters()),
                                              list(single.parameters())),
    }
    zero.consolidate_state_dict(to=0)
    path = folder / f"zero-{case.name}-{engine}-{overrides.get('state_format')}.pt"
    if dist.get_rank() == 0:
        torch.save({"model": model.state_dict(), "optimizer": zero.state_dict()}, path)
    dist.barrier()
    checkpoint = torch.load(path, weights_only=True)

    fresh = TinyNet(seed=1)
    fresh.load_state_dict(checkpoint["model"])
    fresh_ddp = DistributedDataParallel(fresh)
    resumed = _zero(case, engine, fresh, **overrides)
    resumed.load_state_dict(checkpoint["optimizer"])
    more = range(STEPS, STEPS + MORE_STEPS)
    _zero_train(fresh_ddp, resumed, more)
    _zero_train(ddp, zero, more)
    entry["resumed_equal"] = all(
        torch.equal(a, b) for a, b in zip(fresh.parameters(), model.parameters())
    )

    checkpoint = torch.load(path, weights_only=True)  # ZeRO's load wrote into the last one
    plain_model = TinyNet(seed=1)
    plain_model.load_state_dict(checkpoint["model"])
    plain = build_for(case, plain_model, engine, **overrides)
    plain.load_state_dict(checkpoint["optimizer"])
    for step in more:
        x, y = batch(step)
        plain.zero_grad()
        loss_of(plain_model, x, y).backward()
        plain.step()
    entry["plain_error"] = max_relative_error(list(plain_model.parameters()),
                                              list(model.parameters()))
    return entry


def _zero_nonfinite_check(case: Case, engine: str, folder: Path) -> dict[str, Any]:
    """A NaN in the gradient of a parameter that the last rank updates: the step must be
    skipped on every rank, as it is by one optimizer over all parameters."""
    from torch.nn.parallel import DistributedDataParallel

    model = TinyNet()
    ddp = DistributedDataParallel(model)
    zero = _zero(case, engine, model, skip_nonfinite=True)
    params = list(model.parameters())
    local = [i for g in zero.optim.param_groups for i, p in enumerate(params)
             if any(p is q for q in g["params"]) and p.numel()]
    owners: list[list[int] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(owners, local)
    _zero_train(ddp, zero, range(STEPS), nan_param=params[owners[-1][0]])
    single = _reference(case, engine, range(STEPS), skip=frozenset({NAN_STEP}),
                        skip_nonfinite=True)
    return {"error_vs_single": max_relative_error(list(model.parameters()),
                                                  list(single.parameters()))}


def zero_plan() -> list[Check]:
    checks = [Check(key(case, engine), engine, partial(_zero_check, case, engine))
              for case in ZERO_CASES for engine in engines_of(case)]
    radam = next(case for case in ZERO_CASES if case.name == "RAdam")
    checks.append(Check(key(radam, "foreach", "nonfinite"), "foreach",
                        partial(_zero_nonfinite_check, radam, "foreach")))
    checks += [Check(key(radam, engine, "8bit"), engine,
                     partial(_zero_check, radam, engine, state_format="8bit", min_8bit_size=0))
               for engine in engines_of(radam)]
    return checks


# -- FSDP2 (fully_shard, DTensor parameters) ----------------------------------------------------
UNEVEN = (1,)  # the scale's shape: the last of two ranks holds an empty shard of it
EVEN = (3,)  # every one of two ranks holds part of every parameter


def _sharded(seed: int = 0, scale_shape: tuple[int, ...] = UNEVEN,
             dtype: torch.dtype = torch.float64) -> TinyNet:
    from torch.distributed.fsdp import fully_shard

    model = TinyNet(dtype=dtype, seed=seed, scale_shape=scale_shape, empty=False)
    fully_shard(model.first)
    fully_shard(model.second)
    fully_shard(model)
    return model


def _unsharded(case: Case, engine: str, steps: range, scale_shape: tuple[int, ...] = UNEVEN,
               skip: frozenset[int] = frozenset(), dtype: torch.dtype = torch.float64,
               **overrides: Any) -> list[torch.Tensor]:
    model = _reference(case, engine, steps, skip=skip, scale_shape=scale_shape, empty=False,
                       dtype=dtype, **overrides)
    return [p.detach() for p in model.parameters()]


def _full(model: TinyNet) -> list[torch.Tensor]:
    return [p.full_tensor().detach().clone() for p in model.parameters()]


def _local(model: TinyNet) -> list[torch.Tensor]:
    return [p.to_local().detach().clone() for p in model.parameters()]


def _fsdp_train(model, optimizer, steps: range, nan_step: int | None = None) -> None:
    for step in steps:
        x, y = _local_batch(step, next(model.parameters()).dtype)
        optimizer.zero_grad()
        loss_of(model, x, y).backward()
        if step == nan_step and dist.get_rank() == 0:
            model.first.weight.grad.to_local().view(-1)[0] = math.nan
        optimizer.step()


def _fsdp_check(case: Case, engine: str, full_state_dict: bool, folder: Path,
                dtype: torch.dtype = torch.float64, **overrides: Any) -> dict[str, Any]:
    """Sharded training against the unsharded run; then the optimizer state through
    get_optimizer_state_dict/set_optimizer_state_dict into fresh objects, whose first (lr = 0)
    step must not move parameters or Lookahead's counter; then both runs continue."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    model = _sharded(dtype=dtype)
    optimizer = build_for(case, model, engine, **overrides)
    _fsdp_train(model, optimizer, range(STEPS))
    entry: dict[str, Any] = {
        "error_vs_unsharded": max_relative_error(
            _full(model), _unsharded(case, engine, range(STEPS), dtype=dtype, **overrides)),
    }
    if full_state_dict:
        get_options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        set_options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    else:
        get_options = set_options = StateDictOptions()
    model_state = get_model_state_dict(model)
    saved = get_optimizer_state_dict(model, optimizer, options=get_options)

    fresh = _sharded(seed=1, dtype=dtype)
    set_model_state_dict(fresh, model_state)
    fresh_optimizer = build_for(case, fresh, engine, **overrides)
    before = _local(fresh)
    get_optimizer_state_dict(fresh, fresh_optimizer)  # creates the state with an lr = 0 step
    entry["init_moved_params"] = not all(
        torch.equal(a, b) for a, b in zip(_local(fresh), before)
    )
    entry["init_counters"] = [g.get("lookahead_step", 0) for g in fresh_optimizer.param_groups]
    set_optimizer_state_dict(fresh, fresh_optimizer, saved, options=set_options)
    entry["loaded_counters"] = [g.get("lookahead_step") for g in fresh_optimizer.param_groups]
    entry["saved_counters"] = [g.get("lookahead_step") for g in optimizer.param_groups]
    more = range(STEPS, STEPS + MORE_STEPS)
    _fsdp_train(fresh, fresh_optimizer, more)
    _fsdp_train(model, optimizer, more)
    entry["resumed_equal"] = all(torch.equal(a, b) for a, b in zip(_full(fresh), _full(model)))
    if overrides.get("state_format"):
        entry["format_problems"] = (_format_problems(model, optimizer, overrides["state_format"])
                                    + _format_problems(fresh, fresh_optimizer,
                                                       overrides["state_format"]))
    return entry


def _format_problems(model: TinyNet, optimizer, state_format: str) -> list[str]:
    """What is wrong with the formatted state of sharded parameters: each moment a DTensor laid
    out as its parameter, in the format's dtype; 8-bit scales a DTensor of the sharded shape
    whose row holds this rank's blocks, then zeros; the codes decode to finite values."""
    from rectified import formats
    from rectified.formats import sharded

    problems, seen = [], 0
    inner = getattr(optimizer, "optimizer", optimizer)  # Ranger: the moments are its RAdam's
    for name, param in model.named_parameters():
        entry = inner.state[param]
        for key in [k for k in entry if k in formats.MOMENT_KINDS]:
            seen += 1
            value, where = entry[key], f"{name}.{key}"
            if not sharded.is_dtensor(value) or value.placements != param.placements:
                problems.append(f"{where} is a {type(value).__name__} placed otherwise")
                continue
            wanted = torch.uint8 if state_format == "8bit" else torch.bfloat16
            if value.dtype != wanted:
                problems.append(f"{where} is {value.dtype}")
            if state_format != "8bit":
                continue
            scales = entry.get(formats.scales_key(key))
            if not sharded.is_dtensor(scales) or tuple(scales.shape) != formats.scales_shape(param):
                problems.append(f"{where}'s scales are {scales!r}")
                continue
            row = scales.to_local().reshape(-1)
            used = formats.codes.scale_count(param.to_local().numel())
            if row[used:-sharded.NAME].any():
                problems.append(f"{where}'s scales beyond this rank's blocks are not zero")
            if sharded.blocked_elsewhere(scales, param):
                problems.append(f"{where}'s scales name another shard")
            if not torch.isfinite(formats.stored_moment(entry, key).to_local()).all():
                problems.append(f"{where} decodes to non-finite values")
    return problems if seen else ["no moment in the optimizer's state"]


def _fsdp_nonfinite_check(case: Case, engine: str, scale_shape: tuple[int, ...],
                          folder: Path) -> dict[str, Any]:
    """A NaN in rank 0's shard of one gradient only: every rank must skip the step."""
    model = _sharded(scale_shape=scale_shape)
    optimizer = build_for(case, model, engine, skip_nonfinite=True)
    _fsdp_train(model, optimizer, range(STEPS), nan_step=NAN_STEP)
    expected = _unsharded(case, engine, range(STEPS), scale_shape=scale_shape,
                          skip=frozenset({NAN_STEP}), skip_nonfinite=True)
    return {"error_vs_unsharded": max_relative_error(_full(model), expected),
            "skips": [g.get("nonfinite_skips", 0) for g in optimizer.param_groups]}


def _fsdp_misplaced_gradient_check(case: Case, engine: str, folder: Path) -> dict[str, Any]:
    """A Shard(0) DTensor parameter stored in 8 bits whose gradient is replicated: its step
    cannot run on the local shard alone, so it must raise before anything moves."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    generator = torch.Generator().manual_seed(7)
    whole = torch.randn(8, 64, generator=generator)
    param = torch.nn.Parameter(distribute_tensor(whole, mesh, [Shard(0)]))
    optimizer = case.build([param], **{**case.kwargs, **ENGINE_OPTIONS[engine],
                                        "state_format": "8bit", "min_8bit_size": 0})
    param.grad = distribute_tensor(torch.randn(8, 64, generator=generator), mesh, [Replicate()])
    before = param.to_local().clone()
    try:
        optimizer.step()
        message = ""
    except RuntimeError as error:
        message = str(error)
    return {"message": message, "moved": not torch.equal(param.to_local(), before),
            "state": sorted(optimizer.state[param])}


# (mesh shape, placements) of DTensor parameters beyond FSDP2's Shard(0), on 2 processes:
# columns; HSDP-like (replicated over one mesh dimension, sharded over the other); sharded over
# two mesh dimensions; replicated. A number d is Shard(d), None is Replicate().
PLACEMENTS = {
    "shard1": ((2,), (1,)),
    "replicate-shard0": ((1, 2), (None, 0)),
    "shard0-shard1": ((2, 1), (0, 1)),
    "replicate": ((2,), (None,)),
}


def _dtensor_placements_check(case: Case, engine: str, name: str,
                              folder: Path) -> dict[str, Any]:
    """A DTensor parameter placed as ``PLACEMENTS[name]`` with 8-bit state: trained within a
    code step of a plain tensor, its state laid out as the parameter, and its state_dict
    resumed into a fresh optimizer bit for bit."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    shape, dims = PLACEMENTS[name]
    mesh = init_device_mesh("cpu", shape)
    placements = [Replicate() if dim is None else Shard(dim) for dim in dims]
    generator = torch.Generator().manual_seed(11)
    whole = torch.randn(6, 700, generator=generator)
    grads = [torch.randn(6, 700, generator=generator) for _ in range(9)]
    options = {**case.kwargs, **ENGINE_OPTIONS[engine], "state_format": "8bit",
               "min_8bit_size": 0}

    def run(param, steps, optimizer=None, place=lambda g: g):
        optimizer = optimizer or case.build([param], **options)
        for g in steps:
            param.grad = place(g.clone())
            optimizer.step()
        return optimizer

    plain = torch.nn.Parameter(whole.clone())
    run(plain, grads)
    param = torch.nn.Parameter(distribute_tensor(whole.clone(), mesh, placements))

    def place(g):
        return distribute_tensor(g, mesh, placements)

    optimizer = run(param, grads[:6], place=place)
    fresh = torch.nn.Parameter(distribute_tensor(whole.clone(), mesh, placements))
    fresh.data.copy_(param.data)
    fresh_optimizer = case.build([fresh], **options)
    fresh_optimizer.load_state_dict(optimizer.state_dict())
    run(param, grads[6:], optimizer, place)
    run(fresh, grads[6:], fresh_optimizer, place)

    class One(torch.nn.Module):
        def __init__(self, weight):
            super().__init__()
            self.weight = weight

    return {"error_vs_plain": max_relative_error([param.full_tensor()], [plain.detach()]),
            "format_problems": _format_problems(One(param), optimizer, "8bit"),
            "resumed_equal": torch.equal(fresh.to_local(), param.to_local())}


def _resharded_checkpoint_check(case: Case, engine: str, folder: Path) -> dict[str, Any]:
    """8-bit state saved with torch.distributed.checkpoint from a Shard(0) parameter and loaded
    for the same parameter placed by Shard(1): the scales have the same shape, so the load
    goes through, but each row of scales still names its old shard. The optimizer must refuse
    the state (on load, or before its next step moves anything), never step with codes and
    scales that do not belong together."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    generator = torch.Generator().manual_seed(5)
    whole = torch.randn(512, 512, generator=generator)
    grads = [torch.randn(512, 512, generator=generator) for _ in range(3)]
    options = {**case.kwargs, **ENGINE_OPTIONS[engine], "state_format": "8bit"}

    class One(torch.nn.Module):
        def __init__(self, weight):
            super().__init__()
            self.weight = weight

    def trained(dim: int, steps: list[torch.Tensor]):
        param = torch.nn.Parameter(distribute_tensor(whole.clone(), mesh, [Shard(dim)]))
        optimizer = case.build([param], **options)
        for g in steps:
            param.grad = distribute_tensor(g, mesh, [Shard(dim)])
            optimizer.step()
        return One(param), param, optimizer

    model, _, optimizer = trained(0, grads)
    dcp.save({"optim": get_optimizer_state_dict(model, optimizer)}, checkpoint_id=folder)
    other, param, other_optimizer = trained(1, grads[:1])
    before = param.to_local().clone()
    message = ""
    try:
        loaded = {"optim": get_optimizer_state_dict(other, other_optimizer)}
        dcp.load(loaded, checkpoint_id=folder)
        set_optimizer_state_dict(other, other_optimizer, loaded["optim"])
        param.grad = distribute_tensor(grads[0], mesh, [Shard(1)])
        other_optimizer.step()
    except (RuntimeError, ValueError) as error:
        message = str(error)
    return {"message": message, "moved": not torch.equal(param.to_local(), before)}


SWITCHES = ((4, None), (4, "8bit"), (3, "bfloat16"), (3, None))  # (steps, state_format)


def _switching(model, optimizer, train: Callable[..., None],
               check: Callable[[], list[str]] | None = None) -> list[str]:
    """Train through :data:`SWITCHES`, changing every group's state_format between steps (the
    optimizer converts its state); ``check`` after the 8-bit phase."""
    problems: list[str] = []
    start = 0
    for steps, state_format in SWITCHES:
        for group in optimizer.param_groups:
            group["state_format"] = state_format
        train(model, optimizer, range(start, start + steps))
        start += steps
        if state_format == "8bit" and check is not None:
            problems = check()
    return problems


def _fsdp_switch_check(case: Case, engine: str, folder: Path) -> dict[str, Any]:
    """A sharded run whose groups change state_format between steps (float32, 8-bit,
    bfloat16, float32): the state converts shard by shard, and training stays within a code
    step of the unsharded run that changes alike."""
    model = _sharded()
    optimizer = build_for(case, model, engine, min_8bit_size=0)
    problems = _switching(model, optimizer, _fsdp_train,
                          lambda: _format_problems(model, optimizer, "8bit"))
    single = TinyNet(scale_shape=UNEVEN, empty=False)
    single_optimizer = build_for(case, single, engine, min_8bit_size=0)

    def train(model, optimizer, steps):
        for step in steps:
            x, y = batch(step)
            optimizer.zero_grad()
            loss_of(model, x, y).backward()
            optimizer.step()

    _switching(single, single_optimizer, train)
    return {"format_problems": problems,
            "error_vs_unsharded": max_relative_error(
                _full(model), [p.detach() for p in single.parameters()])}


FSDP_FULL_STATE_CASES = ("RAdam", "Ranger", "AdaBound")
FSDP_EMPTY_SHARD_CASE = "RAdam"
# Every optimizer that takes a state format; the checks of odd placements, misplaced gradients
# and format changes (the same code for every rule) run for the two step operations.
FSDP_FORMAT_CASES = ("Adam", "Adam-amsgrad", "AdamW", "RAdam", "NAdam", "AdaBound", "AMSBound",
                     "Ranger")
FSDP_FORMAT_DEEP_CASES = ("RAdam", "AdaBound")


def fsdp_plan() -> list[Check]:
    checks = [Check(key(case, engine), engine, partial(_fsdp_check, case, engine, False))
              for case in CASES for engine in engines_of(case)]
    for case in CASES:
        if case.name in FSDP_FULL_STATE_CASES:
            checks.append(Check(key(case, "foreach", "full-state-dict"), "foreach",
                                partial(_fsdp_check, case, "foreach", True)))
    # The skip decision is made before any engine runs: the reference engine stands for all.
    checks += [Check(key(case, "reference", "nonfinite"), "reference",
                     partial(_fsdp_nonfinite_check, case, "reference", EVEN))
               for case in RULE_CASES]
    # State formats block each rank's shard: they must train like the unsharded run (within a
    # code step), checkpoint and resume, sharded and through a full state dict.
    for case in RULE_CASES:
        if case.name not in FSDP_FORMAT_CASES:
            continue
        for engine in engines_of(case):
            for state_format in ("8bit", "bfloat16"):
                checks.append(Check(key(case, engine, state_format), engine, partial(
                    _fsdp_check, case, engine, False, state_format=state_format,
                    min_8bit_size=0)))
        checks.append(Check(key(case, "fused", "8bit-full-state-dict"), "fused", partial(
            _fsdp_check, case, "fused", True, state_format="8bit", min_8bit_size=0)))
        for state_format in ("8bit", "bfloat16"):  # float32: the one-pass kernel's shards
            checks.append(Check(key(case, "fused", f"{state_format}-float32"), "fused", partial(
                _fsdp_check, case, "fused", False, dtype=torch.float32,
                state_format=state_format, min_8bit_size=0)))
        checks.append(Check(key(case, "fused", "8bit-bfloat16-stochastic"), "fused", partial(
            _fsdp_check, case, "fused", False, dtype=torch.bfloat16, state_format="8bit",
            min_8bit_size=0, param_rounding="stochastic")))
        if case.name not in FSDP_FORMAT_DEEP_CASES:
            continue
        checks.append(Check(key(case, "fused", "misplaced-gradient"), "fused", partial(
            _fsdp_misplaced_gradient_check, case, "fused")))
        checks.append(Check(key(case, "fused", "resharded-checkpoint"), "fused", partial(
            _resharded_checkpoint_check, case, "fused")))
        for engine in engines_of(case):
            checks.append(Check(key(case, engine, "switching-formats"), engine, partial(
                _fsdp_switch_check, case, engine)))
            checks += [Check(key(case, engine, f"placed-{name}"), engine, partial(
                _dtensor_placements_check, case, engine, name)) for name in PLACEMENTS]
    empty_shard = next(case for case in CASES if case.name == FSDP_EMPTY_SHARD_CASE)
    checks.append(Check(key(empty_shard, "foreach", "nonfinite-empty-shard"), "foreach",
                        partial(_fsdp_nonfinite_check, empty_shard, "foreach", UNEVEN)))
    return checks


PLANS: dict[str, Callable[[], list[Check]]] = {
    "ddp": ddp_plan,
    "ddp-wide": ddp_wide_plan,
    "zero": zero_plan,
    "fsdp": fsdp_plan,
}


def plan(scenario: str) -> list[Check]:
    """The checks of a scenario, in the order they run (the same in every process)."""
    return PLANS[scenario]()
