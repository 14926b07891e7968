"""tools/train.py's flags folded into a config (apply_args), as a user combines them, and
tools/dist_train.sh's environment."""
import os
import subprocess
from pathlib import Path

import pytest
from mmengine.config import Config

from fastmim import train_flags
from fastmim.train_flags import apply_args, log_scaled_lr

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / 'configs' / 'fastmim' / 'demo_vit_tiny_embedded.py'
FINETUNE_DEMO = ROOT / 'configs' / 'finetune' / 'demo_vit_tiny_embedded_ft.py'
EMPTY_ZIP = b'PK\x05\x06' + bytes(18)  # a zip archive's end record alone


def flags_applied(train, work_dir, *flags, config=DEMO):
    """The config after ``tools/train.py config --work-dir work_dir *flags`` folded them in."""
    args = train.parse_args([str(config), '--work-dir', str(work_dir), *flags])
    cfg = Config.fromfile(str(config))
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    apply_args(cfg, args)
    return cfg


def save_checkpoint_record(work_dir, name='epoch_3.pth'):
    """What SafeCheckpointHook leaves: the checkpoint and ``last_checkpoint`` naming it."""
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / name).write_bytes(EMPTY_ZIP)  # read by no test: a file, and not an empty one
    (work_dir / 'last_checkpoint').write_text(str(work_dir / name))
    return str(work_dir / name)


def work_dir_moved_or_copied(tmp_path, old_place_kept):
    """``(old, new)``: a work dir's checkpoint and ``last_checkpoint`` (naming the old place)
    in ``new``, and the old place emptied unless ``old_place_kept`` (a copy)."""
    old, new = tmp_path / 'old', tmp_path / 'new'
    save_checkpoint_record(old)
    new.mkdir()
    for name in ('epoch_3.pth', 'last_checkpoint'):
        (new / name).write_bytes((old / name).read_bytes())
    if not old_place_kept:
        for path in old.iterdir():
            path.unlink()
    return old, new


def test_resume_without_a_checkpoint_yet_starts_from_load_from(tmp_path, train):
    """The same command starts and restarts a job; its first start dropped load_from and
    trained from random weights."""
    weights = str(tmp_path / 'pretrained.pth')
    cfg = flags_applied(train, tmp_path / 'work', '--resume', '--cfg-options',
                        f'load_from={weights}')
    assert cfg.load_from == weights and not cfg.resume


def test_resume_with_a_checkpoint_resumes_it_instead_of_load_from(tmp_path, train):
    latest = save_checkpoint_record(tmp_path / 'work')
    cfg = flags_applied(train, tmp_path / 'work', '--resume', '--cfg-options',
                        f'load_from={tmp_path / "pretrained.pth"}')
    assert cfg.resume and cfg.load_from == latest


@pytest.mark.parametrize('given', [True, False], ids=['--resume CKPT', 'no load_from'])
def test_resume_without_load_from(tmp_path, train, given):
    """With a path, mmengine's resume of it; with nothing to resume, a start from scratch
    (mmengine's auto-resume logged 'Auto resumed from the latest checkpoint None')."""
    checkpoint = str(tmp_path / 'elsewhere.pth')
    cfg = flags_applied(train, tmp_path / 'work', '--resume', *([checkpoint] if given else []))
    assert cfg.resume == given and cfg.load_from == (checkpoint if given else None)


def scale_ratio(cfg, world_size=1):
    """The lr factor mmengine's ``Runner.scale_lr`` applies to this config."""
    return world_size * cfg.train_dataloader.batch_size / cfg.auto_scale_lr.base_batch_size


@pytest.mark.parametrize('accumulation', [1, 3])
def test_auto_scale_lr_counts_every_batch_of_an_update(tmp_path, train, accumulation):
    """mmengine counts GPUs x batch_size only: with accumulation the lr was scaled for a
    fraction of the batch each update averages over."""
    cfg = flags_applied(train, tmp_path, '--auto-scale-lr', '--cfg-options',
                        'train_dataloader.batch_size=4',
                        f'optim_wrapper.accumulative_counts={accumulation}')
    base = Config.fromfile(str(DEMO)).auto_scale_lr.base_batch_size
    assert cfg.auto_scale_lr.enable
    assert scale_ratio(cfg) == pytest.approx(4 * accumulation / base)


