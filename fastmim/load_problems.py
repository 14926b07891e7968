"""How a state dict that does not fit a model is reported: every unexpected key, missing key
and wrong shape in one message, instead of the first one or a half-loaded model.

Shared by everything that checks weights against a model: the loader and the reference-release
converter (:mod:`fastmim.models.utils.pretrained`, :mod:`~fastmim.models.utils.reference`), the
engine's checkpoint hooks, ``fastmim.apis`` and the converters in ``tools/convert``. A leaf module
(the standard library only) beside the packages: the engine's hooks import it without importing
``fastmim.models``, whose every model (and timm, torchvision) would load with ``import fastmim``.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

# How many entries of a list a message shows before it says how many more there are.
MAX_LISTED = 12


@dataclass
class LoadProblems:
    """Everything that keeps a checkpoint from loading, reported together."""
    unexpected: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    mismatched: List[str] = field(default_factory=list)

    @classmethod
    def compare(cls, actual: Dict[str, object], expected: Dict[str, object]) -> 'LoadProblems':
        """The problems of loading weights of shapes ``actual`` (name -> shape) into a model of
        shapes ``expected``, each list in the order of the dict it comes from."""
        return cls(
            unexpected=[f'{key} {shape}' for key, shape in actual.items() if key not in expected],
            missing=[f'{key} {shape}' for key, shape in expected.items() if key not in actual],
            mismatched=[f'{key}: checkpoint {shape} vs model {expected[key]}'
                        for key, shape in actual.items()
                        if key in expected and shape != expected[key]])

    def __bool__(self):
        return bool(self.unexpected or self.missing or self.mismatched)

    def message(self, path: str, target: str, how: str) -> str:
        lines = [f'{path} does not fit {target} ({how}):']
        for title, entries in (
                ('unexpected keys (in the checkpoint, not in the model)', self.unexpected),
                ('missing keys (in the model, not in the checkpoint)', self.missing),
                ('shape mismatches that no resize rule transfers', self.mismatched)):
            if entries:
                lines.append(f'  {title}: {len(entries)}')
                lines += [f'    {entry}' for entry in entries[:MAX_LISTED]]
                if len(entries) > MAX_LISTED:
                    lines.append(f'    ... and {len(entries) - MAX_LISTED} more')
        return '\n'.join(lines)


def top_level_names(keys, within: str = '', count: bool = False) -> List[str]:
    """The first part of each key (``backbone``, ``neck``, ``mask_token``), in the keys' order,
    once each: the parts of a model or checkpoint, as messages name them.

    Under ``within`` (a prefix such as ``backbone.``), one level deeper (``backbone.norm``):
    'left out backbone' read as the whole backbone skipped. ``count`` adds how many keys each
    name has (``neck (4)``)."""
    counts: Dict[str, int] = {}
    for key in map(str, keys):
        depth = within.rstrip('.').count('.') + 2 if within and key.startswith(within) else 1
        name = '.'.join(key.split('.')[:depth])
        counts[name] = counts.get(name, 0) + 1
    return [f'{name} ({n})' if count else name for name, n in counts.items()]


def modules_without_weights(model_keys, checkpoint_keys) -> List[str]:
    """Top-level modules (the first part of a key) of the model that no checkpoint key names,
    in the model's order; a leading ``module.`` (a DDP-wrapped save) is ignored."""
    provided = set(top_level_names(key.removeprefix('module.') for key in checkpoint_keys))
    return [module for module in top_level_names(model_keys) if module not in provided]


def shapes(state) -> Dict[str, tuple]:
    """Name -> shape: what two state dicts are compared on."""
    return {key: tuple(value.shape) for key, value in state.items()}


def listing(items: Sequence[str]) -> str:
    """Items for a message, cut after ``MAX_LISTED`` so that a wrong file does not
    print thousands of keys."""
    items = list(items)
    shown = ', '.join(items[:MAX_LISTED])
    return shown + (f', ... ({len(items)} in all)' if len(items) > MAX_LISTED else '')
