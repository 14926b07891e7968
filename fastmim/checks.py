"""Argument checks that models, datasets, hooks and the API share: a leaf module, importing
nothing, so any layer may use it (as :mod:`fastmim.errors`).

The checks run when a config entry is built, so a wrong value is named with its owner and
argument there, not met later as a shape error inside torch.
"""


def check_positive_int(owner: str, name: str, value):
    """``value`` when it is an int >= 1, else a ``ValueError`` naming ``owner`` (a class or
    function) and the argument ``name``. A bool is refused: Python counts ``True`` as the int 1,
    so ``num_classes=True`` (a config slip for a flag) built a one-class head."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{owner}: {name} must be a positive int, got {value!r}')
    return value
