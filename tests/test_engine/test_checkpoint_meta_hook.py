"""CheckpointMetaHook refuses to resume a checkpoint of another model in one line."""
import math
import re

import pytest
from mmengine.runner import Runner

import fastmim  # noqa: F401  registers modules
from fastmim.errors import CheckpointError


def _run(tmp_path, tiny_pretraining, embed_dim, **extra):
    cfg = tiny_pretraining(tmp_path, batch_size=2, num_samples=4, max_epochs=1)
    cfg['model']['backbone']['arch']['embed_dim'] = embed_dim
    cfg['model']['neck']['embed_dim'] = embed_dim
    cfg['optim_wrapper'] = dict(optimizer=dict(type='AdamW', lr=1e-3))
    cfg['custom_hooks'] = [dict(type='CheckpointMetaHook')]
    cfg.update(extra)
    return Runner.from_cfg(cfg)


def test_resuming_a_checkpoint_of_another_model_size_is_refused(tmp_path, tiny_pretraining):
    _run(tmp_path / 'a', tiny_pretraining, 32).train()
    # the same work dir, by --resume without a path: mmengine finds the checkpoint itself
    runner = _run(tmp_path / 'a', tiny_pretraining, 64, resume=True,
                  train_cfg=dict(by_epoch=True, max_epochs=2))
    with pytest.raises(CheckpointError, match=r'a/epoch_1.pth does not fit FastMIM \(--resume '
                       r'continues the model it holds\):\n  shape mismatches.*\n    '
                       r'neck\.embed\.weight: checkpoint \(32, 32\) vs model \(64, 64\)'):
        runner.train()


def test_resuming_a_checkpoint_of_a_deeper_model_names_its_extra_blocks(tmp_path,
                                                                       tiny_pretraining):
    _run(tmp_path / 'a', tiny_pretraining, 32).train()
    runner = _run(tmp_path / 'a', tiny_pretraining, 32, resume=True,
                  train_cfg=dict(by_epoch=True, max_epochs=2))
    runner.model.backbone.blocks = runner.model.backbone.blocks[:0]  # a ViT of no block
    with pytest.raises(CheckpointError, match=r'unexpected keys .*: \d+\n    '
                       r'backbone\.blocks\.0\.norm1\.weight \(32,\)'):
        runner.train()


def test_resuming_a_classifier_checkpoint_with_a_pre_training_config_names_both(
        tmp_path, tiny_pretraining):
    """A fine-tuned classifier resumed with a pre-training config: the backbone's load check
    spoke first ('a learned table ... set pos_embed_type=learned and final_norm=False'), and
    following that advice led to the next error."""
    import torch
    _run(tmp_path / 'a', tiny_pretraining, 32).train()
    checkpoint = torch.load(tmp_path / 'a' / 'epoch_1.pth', weights_only=True)
    state = checkpoint['state_dict']
    classifier = {key: value for key, value in state.items() if key.startswith('backbone.')}
    classifier['backbone.pos_embed'] = torch.randn_like(state['backbone.pos_embed']) * 0.02
    classifier.update({'head.fc.weight': torch.zeros(5, 32), 'head.fc.bias': torch.zeros(5)})
    checkpoint['state_dict'] = classifier
    torch.save(checkpoint, tmp_path / 'classifier.pth')
    runner = _run(tmp_path / 'b', tiny_pretraining, 32, resume=True,
                  load_from=str(tmp_path / 'classifier.pth'),
                  train_cfg=dict(by_epoch=True, max_epochs=2))
    with pytest.raises(CheckpointError, match=r'classifier\.pth holds backbone, head, not the '
                       r"parts of the config's FastMIM \(mask_token, backbone, neck\): a "
                       r'checkpoint of another kind of model \(a fine-tuned classifier '
                       r'resumed with a pre-training config\?\)'):
        runner.train()


