"""What models write into checkpoint meta (``meta['geometry']``), shared by the algorithms
that save it and the converter of the reference release."""
from typing import List, Optional


def recorded_input_size(input_size, backbone_geometry: dict) -> Optional[List[int]]:
    """``[height, width]`` for checkpoint meta: ``input_size`` (the last input seen, or the
    size given to a converter), else the backbone's configured ``img_size``, else ``None``
    (PVTv2, whose weights do not depend on it)."""
    input_size = input_size or backbone_geometry.get('img_size')
    if isinstance(input_size, int):
        input_size = [input_size, input_size]
    return list(input_size) if input_size is not None else None