def test_the_scaled_lr_is_logged_beside_mmengine_s_unscaled_base_lr(tmp_path, train,
                                                                   monkeypatch):
    """mmengine logs the factor only, and every training line's base_lr is the config's:
    the lr that trained was nowhere in the log."""
    logged = []
    monkeypatch.setattr(train_flags, 'print_log',
                        lambda message, **kwargs: logged.append(message))
    cfg = flags_applied(train, tmp_path, '--auto-scale-lr', '--cfg-options',
                        'train_dataloader.batch_size=4', 'optim_wrapper.accumulative_counts=2',
                        'optim_wrapper.optimizer.lr=0.001')
    logged.clear()
    log_scaled_lr(cfg, world_size=2)
    base = Config.fromfile(str(DEMO)).auto_scale_lr.base_batch_size
    ratio = 2 * 4 * 2 / base  # processes x batch x accumulated batches / base batch
    assert logged == [f"auto_scale_lr: every parameter group's lr is scaled by {ratio:g}: "
                      f"optimizer.lr=0.001 trains at {0.001 * ratio:g}; the base_lr of the "
                      f"training log stays the config's unscaled lr (mmengine scales the groups "
                      f"only)"]
    log_scaled_lr(flags_applied(train, tmp_path), world_size=2)  # not enabled
    assert len(logged) == 1


@pytest.mark.parametrize('config', [DEMO, FINETUNE_DEMO], ids=['decay mults', 'layer decay'])
def test_the_logged_lr_is_the_lr_mmengine_s_runner_trains_at(tmp_path, train, monkeypatch,
                                                             config):
    """The factor and lr the log line says, against what mmengine's own ``Runner.scale_lr``
    sets on the optimiser that the config's constructor builds (every group's lr before and
    after), with accumulated batches and with per-group lrs from ``paramwise_cfg`` (the
    fine-tuning config's layer decay: the last layer id's group trains at ``optimizer.lr``)."""
    import re

    from mmengine.runner import Runner

    from fastmim.engine.launch import adapt_to_device
    logged = []
    monkeypatch.setattr(train_flags, 'print_log',
                        lambda message, **kwargs: logged.append(message))
    cfg = flags_applied(train, tmp_path, '--auto-scale-lr', '--cfg-options',
                        'train_dataloader.batch_size=4', 'optim_wrapper.accumulative_counts=2',
                        'optim_wrapper.optimizer.lr=0.001', config=config)
    adapt_to_device(cfg)
    runner = Runner.from_cfg(cfg)
    logged.clear()
    log_scaled_lr(cfg, runner.world_size)
    said = re.search(r'scaled by (\S+): optimizer\.lr=0\.001 trains at (\S+);', logged[0])

    optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    config_lrs = [group['lr'] for group in optim_wrapper.optimizer.param_groups]
    runner.scale_lr(optim_wrapper, runner.auto_scale_lr)
    trained_lrs = [group['lr'] for group in optim_wrapper.optimizer.param_groups]
    assert (len(set(config_lrs)) > 1) == (config == FINETUNE_DEMO)  # an lr per layer id
    assert [trained / given for trained, given in zip(trained_lrs, config_lrs)] == \
        pytest.approx([float(said[1])] * len(config_lrs), rel=1e-5)
    assert max(trained_lrs) == pytest.approx(float(said[2]), rel=1e-5)
    assert float(said[1]) == pytest.approx(runner.world_size * 4 * 2 / 32)  # base batch 32


def test_auto_scale_lr_enabled_in_the_config_counts_the_accumulation_too(tmp_path, train):
    """Only the flag counted it: enabled in the config (or with --cfg-options), the lr of
    2 accumulated batches was scaled for one."""
    cfg = flags_applied(train, tmp_path, '--cfg-options', 'train_dataloader.batch_size=4',
                        'optim_wrapper.accumulative_counts=2', 'auto_scale_lr.enable=True')
    base = Config.fromfile(str(DEMO)).auto_scale_lr.base_batch_size
    assert scale_ratio(cfg) == pytest.approx(4 * 2 / base)
    with pytest.raises(ValueError, match=r'^auto_scale_lr\.enable needs a positive '):
        flags_applied(train, tmp_path, '--cfg-options', 'auto_scale_lr.enable=True',
                      'auto_scale_lr.base_batch_size=0')


@pytest.mark.parametrize('option', ['auto_scale_lr.base_batch_size=0',
                                    'auto_scale_lr.base_batch_size=None',
                                    'auto_scale_lr=None'])
def test_auto_scale_lr_without_a_usable_base_batch_is_named(tmp_path, train, option):
    with pytest.raises(ValueError, match='positive auto_scale_lr.base_batch_size'):
        flags_applied(train, tmp_path, '--auto-scale-lr', '--cfg-options', option)


