"""The reproduce suite's sections, one module per part of the paper (see
:mod:`rectified.experiments.suite` for their order)."""
