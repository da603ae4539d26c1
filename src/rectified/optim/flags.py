"""torch.optim's implementation flags (``foreach``, ``fused``, ``capturable``,
``differentiable``): the combinations and devices they refuse, with torch.optim's messages.

* ``fused`` with ``foreach`` or with ``differentiable`` is refused when a group is added.
* ``differentiable=True`` steps run on the reference engine with autograd on (whatever
  ``foreach`` says): derivatives flow to the parameters, gradients and state a step starts from,
  not to hyperparameters, which the rules read as Python numbers; a hyperparameter tensor that
  requires grad is refused rather than silently given no derivative.
* ``capturable=True`` is a CUDA-graph option: as in torch.optim, a step refuses parameters on
  devices that cannot be captured (the CPU), before anything moves, unless ``fused=True``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor
from torch.optim.optimizer import _get_capturable_supported_devices


def check_engine_flags(group: Mapping[str, Any]) -> None:
    """Raise ``RuntimeError`` for flags that cannot go together (torch.optim's messages), and
    ``ValueError`` for a hyperparameter tensor that asks for a derivative."""
    if group.get("fused"):
        if group.get("differentiable"):
            raise RuntimeError("`fused` does not support `differentiable`")
        if group.get("foreach"):
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
    if not group.get("differentiable"):
        return
    for name, value in group.items():
        if name == "params":
            continue
        values = value if isinstance(value, tuple | list) else (value,)
        if any(isinstance(v, Tensor) and v.requires_grad for v in values):
            raise ValueError(
                f"Invalid {name}: a tensor that requires grad; differentiable=True "
                "differentiates a step with respect to the parameters, gradients and state, "
                f"not its hyperparameters (pass {name} detached)"
            )


def check_capturable_devices(group: Mapping[str, Any]) -> None:
    """With ``capturable=True``, raise ``AssertionError`` (as torch.optim) unless every
    parameter is on a device whose steps can be captured in a graph, or the group asks for
    ``fused=True`` (torch's fused kernels step CPU parameters with ``capturable=True``)."""
    if not group.get("capturable") or group.get("fused"):
        return
    supported = _get_capturable_supported_devices()
    devices = sorted({p.device.type for p in group["params"]} - set(supported))
    if devices:
        raise AssertionError(
            "If capturable=True, params and state_steps must be on supported devices: "
            f"{supported}. Got parameters on {', '.join(devices)}; capturable=True is for "
            "CUDA graphs, use capturable=False there."
        )

