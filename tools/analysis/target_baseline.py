"""The loss a pre-training config gets for nothing: its criterion applied to the average target.

    python tools/analysis/target_baseline.py CONFIG [--passes N] [--max-images N] [--seed S]
                                             [--cfg-options k=v ...]

A model that predicts the same value everywhere, the per-channel mean of the target over the
training data (for HOG: the average HOG cell), needs no image and no training. Its loss is the
line a pre-training loss must go below before the model has learned anything about the image
in front of it: a loss that falls from its initial value to this line has only learned the
target's statistics. For the masked MSE this constant is the best one (the mean minimises the
squared error), and the baseline is the masked per-channel variance of the target averaged
over the channels.

How it is measured, with the config's own parts and no trained weights: the training
dataloader's crops (``--passes`` passes over the data, the sampler's epoch advanced each pass;
at most ``--max-images`` crops, 10000 by default: on ImageNet a shuffled sample of the first
pass), normalised by the model's data preprocessor; masks drawn by the model's mask generator
(``generate_mask``, ``cell_mask``); targets from its target generator; the mean taken over the
masked cells, and the model's criterion applied to it and the targets with those masks. The
backbone and decoder are built (the config's model) but never run, so this takes seconds where
the dataset is small (the demo's 256 photos). Seeded (``--seed``): the same command prints the
same number. Also printed: how much the baseline's loss varies from one training batch to the
next, the noise a logged loss has around it. A progressive-resolution config is measured at its
dataloader's input size.
"""
import argparse
import os.path as osp
import sys

# Crops measured at most (--max-images): 280 MB of HOG targets at 128 px; ImageNet's passes
# would hold 35 GB each.
DEFAULT_MAX_IMAGES = 10000


def parse_args(argv):
    from fastmim.cli import CfgOptionsAction, add_debug_arg, positive_int, seed_int
    parser = argparse.ArgumentParser(
        description="Loss of predicting the per-channel mean of a pre-training config's "
                    'target everywhere (the average HOG cell), with its own criterion')
    parser.add_argument('config', help="config file (or 'fastmim::<path>', a packaged one)")
    parser.add_argument('--passes', type=positive_int, default=3,
                        help='passes over the training data, each with fresh crops and masks '
                             '(default: 3)')
    parser.add_argument('--max-images', type=positive_int, default=DEFAULT_MAX_IMAGES,
                        help='stop after this many crops, the passes done or not (default: '
                             f'{DEFAULT_MAX_IMAGES}); the targets are held in memory, 28 kB a '
                             'crop for HOG at 128 px')
    parser.add_argument('--seed', type=seed_int, default=0,
                        help='seed of crops and masks, 0 to 2**32 - 1 (default: 0)')
    parser.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction,
                        help='override config keys, as tools/train.py does')
    add_debug_arg(parser)
    return parser.parse_args(argv)


MIM_STEPS = ('data_preprocessor', 'generate_mask', 'cell_mask', 'target_generator', 'criterion')


def check_masked_image_model(model, config):
    """Refuse a model without the steps this measurement uses (a fine-tuning config's
    classifier), naming them, before any data is read."""
    missing = [step for step in MIM_STEPS if not hasattr(model, step)]
    if missing:
        from fastmim.errors import LaunchError
        raise LaunchError(f'{config}: its model {type(model).__name__} is no masked image '
                          f'modeling model (it lacks {", ".join(missing)}); give a '
                          'pre-training config')


def drawn_targets(model, dataloader, passes, max_images):
    """Targets ``(N, C, h, w)`` and cell masks ``(N, h, w)`` (True = masked) of the training
    crops, as the model's loss sees them, on the CPU."""
    import torch
    targets, masks, drawn = [], [], 0
    for epoch in range(passes):
        if hasattr(dataloader.sampler, 'set_epoch'):
            dataloader.sampler.set_epoch(epoch)
        for batch in dataloader:
            inputs = model.data_preprocessor(batch, training=True)['inputs']
            masks.append(model.cell_mask(model.generate_mask(inputs)).cpu())
            targets.append(model.target_generator(inputs).float().cpu())
            drawn += len(inputs)
            if drawn >= max_images:
                return torch.cat(targets)[:max_images], torch.cat(masks)[:max_images]
    return torch.cat(targets), torch.cat(masks)


