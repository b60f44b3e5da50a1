"""The registry of task families: one line per family, and how a fit or a run finds its own.

A family is one folder (``families/image/`` ...) implementing ``families.base.Family``.
Families are imported when first asked for, so ``deepstrata --help`` loads none of them
(nor torch). The order below is the order of detection: an explicit ``--task`` first, then
the model's family, then the data's form; images are the default.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

from deepstrata.errors import ConfigError

# name -> (module, class). Adding a family: one folder, one line here.
REGISTRY = {
    "image": ("deepstrata.families.image", "ImageFamily"),
    "text": ("deepstrata.families.text", "TextFamily"),
    "recommend": ("deepstrata.families.recommend", "RecommendFamily"),
}
NAMES = tuple(REGISTRY)
DEFAULT = "image"
# Which families look at the data's form, in order: an interaction log's name (ratings.csv) before
# a table's suffix. The default family claims what no other does.
BY_DATA = ("recommend", "text")
_LOADED: dict = {}


def get(name: str):
    """The family called ``name`` (``image``, ``text``, ``recommend``)."""
    if name not in REGISTRY:
        raise ConfigError(f"--task: got {name!r}, expected one of {', '.join(NAMES)}")
    if name not in _LOADED:
        module, cls = REGISTRY[name]
        _LOADED[name] = getattr(import_module(module), cls)()
    return _LOADED[name]


def for_task(task: str):
    """The family whose runs record ``task`` in model.json / config.yaml (``image-classification`` ...)."""
    for name in NAMES:
        if get(name).task == task:
            return get(name)
    return None


def tasks() -> tuple[str, ...]:
    return tuple(get(name).task for name in NAMES)


def detect(data, model: str | None, task: str | None):
    """The family of a fit: named by ``task``, implied by the model, or by the data's form (images by default)."""
    if task is not None:
        return get(task)
    for name in NAMES:
        if name != DEFAULT and model in get(name).models:
            return get(name)
    for name in BY_DATA:
        if get(name).claims(data):
            return get(name)
    return get(DEFAULT)


def of_config(config) -> str | None:
    """The family name a config (object or YAML path) names with its ``task:`` key, when not the image default."""
    if isinstance(config, (str, Path)):
        from deepstrata.config import load_config

        config = load_config(config)
    family = for_task(config.task)
    return None if family is None or family.name == DEFAULT else family.name
