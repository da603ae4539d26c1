"""What the Adam-2k and untuned-warmup verdicts say together about the variance explanation.

Liu et al. (arXiv 1908.03265) explain Adam's failure without warmup by the variance of its
adaptive learning rate while v has seen few gradients; Adam-2k tests that directly, giving v
2 / (1 - β2) samples before training with the learning rate untouched. Ma & Yarats
(arXiv 1910.04209) argue that RAdam helps as a warmup does, by keeping the first updates small,
and that an untuned warmup over 2 / (1 - β2) steps does as well. The paragraph written here is
chosen by the two verdicts' statuses, so it always says what this run found.
"""

from __future__ import annotations

from rectified.experiments import verdicts
from rectified.experiments.sections.common import SectionResult

KEY = "discussion"
TITLE = "What Adam-2k and the untuned warmup say about the variance explanation"
CLAIM = ("Liu et al. (arXiv 1908.03265): Adam fails without warmup because its adaptive "
         "learning rate has a large variance while v has few samples. Ma & Yarats (arXiv "
         "1910.04209): RAdam's benefit is that of a warmup, which an untuned warmup over "
         "2 / (1 - β2) steps matches.")

RESCUE = {
    verdicts.REPRODUCED: "Adam-2k rescues Adam: enough samples of v, with the learning rate "
    "unchanged, remove the failure, as the variance explanation predicts.",
    verdicts.NOT_REPRODUCED: "No length of the v-only phase up to 2 / (1 - β2) rescues Adam: "
    "samples of v alone do not remove the failure, so the variance of the adaptive learning "
    "rate is not the whole story; the size of the first updates, which a warmup and RAdam's "
    "r_t both keep small, matters as well.",
    verdicts.INCONCLUSIVE: "Whether Adam-2k rescues Adam is inconclusive: the seeds do not "
    "separate it from plain Adam or from Adam with warmup.",
    verdicts.BUDGET_TOO_SHORT: "The runs are too short to test Adam-2k (see its section).",
}
UNTUNED = {
    verdicts.REPRODUCED: "Adam with the untuned warmup does as well as RAdam: RAdam's benefit "
    "is reached by a warmup rule of thumb, as Ma & Yarats argue.",
    verdicts.NOT_REPRODUCED: "Adam with the untuned warmup falls short of RAdam: the "
    "rectification does more than a warmup of the same length.",
    verdicts.INCONCLUSIVE: "Whether the untuned warmup does as well as RAdam is inconclusive "
    "at these seeds.",
    verdicts.BUDGET_TOO_SHORT: "The runs are too short to compare the untuned warmup with "
    "RAdam (see its section).",
}
TOGETHER = {
    (verdicts.REPRODUCED, verdicts.REPRODUCED):
        "Together the two views agree here: v's variance explains the failure (Adam-2k), and a "
        "warmup as long as v's memory, 2 / (1 - β2), removes it as well as the rectification "
        "does. RAdam's r_t is one warmup of that length among others; the variance argument "
        "explains why the length scales with 1 / (1 - β2).",
    (verdicts.NOT_REPRODUCED, verdicts.REPRODUCED):
        "Together they side with Ma & Yarats: a warmup helps by keeping the early updates "
        "small, not by waiting for v to gather samples.",
    (verdicts.REPRODUCED, verdicts.NOT_REPRODUCED):
        "Together they side with Liu et al.: the variance explanation holds, and the "
        "rectification does better than a generic warmup of the same length.",
    (verdicts.NOT_REPRODUCED, verdicts.NOT_REPRODUCED):
        "Neither explanation is borne out at this scale: v's samples alone do not help, and "
        "the untuned warmup does not match RAdam.",
}


def _status(result: SectionResult | None, keyword: str) -> str | None:
    if result is None:
        return None
    found = [v.status for v in result.verdicts if keyword in v.claim]
    return found[-1] if found else None


def either(statuses: list[str]) -> str:
    """Status of "one of the untuned warmups does as well as RAdam": too short if any part is,
    reproduced if one is, not reproduced if all are not, inconclusive otherwise."""
    if verdicts.BUDGET_TOO_SHORT in statuses:
        return verdicts.BUDGET_TOO_SHORT
    if verdicts.REPRODUCED in statuses:
        return verdicts.REPRODUCED
    if statuses and set(statuses) == {verdicts.NOT_REPRODUCED}:
        return verdicts.NOT_REPRODUCED
    return verdicts.INCONCLUSIVE


def variance_explanation(results: list[SectionResult]) -> SectionResult | None:
    """A section of notes reading the Adam-2k and untuned verdicts together (None without
    both sections)."""
    by_key = {r.key: r for r in results}
    rescue = _status(by_key.get("adam2k"), "rescues Adam")
    linear = _status(by_key.get("untuned"), "untuned linear")
    exponential = _status(by_key.get("untuned"), "untuned exponential")
    if rescue is None or linear is None or exponential is None:
        return None
    untuned = either([linear, exponential])
    result = SectionResult(KEY, TITLE, CLAIM)
    result.notes.append(f"Adam-2k: {RESCUE[rescue]}")
    result.notes.append(
        "Untuned warmup on the Transformer (linear: " + linear + "; exponential: "
        + exponential + f"; read together as one of them: {untuned}): "
        + UNTUNED[untuned])
    grid = [v for v in by_key.get("warmup", SectionResult("", "", "")).verdicts
            if "untuned" in v.claim]
    if grid:
        result.notes.append("On the warmup grid (digits): " + "; ".join(
            f"{v.claim}: {v.status}" for v in grid) + ".")
    result.notes.append(TOGETHER.get(
        (rescue, untuned),
        "Together they do not decide between the two explanations at this budget; the --full "
        "budget runs more seeds and longer runs."))
    return result