def masked_channel_mean(targets, masks):
    """Per-channel mean of the targets over the masked cells, shape ``(1, C, 1, 1)``."""
    weights = masks.unsqueeze(1).double()
    total = (targets.double() * weights).sum(dim=(0, 2, 3), keepdim=True)
    return (total / weights.sum().clamp(min=1)).to(targets.dtype)


def mean_target_loss(criterion, targets, masks):
    """``(loss, mean)``: ``criterion`` applied to the masked per-channel mean of ``targets``
    predicted at every cell."""
    mean = masked_channel_mean(targets, masks)
    return float(criterion(mean.expand_as(targets), targets, masks)), mean


def batch_spread(criterion, mean, targets, masks, batch_size):
    """Standard deviation of the baseline's loss from one training batch to the next: how far
    a logged loss wanders around the baseline by chance (0 with fewer than two batches)."""
    import torch
    losses = [float(criterion(mean.expand_as(targets[start:start + batch_size]),
                              targets[start:start + batch_size], masks[start:start + batch_size]))
              for start in range(0, len(targets) - batch_size + 1, batch_size)]
    return float(torch.tensor(losses).std()) if len(losses) > 1 else 0.0


def target_baseline(cfg, passes=3, seed=0, max_images=DEFAULT_MAX_IMAGES, config='config'):
    """The baseline of a loaded config (:func:`fastmim.engine.config_loading.load_config`):
    ``dict(loss, batch_spread, mean, images, dataset_size, channels, cells, mask_fraction,
    target)``."""
    import torch
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    from mmengine.runner.utils import set_random_seed

    from fastmim.registry import MODELS
    init_default_scope(cfg.get('default_scope', 'fastmim'))
    set_random_seed(seed)
    model = MODELS.build(cfg.model)
    check_masked_image_model(model, config)
    dataloader = Runner.build_dataloader(cfg.train_dataloader, seed=seed)
    with torch.no_grad():
        targets, masks = drawn_targets(model, dataloader, passes, max_images)
        loss, mean = mean_target_loss(model.criterion, targets, masks)
        spread = batch_spread(model.criterion, mean, targets, masks, dataloader.batch_size)
    return dict(loss=loss, batch_spread=spread, batch_size=dataloader.batch_size,
                mean=mean.flatten(), images=len(targets), dataset_size=len(dataloader.dataset),
                channels=targets.shape[1], cells=tuple(targets.shape[2:]),
                mask_fraction=float(masks.float().mean()),
                target=type(model.target_generator).__name__)


def report(config, baseline, seed):
    cells = ' x '.join(map(str, baseline['cells']))
    return '\n'.join([
        f'config: {config}',
        f"target: {baseline['target']}, {baseline['channels']} channels on a {cells} cell grid",
        f"data: {baseline['images']} training crops of a dataset of {baseline['dataset_size']} "
        f"(seed {seed}), {100 * baseline['mask_fraction']:.0f}% of cells masked",
        f"loss of predicting the target's per-channel mean everywhere: {baseline['loss']:.5f} "
        f"(+-{baseline['batch_spread']:.5f} from one batch of {baseline['batch_size']} to the "
        'next)',
        'A pre-training loss at this value has learned the average target only.'])


def main(argv):
    args = parse_args(argv)
    import fastmim  # noqa: F401  registers modules
    from fastmim.engine.config_loading import load_config
    cfg = load_config(args.config, args.cfg_options)
    baseline = target_baseline(cfg, args.passes, args.seed, args.max_images, args.config)
    print(report(args.config, baseline, args.seed))
    return baseline


if __name__ == '__main__':
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/
    from early_checks import refuse_a_missing_config  # imports no fastmim
    refuse_a_missing_config(sys.argv[1:])
    from fastmim.cli import run_cli
    run_cli(main)