@pytest.mark.parametrize('old_place_kept', [False, True], ids=['moved', 'copied'])
def test_resume_in_a_moved_or_copied_work_dir_takes_its_own_checkpoint(tmp_path, train,
                                                                      old_place_kept):
    """last_checkpoint holds an absolute path: a moved work dir failed to resume, a copied one
    resumed from the other run's checkpoint."""
    old, new = work_dir_moved_or_copied(tmp_path, old_place_kept)
    cfg = flags_applied(train, new, '--resume')
    assert cfg.resume and cfg.load_from == str(new / 'epoch_3.pth')


def test_resume_with_an_empty_last_checkpoint_names_it_and_the_checkpoints_there(tmp_path,
                                                                               train):
    """The error named no file ('last_checkpoint names : checkpoint not found: ')."""
    from fastmim.errors import CheckpointError
    work_dir = tmp_path / 'work'
    save_checkpoint_record(work_dir)
    (work_dir / 'last_checkpoint').write_text('')
    with pytest.raises(CheckpointError, match=rf'{work_dir / "last_checkpoint"} is empty: it '
                       r'names no checkpoint to resume.*newest first: epoch_3.pth'):
        flags_applied(train, work_dir, '--resume')


def test_a_config_that_resumes_itself_takes_the_moved_work_dirs_checkpoint(tmp_path, train):
    """``resume = True`` in a config (mmengine's way, without ``--resume``) left the search to
    mmengine, which followed the old absolute path of a moved work dir."""
    save_checkpoint_record(tmp_path / 'old')
    (tmp_path / 'old').rename(tmp_path / 'new')
    cfg = flags_applied(train, tmp_path / 'new', '--cfg-options', 'resume=True')
    assert cfg.resume and cfg.load_from == str(tmp_path / 'new' / 'epoch_3.pth')


def test_a_config_that_resumes_itself_keeps_its_load_from_and_an_empty_work_dir(tmp_path,
                                                                              train):
    """mmengine resumes from a configured load_from, and starts afresh with nothing to
    resume; both stay so."""
    cfg = flags_applied(train, tmp_path / 'work', '--cfg-options', 'resume=True',
                        f'load_from={tmp_path / "given.pth"}')
    assert cfg.resume and cfg.load_from == str(tmp_path / 'given.pth')
    cfg = flags_applied(train, tmp_path / 'empty', '--cfg-options', 'resume=True')
    assert cfg.resume and cfg.load_from is None


@pytest.mark.parametrize('old_place_kept', [False, True], ids=['moved', 'copied'])
def test_resume_from_a_last_checkpoint_file_takes_the_checkpoint_it_names(tmp_path, train,
                                                                        old_place_kept):
    """``--resume WORK_DIR/last_checkpoint`` (mmengine's note of the newest checkpoint) was
    refused as 'not a readable checkpoint (truncated or corrupt?)'; in a moved or copied work
    dir the checkpoint beside it is taken, as a plain --resume does."""
    old, new = work_dir_moved_or_copied(tmp_path, old_place_kept)
    cfg = flags_applied(train, tmp_path / 'run', '--resume', str(new / 'last_checkpoint'))
    assert cfg.resume and cfg.load_from == str(new / 'epoch_3.pth')
    cfg = flags_applied(train, tmp_path / 'run', '--resume', str(old / 'last_checkpoint'))
    assert cfg.load_from == str(old / ('epoch_3.pth' if old_place_kept else 'last_checkpoint'))


def test_resume_keeps_a_last_checkpoint_that_names_the_work_dir_through_a_link(tmp_path, train):
    real = tmp_path / 'real'
    recorded = save_checkpoint_record(real)
    (tmp_path / 'link').symlink_to(real)
    cfg = flags_applied(train, tmp_path / 'link', '--resume')
    assert cfg.load_from == recorded


@pytest.mark.parametrize('env, message', [
    (dict(NNODES='2'), 'NNODES=2 needs NODE_RANK (0 to 1, one per node) and MASTER_ADDR'),
    (dict(NNODES='2', NODE_RANK='1'), 'NNODES=2 needs NODE_RANK'),
    (dict(NNODES='2', MASTER_ADDR='node0'), 'NNODES=2 needs NODE_RANK'),
    (dict(NNODES='2', NODE_RANK='2', MASTER_ADDR='node0'), "NODE_RANK must be 0 to 1, got '2'"),
    (dict(NNODES='two'), "NNODES must be a whole number >= 1, got 'two'"),
    # torchrun repeated 'gai error' warnings until its rendezvous timed out
    (dict(NNODES='2', NODE_RANK='1', MASTER_ADDR='node0.invalid'),
     'MASTER_ADDR=node0.invalid: no such host'),
    (dict(NNODES='2', NODE_RANK='1', MASTER_ADDR='localhost'), 'config file not found: c.py'),
    # an address is not looked up by name: clusters give node 0's as 10.x without a DNS name
    (dict(NNODES='2', NODE_RANK='1', MASTER_ADDR='10.123.45.67'),
     'config file not found: c.py')])
