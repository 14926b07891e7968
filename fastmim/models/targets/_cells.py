"""What the target generators share: the cell grid of a batch of images."""
from typing import Tuple

import torch


def cell_grid(images: torch.Tensor, cell_size: int, owner: str,
              size_name: str) -> Tuple[int, int]:
    """``(H / cell_size, W / cell_size)`` of ``(B, 3, H, W)`` images. Every target gives one
    vector per non-overlapping square cell (a HOG cell, a pixel patch), so every target refuses
    other shapes and sizes that are not a multiple of the cell; the error names ``owner`` and
    its argument ``size_name``."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f'{owner} expects images of shape (B, 3, H, W), '
                         f'got {tuple(images.shape)}')
    height, width = images.shape[-2:]
    if height % cell_size or width % cell_size:
        raise ValueError(f'{owner}: image size {height}x{width} is not a multiple of '
                         f'{size_name} {cell_size}')
    return height // cell_size, width // cell_size
