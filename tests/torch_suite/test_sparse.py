"""Sparse gradients, for the optimizers torch's database marks ``supports_sparse`` (SGD and
Adagrad, which seed 000 motivates by sparse data): rectified steps them as torch does, on every
configuration torch tests, or raises the same error type where torch refuses a combination
(e.g. Adagrad's weight decay with sparse gradients)."""

from __future__ import annotations

import pytest
import torch

from tests.torch_suite.cases import (
    DTYPE,
    INFOS,
    NAMES,
    assert_close,
    assert_same_error,
    assert_same_outcome,
    configuration_ids,
    configurations,
    engine_flags,
    fresh,
    ours_class,
    outcome,
    torch_class,
)

SPARSE = [name for name in NAMES if INFOS[name].supports_sparse]
CASES = [(name, index) for name in SPARSE for index in range(len(configurations(name)))]
STEPS = 6
# torch's Adagrad builds sparse tensors without choosing invariant checks, which warns.
pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled")


def _case_id(case):
    name, index = case
    return f"{name}-{configuration_ids(name)[index]}".replace(" ", "_")


def _sparse_gradients(seed: int = 3):
    """Per step: an uncoalesced hybrid COO gradient of a (6, 3) table (rows repeat, as an
    embedding's do when a token occurs twice) and an uncoalesced 1-D one of a (7,) vector; the
    table gets none at step 2."""
    g = torch.Generator().manual_seed(seed)
    sequence = []
    for step in range(STEPS):
        rows = torch.tensor([[0, 4, 0, 2]])
        table = torch.sparse_coo_tensor(rows, torch.randn(4, 3, generator=g, dtype=DTYPE), (6, 3),
                                        check_invariants=True)
        points = torch.tensor([[1, 5, 1]])
        vector = torch.sparse_coo_tensor(points, torch.randn(3, generator=g, dtype=DTYPE), (7,),
                                         check_invariants=True)
        sequence.append([None if step == 2 else table, vector])
    return sequence


def _run(cls, kwargs, flags):
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(6, 3, generator=g, dtype=DTYPE).requires_grad_(),
              torch.randn(7, generator=g, dtype=DTYPE).requires_grad_()]
    optimizer = cls(params, **fresh(kwargs), **flags)
    for grads in _sparse_gradients():
        for p, grad in zip(params, grads):
            p.grad = None if grad is None else grad.clone()
        optimizer.step()
    return optimizer, params


# Every engine hands sparse gradients to the rule's sparse update; the fused one is compared
# with torch's for-loop (torch's fused SGD/Adagrad refuse sparse gradients).
@pytest.mark.parametrize("engine", ["forloop", "foreach", "fused"])
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_sparse_gradients_match_torch(case, engine, request):
    name, index = case
    if engine == "fused":
        request.getfixturevalue("fused_kernel")
    kwargs = configurations(name)[index]
    ours_flags, torch_flags = engine_flags(name, engine)
    assert_same_outcome(lambda: _run(ours_class(name), kwargs, ours_flags),
                        lambda: _run(torch_class(name), kwargs, torch_flags))


def _embedding_run(cls, kwargs):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4, sparse=True), torch.nn.Linear(4, 1))
    model.to(DTYPE)
    optimizer = cls(model.parameters(), **kwargs)
    g = torch.Generator().manual_seed(1)
    for _ in range(STEPS):
        tokens = torch.randint(0, 10, (8,), generator=g)
        optimizer.zero_grad()
        model(tokens).pow(2).mean().backward()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("engine", ["forloop", "foreach", "fused"])
@pytest.mark.parametrize("name", SPARSE)
def test_sparse_embedding_trains_as_torch(name, engine, request):
    """nn.Embedding(sparse=True) beside a dense layer in one group: the usual sparse model."""
    if engine == "fused":
        request.getfixturevalue("fused_kernel")
    kwargs = {"lr": 0.1, "momentum": 0.9} if name == "SGD" else {"lr": 0.1}
    ours_flags, torch_flags = engine_flags(name, engine)
    ours = _embedding_run(ours_class(name), {**kwargs, **ours_flags})
    theirs = _embedding_run(torch_class(name), {**kwargs, **torch_flags})
    for i, (a, e) in enumerate(zip(ours, theirs)):
        assert_close(a, e, f"parameter {i}")


