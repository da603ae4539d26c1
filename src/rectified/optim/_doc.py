"""Optimizer docstrings, written from what is declared once: the summary, the rule module's
algorithm and reference (rules/), and Args from the ``__init__`` signature and the texts of
:mod:`rectified.optim.hyperparameters`."""

from __future__ import annotations

import inspect
import sys
import textwrap
from collections.abc import Callable, Mapping

from rectified.optim.hyperparameters import HYPERPARAMETERS

PARAMS_DOC = "params: iterable of tensors, of ``(name, tensor)`` pairs, or of param-group dicts."


def arguments(init: Callable[..., None], overrides: Mapping[str, str] | None = None) -> str:
    """The Args section of ``init``'s signature."""
    lines = [PARAMS_DOC]
    for name, parameter in inspect.signature(init).parameters.items():
        if name in ("self", "params") or parameter.kind is parameter.VAR_KEYWORD:
            continue
        entry = HYPERPARAMETERS.get(name)
        doc = (overrides or {}).get(name, entry.doc if entry else "see the class")
        kind = f"{entry.kind}, " if entry else ""
        lines.append(f"{name} ({kind}default {parameter.default!r}): {doc}.")
    return "\n".join(textwrap.fill(line, 92, subsequent_indent="    ") for line in lines)


def with_algorithm(summary: str, rule_module: str, args: str) -> str:
    """``summary``, then the rule module's algorithm and reference, then ``args``."""
    module = sys.modules[rule_module]
    algorithm = textwrap.indent(textwrap.dedent(module.__doc__ or "").strip(), "    ")
    return (
        f"{textwrap.dedent(summary).strip()}\n\n"
        f"Algorithm (``{rule_module}``)::\n\n{algorithm}\n\n"
        f"Args:\n{textwrap.indent(args, '    ')}\n"
    )
