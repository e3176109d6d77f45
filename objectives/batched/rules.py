"""What a vectorized group may differ in (:data:`VARIES`), what must be equal (:func:`group_key`), and why a
set of configs cannot be one group (:func:`why_not`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from objectives.batched.coupled import why_not_vmapped
from objectives.config import LoopCommon
from objectives.problems import CoupledProblem
from objectives.weighting import names_with

# What may differ between the members of one group (each member has its own value).
VARIES = (
    "weights",
    "seed",
    "grad_clip (alternating: model_a.grad_clip, model_b.grad_clip)",
    "optimizer.lr (alternating: model_a.optimizer.*, model_b.optimizer.* alike)",
    "optimizer.weight_decay",
    "optimizer.momentum",
    "optimizer.betas",
    "optimizer.schedule (its options; one type per group)",
    "weight_schedule (its options; one type and target per group)",
)

_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def group_key(cfg: LoopCommon) -> str:
    """What must be equal within a group: the config less what :data:`VARIES` (JSON, keys sorted); the
    number of loss weights stays (it sets the loss terms)."""
    d: dict[str, Any] = cfg.model_dump(mode="json")
    d["n_weights"] = len(d.pop("weights"))
    d.pop("seed", None)
    d.pop("grad_clip", None)
    owners = [d, *(d[m] for m in ("model_a", "model_b") if m in d)]  # alternating: per-model settings
    for owner in owners:
        owner.pop("grad_clip", None)
        opt = owner.get("optimizer")
        if opt is None:
            continue
        for key in ("lr", "weight_decay", "momentum", "betas"):
            opt.pop(key)
        opt["schedule"] = {"type": opt["schedule"]["type"]}
    d["weight_schedule"] = {k: d["weight_schedule"][k] for k in ("type", "target")}
    return json.dumps(d, sort_keys=True)


def why_not(cfgs: Sequence[LoopCommon], problem: Any) -> str:
    """Why these configs cannot train as one vectorized group; ``""`` when they can.

    Args:
        cfgs: The members' resolved configs.
        problem: Their (one) built problem.
    """
    first = cfgs[0]
    keys = [json.loads(group_key(c)) for c in cfgs]
    for other in keys[1:]:
        differs = sorted(k for k in set(keys[0]) | set(other) if keys[0].get(k) != other.get(k))
        if differs:
            return f"they differ in {', '.join(differs)} (a group may differ only in {', '.join(VARIES)})"
    if first.weighting.type not in names_with(weights_before_step=True):  # the gradient is Σ w_i ∇L_i
        return (
            f"weighting {first.weighting.type} makes each step's gradient from the member's own losses or "
            f"per-loss gradients (or learns with it); {', '.join(names_with(weights_before_step=True))} are vectorized"
        )
    if first.precision != "fp32":
        return f"precision {first.precision} is not vectorized; fp32 is"
    if first.compile is not False:
        return "compile is not vectorized (the group runs eagerly)"
    coupled = isinstance(problem, CoupledProblem)
    splits = [problem.train] if coupled else [task.train for task in problem.tasks.values()]
    if any(isinstance(split, Dataset) for split in splits):
        return "the training data is a Dataset read by a DataLoader; only tensor data is vectorized"
    models = [problem.make_model_a(), problem.make_model_b()] if coupled else [problem.make_model()]
    for model in models:
        if any(True for _ in model.buffers()):
            return "the model has buffers (e.g. BatchNorm's running statistics), which are not vectorized"
        if any(isinstance(m, _DROPOUT) for m in model.modules()):
            return "the model uses dropout, whose masks would differ from each member's standalone run"
    if coupled and "consistency" in first.loss_terms:
        # The problem's own consistency term runs inside the vmap: one try on two rows says whether it can.
        return why_not_vmapped(problem, *models)
    return ""