def test_dist_train_refuses_a_multi_node_launch_it_cannot_form(env, message):
    """Every node without its NODE_RANK was node 0, and without MASTER_ADDR each waited for a
    master on itself: torchrun hung until its rendezvous timed out, printing nothing."""
    clean = {k: v for k, v in os.environ.items()
             if k not in ('NNODES', 'NODE_RANK', 'MASTER_ADDR')}
    result = subprocess.run(['bash', str(ROOT / 'tools' / 'dist_train.sh'), 'c.py', '2'],
                            env={**clean, **env}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f'dist_train.sh: {message}'), result.stderr


@pytest.mark.parametrize('script, args', [('dist_train.sh', ['nope.py', '2']),
                                          ('dist_test.sh', ['nope.py', 'k.pth', '2'])])
def test_dist_launch_names_a_missing_config_once(tmp_path, script, args):
    """Each process refused it in its own line, then torchrun printed its own traceback."""
    result = subprocess.run(['bash', str(ROOT / 'tools' / script), *args], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr == f'{script}: config file not found: nope.py\n'


def test_help_says_what_resume_and_auto_scale_lr_do(train, capsys):
    """The help still described mmengine's behaviour of both flags."""
    with pytest.raises(SystemExit):
        train.parse_args(['--help'])
    text = ' '.join(capsys.readouterr().out.split())
    assert 'start as without --resume (from load_from' in text
    assert 'GPUs x batch_size x optim_wrapper.accumulative_counts' in text


@pytest.mark.parametrize('dtype, device, message', [
    ('fp16', 'cuda', "dtype must be 'float16' or 'bfloat16', got 'fp16'"),
    ('float32', 'cuda', "dtype must be 'float16' or 'bfloat16', got 'float32'"),
    ('float16', 'cpu', "dtype 'float16' needs CUDA")])
def test_autocast_wrapper_names_a_dtype_it_cannot_run(monkeypatch, dtype, device, message):
    """--cfg-options optim_wrapper.dtype=fp16 was an AttributeError, float16 on the CPU
    mmengine's AssertionError at the first iteration."""
    import torch
    from fastmim.engine.optim_wrappers import AutocastOptimWrapper, guarded
    monkeypatch.setattr(guarded, 'get_device', lambda: device)
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match=message):
        AutocastOptimWrapper(optimizer=optimizer, dtype=dtype)
    wrapper = AutocastOptimWrapper(optimizer=optimizer, dtype='bfloat16')
    assert wrapper.cast_dtype == torch.bfloat16


@pytest.mark.parametrize('counts', [0, 1.5, '2'])
@pytest.mark.parametrize('wrapper', ['GuardedOptimWrapper', 'AutocastOptimWrapper'])
def test_accumulation_that_is_no_whole_number_of_batches_is_named(wrapper, counts):
    """0 was mmengine's bare AssertionError; 1.5 trained, stepping at every third iteration."""
    import torch
    from fastmim.engine import optim_wrappers
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match=f'accumulative_counts must be a whole number >= 1 '
                                         f'.*got {counts!r}'):
        getattr(optim_wrappers, wrapper)(optimizer=optimizer, accumulative_counts=counts)
    assert getattr(optim_wrappers, wrapper)(optimizer=optimizer,
                                            accumulative_counts=2)._accumulative_counts == 2


@pytest.mark.parametrize('listed', [None, "dict(type='CompileModulesHook', mode='max-autotune')",
                                    "dict(type='fastmim.CompileModulesHook', dynamic=True)"])
def test_compile_adds_one_hook_and_keeps_the_configs_options(tmp_path, train, listed):
    """A second hook recompiled after the config's, with the default options."""
    config = tmp_path / 'compiled.py'
    config.write_text(f"_base_ = ['{DEMO}']\n" + (f'custom_hooks = [{listed}]\n' if listed else ''))
    cfg = flags_applied(train, tmp_path, '--compile', config=config)
    hooks = [hook for hook in cfg.custom_hooks if 'CompileModulesHook' in hook['type']]
    expected = Config.fromfile(str(config)).custom_hooks[-1] if listed else dict(
        type='fastmim.CompileModulesHook')
    assert hooks == [expected]


