import numpy as np
import pytest
import torch

from fastmim.registry import MODELS


def numpy_masked_mse(prediction, target, mask):
    """Mean over masked cells of the channel-averaged squared error, written as loops."""
    batch, channels, height, width = prediction.shape
    total, count = 0.0, 0
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                if mask[b, y, x]:
                    total += sum((prediction[b, c, y, x] - target[b, c, y, x]) ** 2
                                 for c in range(channels)) / channels
                    count += 1
    return total / count


def test_equals_numpy_loop_and_ignores_visible_cells():
    torch.manual_seed(0)
    prediction, target = torch.randn(2, 5, 4, 6), torch.randn(2, 5, 4, 6)
    mask = torch.rand(2, 4, 6) > 0.5
    loss_fn = MODELS.build(dict(type='MaskedMSELoss', loss_weight=2.0))
    loss = loss_fn(prediction, target, mask)
    expected = 2.0 * numpy_masked_mse(prediction.double().numpy(), target.double().numpy(),
                                      mask.numpy())
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-5)

    changed_visible = prediction.clone()
    changed_visible[~mask.unsqueeze(1).expand_as(prediction)] += 100
    torch.testing.assert_close(loss_fn(changed_visible, target, mask), loss)


def test_fp16_prediction_gives_fp32_loss_and_empty_mask_gives_zero():
    loss_fn = MODELS.build(dict(type='MaskedMSELoss'))
    prediction = torch.randn(1, 3, 2, 2).half()
    loss = loss_fn(prediction, torch.randn(1, 3, 2, 2), torch.ones(1, 2, 2, dtype=torch.bool))
    assert loss.dtype == torch.float32
    assert loss_fn(prediction, torch.randn(1, 3, 2, 2), torch.zeros(1, 2, 2)).item() == 0


def test_shape_mismatch_raises():
    loss_fn = MODELS.build(dict(type='MaskedMSELoss'))
    with pytest.raises(ValueError, match='differs from target'):
        loss_fn(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 4, 4), torch.ones(1, 4, 4))
    with pytest.raises(ValueError, match='mask shape'):
        loss_fn(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4), torch.ones(1, 2, 2))