def test_resuming_a_pre_training_checkpoint_with_a_fine_tuning_config_says_how_to_start_it():
    """``tools/train.py <fine-tuning config> --resume <pre-training epoch_12.pth>``: the
    message names that direction and the key that starts fine-tuning from the checkpoint."""
    import torch
    from torch import nn

    from fastmim.engine.hooks.resume_checks import check_resumed_model

    class ImageClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone, self.head = nn.Linear(4, 4), nn.Linear(4, 2)

    state = {'mask_token': torch.zeros(1, 3, 1, 1), 'backbone.weight': torch.zeros(4, 4),
             'backbone.bias': torch.zeros(4), 'neck.weight': torch.zeros(4, 4)}
    with pytest.raises(CheckpointError) as error:
        check_resumed_model(ImageClassifier(), {'state_dict': state}, 'demo/epoch_12.pth')
    assert ('a pre-training checkpoint resumed with a fine-tuning config? To start '
            'fine-tuning from it, set model.backbone.init_cfg.checkpoint=demo/epoch_12.pth '
            'without --resume') in str(error.value)
    assert 'a fine-tuned classifier resumed' not in str(error.value)


def test_resuming_the_same_model_still_works(tmp_path, tiny_pretraining):
    _run(tmp_path / 'a', tiny_pretraining, 32).train()
    runner = _run(tmp_path / 'a', tiny_pretraining, 32, resume=True,
                  train_cfg=dict(by_epoch=True, max_epochs=2))
    runner.train()
    assert runner.epoch == 2


def test_resuming_does_not_execute_config_text_stored_in_the_checkpoint(tmp_path,
                                                                        tiny_pretraining):
    # mmengine's Runner.resume rebuilds meta['config'] with Config.fromstring, which runs it as
    # Python: a --resume file must not be able to run code (weights-only loading policy).
    import torch
    _run(tmp_path / 'a', tiny_pretraining, 32).train()
    checkpoint = torch.load(tmp_path / 'a' / 'epoch_1.pth', weights_only=True)
    marker = tmp_path / 'executed'
    checkpoint['meta']['config'] = f'open({str(marker)!r}, "w").close()\ngpu_ids = [0]\n'
    torch.save(checkpoint, tmp_path / 'crafted.pth')
    runner = _run(tmp_path / 'b', tiny_pretraining, 32, resume=True,
                  load_from=str(tmp_path / 'crafted.pth'),
                  train_cfg=dict(by_epoch=True, max_epochs=2))
    runner.train()
    assert runner.epoch == 2
    assert not marker.exists()


def _schedule(end, **options):
    return [dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1, **options),
            dict(type='CosineAnnealingLR', by_epoch=True, begin=1, end=end, T_max=end - 1,
                 **options)]


def _logged_by(module, monkeypatch):
    """The messages ``module`` logs through ``print_log`` from now on, as a list."""
    messages = []
    monkeypatch.setattr(module, 'print_log', lambda message, **kwargs: messages.append(message))
    return messages


@pytest.fixture
def resume_messages(monkeypatch):
    """What the resume checks log (fastmim/engine/hooks/resume_checks.py), as a list."""
    from fastmim.engine.hooks import resume_checks
    return _logged_by(resume_checks, monkeypatch)


def _resume_warnings(tmp_path, tiny_pretraining, messages, lr, end):
    """``messages`` (:func:`resume_messages`) when a 2-epoch run (lr 1e-3, cosine to epoch 2)
    is resumed after its first epoch with ``lr`` and a cosine to ``end``."""
    first = _run(tmp_path / 'a', tiny_pretraining, 32, param_scheduler=_schedule(2),
                 train_cfg=dict(by_epoch=True, max_epochs=1))
    first.train()
    resumed = _run(tmp_path / 'a', tiny_pretraining, 32, resume=True,
                   param_scheduler=_schedule(end), train_cfg=dict(by_epoch=True, max_epochs=2))
    resumed.optim_wrapper['optimizer']['lr'] = lr
    resumed.train()
    # what the warning says is what happens: the checkpoint's lr and schedule
    assert resumed.optim_wrapper.param_groups[0]['initial_lr'] == pytest.approx(1e-3)
    assert resumed.param_schedulers[1].end == 2
    return messages