DENSE_ONLY = [name for name in NAMES if not INFOS[name].supports_sparse]


@pytest.mark.parametrize("engine", ["forloop", "foreach", "fused"])
@pytest.mark.parametrize("name", DENSE_ONLY)
def test_sparse_gradients_refused_as_torch(name, engine, request):
    """The optimizers torch refuses sparse gradients on raise its error type before any
    parameter moves; the Adam family names torch's SparseAdam as the alternative."""
    if engine == "fused":
        request.getfixturevalue("fused_kernel")
    ours_flags, torch_flags = engine_flags(name, engine)
    results = []
    for cls, flags in ((torch_class(name), torch_flags), (ours_class(name), ours_flags)):
        dense = torch.ones(3, dtype=DTYPE, requires_grad=True)
        table = torch.ones(4, 2, dtype=DTYPE, requires_grad=True)
        optimizer = cls([dense, table], **flags)
        dense.grad = torch.ones_like(dense)
        table.grad = torch.eye(4, 2, dtype=DTYPE).to_sparse()
        results.append(outcome(optimizer.step))
        assert torch.equal(dense.detach(), torch.ones(3, dtype=DTYPE)), "a parameter moved"
    assert not optimizer.state, "rectified created state before refusing"
    (kind_t, theirs), (kind_o, ours) = results
    assert kind_t == kind_o == "raised"
    assert_same_error(ours, theirs)
    assert f"{name} does not support sparse gradients" in str(ours)
    if name in ("Adam", "AdamW", "RAdam"):
        assert "SparseAdam" in str(ours)



def _other_dtype_run(cls, kwargs, dtype: torch.dtype) -> list[torch.Tensor]:
    """A float32 table and dense parameter, or float64 ones (``dtype``), stepped with float64
    sparse gradients (``Tensor.grad_dtype = None``) and dense float32 ones."""
    generator = torch.Generator().manual_seed(5)
    dense = torch.randn(3, generator=generator).to(dtype).requires_grad_()
    table = torch.randn(6, 3, generator=generator).to(dtype).requires_grad_()
    table.grad_dtype = dense.grad_dtype = None
    optimizer = cls([dense, table], **kwargs)
    for grad, _ in _sparse_gradients():  # float64 (DTYPE); none for the table at one step
        dense.grad = torch.randn(3, generator=generator)
        table.grad = grad
        optimizer.step()
    return [dense.detach().double(), table.detach().double()]


@pytest.mark.parametrize("engine", ["forloop", "foreach", "fused"])
@pytest.mark.parametrize("name", SPARSE)
def test_a_sparse_gradient_of_another_dtype_steps_as_torch(name, engine, request):
    """A float32 table with a float64 sparse gradient beside a dense parameter: torch.optim
    steps it, computing in float64; rectified's Adagrad stepped the dense parameter, advanced
    every counter and then failed. Now the same values as torch (to float32 rounding), and as
    the run with float64 parameters (to float32 rounding of each step)."""
    if engine == "fused":
        request.getfixturevalue("fused_kernel")
    ours_flags, torch_flags = engine_flags(name, engine)
    kwargs = {"lr": 0.1, "momentum": 0.9} if name == "SGD" else {"lr": 0.1}
    ours = _other_dtype_run(ours_class(name), {**kwargs, **ours_flags}, torch.float32)
    theirs = _other_dtype_run(torch_class(name), {**kwargs, **torch_flags}, torch.float32)
    wide = _other_dtype_run(ours_class(name), {**kwargs, **ours_flags}, torch.float64)
    for a, t, e in zip(ours, theirs, wide):
        torch.testing.assert_close(a, t, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)
