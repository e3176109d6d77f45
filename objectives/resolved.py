"""Resolved configs: what a loop trains — every value fixed (seeds set, the device concrete).

A study file's ``objective:`` may leave ``seed``, ``data_seed`` and ``device: auto`` to the runner;
:func:`resolved` turns such a config into its resolved twin (and checks it), which is what the loops take.
"""

from __future__ import annotations

from pydantic import ValidationError, create_model, field_validator

from objectives.config import LoopCommon


class Resolved:
    """Marker of a resolved config: ``seed`` and ``data_seed`` set, ``device`` concrete (not ``auto``).

    A loop trains only a resolved config; :func:`resolved` makes one (and checks it) from any loop config.
    """


_RESOLVED: dict[type, type] = {}


def resolved_type(config: type[LoopCommon]) -> type[LoopCommon]:
    """The resolved twin of a loop config class: same fields, but seeds required and the device concrete."""
    if issubclass(config, Resolved):
        return config
    if config not in _RESOLVED:

        def concrete(cls: type, v: str) -> str:
            if v == "auto":
                raise ValueError("a resolved config needs a concrete device, not auto")
            return v

        _RESOLVED[config] = create_model(
            f"Resolved{config.__name__}",
            __base__=(config, Resolved),
            __validators__={"_concrete_device": field_validator("device")(concrete)},
            seed=(int, ...),
            data_seed=(int, ...),
        )
    return _RESOLVED[config]


def resolved(cfg: LoopCommon) -> LoopCommon:
    """``cfg`` as its resolved type (unchanged when it already is one).

    Raises:
        ValueError: a seed is missing or the device is ``auto``.
    """
    if isinstance(cfg, Resolved):
        return cfg
    try:
        return resolved_type(type(cfg)).model_validate(cfg.model_dump())
    except ValidationError as e:
        unset = ", ".join(str(err["loc"][0]) for err in e.errors())
        raise ValueError(f"train() needs a resolved config: seed, data_seed and a concrete device ({unset})") from None