def test_resuming_with_another_lr_and_schedule_names_the_values_the_run_keeps(
        tmp_path, tiny_pretraining, resume_messages):
    messages = _resume_warnings(tmp_path, tiny_pretraining, resume_messages, lr=2e-3, end=4)
    assert len(messages) == 1
    assert ('take no effect:\n  optim_wrapper.optimizer.lr: config 0.002, checkpoint 0.001 '
            '(initial_lr of the parameter group)\n') in messages[0]
    assert 'param_scheduler[1] (CosineAnnealingLR) T_max: config 3, checkpoint 1 epochs' \
        in messages[0]
    assert 'param_scheduler[1] (CosineAnnealingLR) end: config 4, checkpoint 2 epochs' \
        in messages[0]
    assert 'param_scheduler[0]' not in messages[0]


def test_a_changed_setting_is_named_by_the_config_key_and_its_groups_plainly():
    """``--cfg-options optim_wrapper.optimizer.lr=5e-4`` on a resume of a layer-decay run:
    'initial_lr (group 0 of 96 and 95 more groups)' named neither the key the user set nor
    the groups plainly."""
    from fastmim.engine.hooks.resume_checks import optimiser_differences

    def groups(lr, weight_decays):
        return {'param_groups': [dict(initial_lr=lr * 0.5 ** index, weight_decay=decay)
                                 for index, decay in enumerate(weight_decays)]}

    built, saved = groups(5e-4, [0.05] * 94 + [0, 0]), groups(1e-3, [0.05] * 93 + [0, 0, 0])
    assert optimiser_differences(built, saved) == [
        'optim_wrapper.optimizer.lr: config 0.0005, checkpoint 0.001 (initial_lr, in all 96 '
        'parameter groups; group 0 shown)',
        'optim_wrapper.optimizer.weight_decay: config 0.05, checkpoint 0 (in 1 of 96 '
        'parameter groups; group 93 shown)']
    wrappers = optimiser_differences({'generator': groups(5e-4, [0])},
                                     {'generator': groups(1e-3, [0])})
    assert wrappers == ['optim_wrapper.generator.optimizer.lr: config 0.0005, checkpoint 0.001 '
                        '(initial_lr of the parameter group)']


def test_resuming_with_the_same_optimisation_warns_nothing(tmp_path, tiny_pretraining,
                                                           resume_messages):
    assert _resume_warnings(tmp_path, tiny_pretraining, resume_messages, lr=1e-3, end=2) == []


def test_resuming_a_finished_run_says_there_is_nothing_left_to_train(tmp_path, tiny_pretraining,
                                                                     resume_messages):
    """A resume with nothing left to train (a requeued job that has finished) exits 0 having
    trained nothing, and says so."""
    messages = resume_messages
    _run(tmp_path / 'a', tiny_pretraining, 32).train()
    finished = _run(tmp_path / 'a', tiny_pretraining, 32, resume=True)
    finished.train()
    assert finished.iter == 2  # nothing more was trained
    assert messages == [f'{tmp_path}/a/epoch_1.pth has trained all 1 epochs of train_cfg (1 '
                        f'done): --resume has nothing left to train. To train longer, start a '
                        f'new run from these weights with a longer train_cfg.max_epochs and '
                        f'param_scheduler, in another --work-dir and without --resume '
                        f'(--cfg-options load_from={tmp_path}/a/epoch_1.pth): a resumed run '
                        f"keeps this checkpoint's schedule, whose end a config cannot move, so "
                        f'the epochs added would train at its final lr']
    messages.clear()
    _run(tmp_path / 'a', tiny_pretraining, 32, resume=True,
         train_cfg=dict(by_epoch=True, max_epochs=2)).train()
    assert messages == []


def _lrs(runner, iterations):
    """The lr of the last ``iterations`` iterations ``runner`` trained (the message hub's
    history, which a resumed run's checkpoint carries in)."""
    return [float(lr) for lr in runner.message_hub.get_scalar('train/lr').data[0][-iterations:]]


