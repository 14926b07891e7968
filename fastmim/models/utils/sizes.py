"""Sizes given as one int (square) or as an ``(h, w)`` pair, as backbones and the kernels that
resize their tensors take them."""
from typing import Sequence, Tuple, Union


def grid_pair(size: Union[int, Sequence[int]], owner: str, what: str) -> Tuple[int, int]:
    """A size given as one int (square) or as ``(h, w)``, as an ``(h, w)`` pair of ints. Token
    grids, windows and image sizes all come in both forms; anything else (another length, a
    size below 1) raises an error naming ``owner`` and the argument ``what``."""
    pair = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f'{owner}: {what} must be a positive int or an (h, w) pair, '
                         f'got {size!r}')
    return pair