TINY = ['model.backbone.arch.embed_dim=32', 'model.backbone.arch.depth=1',
        'model.backbone.arch.num_heads=2', 'model.neck.embed_dim=32', 'model.neck.num_heads=2',
        'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False', 'train_dataloader.dataset.num_samples=4',
        'train_cfg.max_epochs=1', 'custom_hooks=[]']


def test_dist_train_on_one_node_without_port_avoids_a_busy_default_port(tmp_path):
    """A second job on the same machine failed with torchrun's EADDRINUSE traceback on the
    fixed default port 29500 (held here by a listening socket, or by whoever else holds it)."""
    import socket
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        holder.bind(('127.0.0.1', 29500))
        holder.listen()
    except OSError:
        pass  # already busy: the same situation
    try:
        env = {k: v for k, v in os.environ.items()
               if k not in ('PORT', 'MASTER_PORT', 'NNODES')}  # both name a port to use
        result = subprocess.run(
            ['bash', str(ROOT / 'tools' / 'dist_train.sh'), str(DEMO), '1',
             '--work-dir', str(tmp_path), '--cfg-options', *TINY],
            env=env, capture_output=True, text=True, timeout=300)
    finally:
        holder.close()
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / 'epoch_1.pth').exists()


@pytest.mark.parametrize('argv', [['--resume', str(DEMO)], ['--amp', '--resume', str(DEMO)]])
def test_a_config_taken_by_resume_is_explained(train, capsys, argv):
    """--resume takes an optional CKPT: given before the config it took it, and the error was
    only 'the following arguments are required: config'."""
    with pytest.raises(SystemExit):
        train.parse_args(argv)
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        f'error: --resume took {DEMO} as its CKPT, leaving no config: put the config first '
        '(tools/train.py CONFIG --resume), or give --resume=CKPT')


def test_a_missing_config_without_resume_keeps_argparse_s_error(train, capsys):
    with pytest.raises(SystemExit):
        train.parse_args(['--resume', 'epoch_3.pth'])
    assert capsys.readouterr().err.strip().endswith(
        'error: the following arguments are required: config')


def test_train_py_takes_a_packaged_config(train, monkeypatch):
    """As get_model and _base_ do; the work dir is named after the config file, as for a path."""
    monkeypatch.setenv('LOCAL_RANK', '0')  # parse_args exports it
    args, cfg = train.load_run(['fastmim::fastmim/demo_vit_tiny_embedded.py'])
    assert Path(cfg.filename).resolve() == DEMO.resolve()
    from fastmim.cli import apply_launch_args
    apply_launch_args(cfg, args)
    assert cfg.work_dir == os.path.join('work_dirs', 'demo_vit_tiny_embedded')


def test_a_fresh_run_in_another_run_s_work_dir_says_so_once(tmp_path, train, monkeypatch):
    """Started without --resume where a finished run left its checkpoints, a run said nothing:
    its checkpoints supersede them, and --resume would continue the earlier run instead."""
    logged = []
    monkeypatch.setattr(train_flags, 'print_log',
                        lambda message, **kwargs: logged.append(message))
    work_dir = tmp_path / 'work'
    save_checkpoint_record(work_dir, 'epoch_12.pth')
    flags_applied(train, work_dir)
    assert logged == [f'{work_dir} holds the checkpoints of an earlier run (newest: '
                      'epoch_12.pth): this run starts afresh and its checkpoints supersede '
                      'them; --resume would continue that run instead (or give another '
                      '--work-dir)']
    logged.clear()
    flags_applied(train, work_dir, '--resume')
    flags_applied(train, tmp_path / 'empty')
    assert not any('earlier run' in message for message in logged)


def test_train_py_s_ctrl_c_before_the_first_save_names_the_earlier_run_s_checkpoint(
        tmp_path, train, monkeypatch, capsys):
    """--resume, which the hint promised would continue this run, took the finished earlier
    run's epoch_12.pth ('nothing left to train')."""
    from fastmim import cli, resume_target
    from fastmim.engine import launch
    monkeypatch.setattr(resume_target, '_start', {})

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(launch, 'build_runner', interrupted)
    earlier = save_checkpoint_record(tmp_path, 'epoch_12.pth')
    with pytest.raises(SystemExit):
        cli.run_cli(train.main, [str(DEMO), '--work-dir', str(tmp_path)],
                    interrupted_hint=resume_target.interrupted_hint)
    assert capsys.readouterr().err.endswith(
        f"interrupted (Ctrl-C); this run saved no checkpoint yet: --resume would continue the "
        f"earlier run's {earlier} instead (run without it to start afresh, or give another "
        f"--work-dir)\n")