def test_the_advice_to_train_a_finished_run_longer_gives_a_new_schedule(
        tmp_path, tiny_pretraining, resume_messages):
    """The advice, a new run from the weights, trains its config's whole schedule. Raising
    max_epochs and the schedulers' end together with --resume would not: the checkpoint's
    scheduler (end 2) replaces the config's (end 4), and the added epochs train at the
    schedule's final lr."""
    def cosine(epochs):  # by epoch: lr 1e-3 x (1 + cos(pi k / epochs)) / 2 in epoch k + 1
        return dict(param_scheduler=dict(type='CosineAnnealingLR', by_epoch=True, begin=0,
                                         end=epochs, T_max=epochs),
                    train_cfg=dict(by_epoch=True, max_epochs=epochs))

    def lrs(epochs, k_values):  # 2 iterations per epoch
        return [1e-3 * (1 + math.cos(math.pi * k / epochs)) / 2 for k in k_values for _ in '12']

    _run(tmp_path / 'a', tiny_pretraining, 32, **cosine(2)).train()
    _run(tmp_path / 'a', tiny_pretraining, 32, resume=True, **cosine(2)).train()
    advice, = resume_messages
    assert 'without --resume (--cfg-options load_from=' in advice
    load_from = advice.split('load_from=')[1].split(')')[0]
    assert load_from == f'{tmp_path}/a/epoch_2.pth'

    resumed = _run(tmp_path / 'a', tiny_pretraining, 32, resume=True, **cosine(4))
    resumed.train()  # the old advice: epochs 3 and 4 at the last lr of the 2-epoch cosine
    assert _lrs(resumed, 8) == pytest.approx(lrs(2, [0, 1, 1, 1]))

    new_run = _run(tmp_path / 'b', tiny_pretraining, 32, load_from=load_from, **cosine(4))
    new_run.train()
    assert _lrs(new_run, 8) == pytest.approx(lrs(4, range(4)))
    log = (tmp_path / 'b' / new_run.timestamp / f'{new_run.timestamp}.log').read_text()
    assert f'Load checkpoint from {load_from}' in log


def test_another_batch_size_alone_is_not_called_a_changed_schedule(tmp_path, tiny_pretraining,
                                                                   resume_messages):
    """Epoch counts converted to iterations (convert_to_iter_based) differ at another batch
    size; the train loop says why, and the config does not change those values, so they are
    not listed."""
    def resumed_with_batch_one(end):
        cfg = tiny_pretraining(tmp_path / 'a', batch_size=1, num_samples=4, max_epochs=2)
        cfg.update(optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3)),
                   custom_hooks=[dict(type='CheckpointMetaHook')], resume=True,
                   load_from=str(tmp_path / 'a' / 'epoch_1.pth'),
                   param_scheduler=_schedule(end, convert_to_iter_based=True))
        resume_messages.clear()
        Runner.from_cfg(cfg).train()
        return list(resume_messages)

    _run(tmp_path / 'a', tiny_pretraining, 32,
         param_scheduler=_schedule(2, convert_to_iter_based=True),
         train_cfg=dict(by_epoch=True, max_epochs=1)).train()  # 2 iterations per epoch
    assert resumed_with_batch_one(2) == []
    [message] = resumed_with_batch_one(3)  # the cosine's epochs differ
    assert 'param_scheduler[1] (CosineAnnealingLR) end: config 12, checkpoint 4 iterations' \
        in message
    assert 'param_scheduler[0]' not in message


def test_a_checkpoint_of_another_model_is_refused_before_ema_loads_its_copy(tmp_path,
                                                                           tiny_pretraining):
    """EMAHook loads its averaged weights in its own after_load_checkpoint, which ran before
    the checks (CheckpointMetaHook's priority is LOWEST): a raw size-mismatch traceback from
    ExponentialMovingAverage instead of the one-line error."""
    hooks = [dict(type='CheckpointMetaHook'), dict(type='EMAHook'),
             dict(type='ResumeChecksHook')]
    _run(tmp_path / 'a', tiny_pretraining, 32, custom_hooks=hooks).train()
    runner = _run(tmp_path / 'a', tiny_pretraining, 64, resume=True, custom_hooks=hooks,
                  train_cfg=dict(by_epoch=True, max_epochs=2))
    with pytest.raises(CheckpointError, match=r'a/epoch_1.pth does not fit FastMIM \(--resume '
                       r'continues the model it holds\)'):
        runner.train()


