"""The tiny FastMIM pre-training run the engine tests train, written once: a fixture (the tests
run with ``--import-mode=importlib``, which puts no test folder on ``sys.path``) returning the
function that writes its config."""
import pytest


def _tiny_pretraining(work_dir, batch_size, num_samples, max_epochs):
    """Config entries of a FastMIM run small enough for a CPU: a one-block ViT and decoder
    predicting HOG of 32-px crops of ``num_samples`` embedded photos. The caller adds the
    optimiser, schedules and hooks its test is about."""
    pipeline = [
        dict(type='LoadImageRGB'),
        dict(type='RandomResizedCrop', size=32, scale=(0.2, 1.0), interpolation='bicubic'),
        dict(type='PackInputs'),
    ]
    return dict(
        default_scope='fastmim',
        work_dir=str(work_dir),
        experiment_name=str(work_dir),  # runners made in the same second need distinct names
        model=dict(
            type='FastMIM',
            backbone=dict(type='VisionTransformer', arch=dict(embed_dim=32, depth=1, num_heads=2),
                          img_size=32, patch_size=16),
            neck=dict(type='MIMDecoder', embed_dim=32, depth=1, num_heads=2),
            target_generator=dict(type='HOGGenerator'),
            mask_ratio=0.75, block_size=16),
        train_dataloader=dict(
            batch_size=batch_size, num_workers=0, drop_last=True,
            sampler=dict(type='DefaultSampler', shuffle=True),
            dataset=dict(type='EmbeddedPhotos', sources='skimage', num_samples=num_samples,
                         pipeline=pipeline)),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
    )


@pytest.fixture(scope='session')
def tiny_pretraining():
    return _tiny_pretraining