def test_resuming_with_another_optimiser_type_is_refused(tmp_path, tiny_pretraining):
    """torch gives SGD the checkpoint's AdamW parameter groups whole: after the start-up, the
    first step would end in KeyError: 'momentum'."""
    _run(tmp_path / 'a', tiny_pretraining, 32).train()
    runner = _run(tmp_path / 'a', tiny_pretraining, 32, resume=True,
                  optim_wrapper=dict(optimizer=dict(type='SGD', lr=1e-3, momentum=0.9)),
                  train_cfg=dict(by_epoch=True, max_epochs=2))
    with pytest.raises(CheckpointError, match=re.escape(
            f'{tmp_path}/a/epoch_1.pth was trained with AdamW, the config builds SGD: --resume '
            'continues the optimiser state it holds.')):
        runner.train()


def test_resuming_a_file_without_the_runs_state_is_refused(tmp_path, tiny_pretraining):
    """mmengine saves its best_* checkpoints without optimiser and scheduler states and skips
    them on resume without a word: the run would go on with a fresh AdamW and start its warmup
    over."""
    first = _run(tmp_path / 'a', tiny_pretraining, 32, param_scheduler=_schedule(2))
    first.train()
    # What mmengine's CheckpointHook writes for a best checkpoint.
    first.save_checkpoint(str(tmp_path), 'best.pth', save_optimizer=False,
                          save_param_scheduler=False)
    runner = _run(tmp_path / 'b', tiny_pretraining, 32, resume=True,
                  load_from=str(tmp_path / 'best.pth'), param_scheduler=_schedule(2),
                  train_cfg=dict(by_epoch=True, max_epochs=2))
    with pytest.raises(CheckpointError, match=r"best\.pth holds weights without the state of "
                       r"the run that wrote them \(no optimizer, param_schedulers\): a best_\* "
                       r'checkpoint, a published or converted file'):
        runner.train()


@pytest.fixture
def precision_messages(monkeypatch):
    """What the precision warning logs (``warn_if_precision_changed``, which CheckpointMetaHook
    runs), as a list."""
    from fastmim.engine.hooks import resume_checks
    return _logged_by(resume_checks, monkeypatch)


BF16 = dict(type='AutocastOptimWrapper', dtype='bfloat16', optimizer=dict(type='AdamW', lr=1e-3))


@pytest.mark.parametrize('first, resumed, expected', [
    (None, BF16, 'was trained in float32, the config trains in bfloat16 autocast'),
    (BF16, None, 'was trained in bfloat16 autocast, the config trains in float32'),
    (BF16, BF16, None),
    (None, None, None),
], ids=['fp32 resumed with --amp', 'bf16 resumed without --amp', 'bf16', 'fp32'])
def test_resuming_in_another_precision_is_named(tmp_path, tiny_pretraining, precision_messages,
                                                first, resumed, expected):
    """The run goes on in the config's precision, which is named as a changed lr is."""
    import torch
    optim = {'optim_wrapper': first} if first else {}
    _run(tmp_path / 'a', tiny_pretraining, 32, **optim).train()
    saved = torch.load(tmp_path / 'a' / 'epoch_1.pth', weights_only=True)
    assert saved['meta']['precision'] == ('bfloat16 autocast' if first else 'float32')
    optim = {'optim_wrapper': resumed} if resumed else {}
    _run(tmp_path / 'a', tiny_pretraining, 32, resume=True,
         train_cfg=dict(by_epoch=True, max_epochs=2), **optim).train()
    if expected is None:
        assert precision_messages == []
    else:
        assert precision_messages == [f'{tmp_path}/a/epoch_1.pth {expected} (--amp, '
                                      f'optim_wrapper.type): the resumed run goes on in '
                                      f'{expected.rsplit(" trains in ", 1)[1]}']


@pytest.mark.parametrize('recorded', [True, False], ids=['recorded', 'written before the record'])
def test_an_fp16_checkpoint_resumed_without_loss_scaling_names_the_dropped_scaler(
        tmp_path, tiny_pretraining, precision_messages, recorded):
    """A CUDA fp16 run (mmengine's AmpOptimWrapper saves its GradScaler's state with the
    optimiser's) resumed without --amp drops the scaler, which is named."""
    import torch
    _run(tmp_path / 'a', tiny_pretraining, 32).train()
    checkpoint = torch.load(tmp_path / 'a' / 'epoch_1.pth', weights_only=True)
    checkpoint['optimizer']['loss_scaler'] = {'scale': 65536.0, 'growth_factor': 2.0,
                                              'backoff_factor': 0.5, 'growth_interval': 2000,
                                              '_growth_tracker': 0}
    checkpoint['meta']['precision'] = 'float16 autocast with loss scaling'
    if not recorded:
        del checkpoint['meta']['precision']
    torch.save(checkpoint, tmp_path / 'fp16.pth')
    _run(tmp_path / 'b', tiny_pretraining, 32, resume=True, load_from=str(tmp_path / 'fp16.pth'),
         train_cfg=dict(by_epoch=True, max_epochs=2)).train()
    saved = 'float16 autocast' if recorded else 'autocast'
    saved += ' with loss scaling'
    assert precision_messages == [f'{tmp_path}/fp16.pth was trained in {saved}, the config '
                                  f'trains in float32 (--amp, optim_wrapper.type): the resumed '
                                  f'run goes on in float32; its loss scaler is dropped']


@pytest.fixture
def set_threads():
    """``torch.set_num_threads``, with the count before the test restored after it."""
    import torch
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize('saved, resumed', [(1, 2), (2, 1), (1, 1)])
def test_resuming_on_another_number_of_cpu_threads_is_named(tmp_path, tiny_pretraining,
                                                           resume_messages, set_threads, saved,
                                                           resumed):
    """Bitwise equality with the uninterrupted run needs its CPU threads (docs/long_runs.md):
    a resume on other ones says so once, with both counts and how to get the checkpoint's back;
    on the same ones it says nothing."""
    import torch
    set_threads(saved)
    _run(tmp_path / 'a', tiny_pretraining, 32).train()
    checkpoint = torch.load(tmp_path / 'a' / 'epoch_1.pth', weights_only=True)
    assert checkpoint['meta']['cpu_threads'] == saved
    set_threads(resumed)
    _run(tmp_path / 'a', tiny_pretraining, 32, resume=True,
         train_cfg=dict(by_epoch=True, max_epochs=2)).train()
    expected = [] if saved == resumed else [
        f'{tmp_path}/a/epoch_1.pth was written by a run on {saved} CPU thread(s) '
        f'(torch.get_num_threads()), this run has {resumed}: it is not bitwise the '
        f'uninterrupted run (CPU kernels split their sums by thread, so results can differ in '
        f'the last bits). To resume on {saved}, start it with OMP_NUM_THREADS={saved} in its '
        f'environment (torchrun sets 1 per process where it is unset), or call '
        f'torch.set_num_threads({saved}) before training']
    assert resume_messages == expected


def test_a_checkpoint_without_its_thread_count_resumes_without_a_word(tmp_path, tiny_pretraining,
                                                                      resume_messages,
                                                                      set_threads):
    """Checkpoints written before the count was recorded have nothing to compare."""
    import torch
    set_threads(1)
    _run(tmp_path / 'a', tiny_pretraining, 32).train()
    checkpoint = torch.load(tmp_path / 'a' / 'epoch_1.pth', weights_only=True)
    del checkpoint['meta']['cpu_threads']
    torch.save(checkpoint, tmp_path / 'older.pth')
    set_threads(2)
    _run(tmp_path / 'b', tiny_pretraining, 32, resume=True, load_from=str(tmp_path / 'older.pth'),
         train_cfg=dict(by_epoch=True, max_epochs=2)).train()
    assert resume_messages == []
