"""Loading a config with --cfg-options (fastmim.engine.config_loading): missing, invalid and
misplaced files, keys the config lacks, values no run can use, pipelines and settings the
options leave behind."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from fastmim.engine import config_loading
from fastmim.engine.config_loading import added_keys, load_config
from fastmim.errors import LaunchError


ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / 'configs' / 'fastmim' / 'demo_vit_tiny_embedded.py'
FINETUNE_DEMO = ROOT / 'configs' / 'finetune' / 'demo_vit_tiny_embedded_ft.py'
KNN_DEMO = ROOT / 'configs' / 'knn' / 'demo_vit_tiny_embedded_knn.py'
SEGMENTATION = (ROOT / 'projects' / 'segmentation' / 'configs' /
                'upernet_fastmim_vit_b_ade20k_512x512_160k.py')
# An mmseg config whose SegDataPreProcessor sets no test_cfg.
FASHION_UPERNET = ROOT / 'configs' / 'experiments' / 'fashion_mnist_upernet.py'


def test_cfg_options_keys_the_config_lacks_are_named_with_the_close_existing_ones():
    cfg = Config(dict(train_dataloader=dict(batch_size=2, num_workers=1),
                      train_pipeline=[dict(type='LoadImageRGB'), dict(type='Crop', size=8)]))
    options = {'train_dataloader.batch_sise': 4, 'train_dataloader.num_workers': 2,
               'train_pipeline.1.size': 16, 'train_pipeline.1.sise': 16,
               'model.backbone.drop_path_rate': 0.1}
    assert added_keys(cfg.to_dict(), options) == [
        ('train_dataloader.batch_sise', ['batch_size']), ('train_pipeline.1.sise', ['size']),
        ('model', [])]


def test_load_config_warns_about_an_added_key_and_still_adds_it(tmp_path, monkeypatch):
    logged = []
    monkeypatch.setattr(config_loading, 'print_log',
                        lambda message, **kwargs: logged.append(message))
    config = tmp_path / 'tiny.py'
    config.write_text('train_dataloader = dict(batch_size=2)\n')
    cfg = load_config(str(config), {'train_dataloader.batch_sise': 4}, builds_model=False)
    assert cfg.train_dataloader.batch_sise == 4  # mmengine's semantics are kept
    assert logged == [f'--cfg-options train_dataloader.batch_sise: {config} has no such key, '
                      'it is added (did you mean batch_size?)']
    load_config(str(config), {'train_dataloader.batch_size': 4}, builds_model=False)
    assert len(logged) == 1


def test_an_added_argument_of_the_entry_class_is_not_warned_about(monkeypatch):
    """``default_hooks.checkpoint.by_epoch=False`` (docs/long_runs.md sets it) was answered
    with "has no such key, it is added", the typo warning, though CheckpointHook takes
    ``by_epoch``; an argument the entry's class names is what adding a key is for."""
    logged = []
    monkeypatch.setattr(config_loading, 'print_log',
                        lambda message, **kwargs: logged.append(message))
    load_config(str(DEMO), {'default_hooks.checkpoint.by_epoch': False,
                            'default_hooks.logger.log_metric_by_epoch': False,
                            'default_hooks.checkpoint.priority': 'LOW'})
    assert not [line for line in logged if 'no such key' in line]


@pytest.mark.parametrize('backbone', ['VisionTransformer', 'EVA02'])
def test_the_knn_advice_final_norm_false_is_not_warned_about(monkeypatch, backbone):
    """kNN with a fine-tuned checkpoint advises ``--cfg-options model.backbone.final_norm=
    False``; the backbones name ``final_norm`` as their own argument (not one of the timm
    class their ``**kwargs`` go to), so following the advice gets no typo warning."""
    logged = []
    monkeypatch.setattr(config_loading, 'print_log',
                        lambda message, **kwargs: logged.append(message))
    load_config(str(KNN_DEMO), {'model.backbone.type': backbone,
                                'model.backbone.final_norm': False})
    assert not [line for line in logged if 'no such key' in line]


def print_config_fresh(config, option):
    """tools/misc/print_config.py ``config --cfg-options option``, in a process of its own:
    what the command line sees, with no registry imported before the config is loaded."""
    return subprocess.run([sys.executable, str(ROOT / 'tools' / 'misc' / 'print_config.py'),
                           str(config), '--cfg-options', option],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_cfg_none(tmp_path) -> Path:
    """:data:`FASHION_UPERNET` with the preprocessor's ``test_cfg`` set to None, its default."""
    child = tmp_path / 'test_cfg_none.py'
    child.write_text(f"_base_ = ['{FASHION_UPERNET}']\n"
                     "model = dict(data_preprocessor=dict(test_cfg=None))\n")
    return child


def test_a_key_under_an_argument_the_config_leaves_unset_is_not_warned_about(
        tmp_path, load_config_log):
    """The padding that whole-image inference is told to give,
    ``model.data_preprocessor.test_cfg.size_divisor=16``, was warned about as "has no such
    key, it is added", the typo warning: mmseg's SegDataPreProcessor was not looked up (its
    scope's registry was not imported) though it names ``test_cfg`` as an argument. The
    real class, built from the loaded config, pads the evaluation image to multiples of 16."""
    from mmseg.models import SegDataPreProcessor
    from mmseg.structures import SegDataSample
    printed = print_config_fresh(FASHION_UPERNET,
                                 'model.data_preprocessor.test_cfg.size_divisor=16')
    assert printed.returncode == 0, printed.stderr
    assert 'no such key' not in printed.stdout + printed.stderr
    assert 'test_cfg=dict(size_divisor=16)' in printed.stdout
    option = {'model.data_preprocessor.test_cfg.size_divisor': 16}
    for config in (FASHION_UPERNET, test_cfg_none(tmp_path)):  # absent, None
        assert not [line for line in load_config_log(config, option) if 'no such key' in line]
        preprocessor = dict(load_config(str(config), option).model.data_preprocessor)
        del preprocessor['type']
        image = dict(inputs=[torch.zeros(3, 512, 683, dtype=torch.uint8)],
                     data_samples=[SegDataSample()])
        padded = SegDataPreProcessor(**preprocessor)(image, training=False)['inputs']
        assert padded.shape == (1, 3, 512, 688)


def test_a_mistyped_argument_of_an_mmseg_entry_is_refused_at_load(tmp_path):
    """``test_cgf.size_divisor`` was added with the typo warning alone, naming no close name,
    and the class would refuse it only when the Runner built the model: SegDataPreProcessor
    takes no ``test_cgf``. It is refused at load as a mistyped key of fastmim's classes is."""
    from mmseg.models import SegDataPreProcessor
    with pytest.raises(TypeError, match='test_cgf'):
        SegDataPreProcessor(test_cgf=dict(size_divisor=16))
    refusal = (r'--cfg-options model\.data_preprocessor\.test_cgf\.size_divisor: .*: '
               r'model\.data_preprocessor \(SegDataPreProcessor\) takes no test_cgf; '
               r"did you mean 'test_cfg'")
    printed = print_config_fresh(FASHION_UPERNET,
                                 'model.data_preprocessor.test_cgf.size_divisor=16')
    assert printed.returncode != 0 and re.search(refusal, printed.stderr), printed.stderr
    with pytest.raises(LaunchError, match='^' + refusal):
        load_config(str(test_cfg_none(tmp_path)),
                    {'model.data_preprocessor.test_cgf.size_divisor': 16})


@pytest.mark.parametrize('broken', ['top', 'base'])
def test_a_config_that_is_no_valid_python_is_named(tmp_path, broken):
    base, top = tmp_path / 'base.py', tmp_path / 'top.py'
    base.write_text('x = 1\n' if broken == 'top' else 'x = 1\ny = dict(\n')
    top.write_text("_base_ = ['./base.py']\n" + ('z = (1,\n' if broken == 'top' else 'z = 2\n'))
    expected = (rf'{top}, line 2: .*never closed: z = \(1,' if broken == 'top' else
                rf'a _base_ file of {top}, line 2: .*never closed: y = dict\(')
    with pytest.raises(LaunchError, match=expected):
        load_config(str(top))


@pytest.mark.parametrize('depth', ['top', 'base'])
def test_a_missing_base_file_is_named_with_the_config_that_names_it(tmp_path, depth):
    """mmengine's FileNotFoundError named the missing file only."""
    top, middle = tmp_path / 'top.py', tmp_path / 'sub' / 'middle.py'
    middle.parent.mkdir()
    middle.write_text("_base_ = ['./nonexistent_base.py']\n")
    top.write_text("_base_ = ['./sub/middle.py']\n" if depth == 'base' else
                   "_base_ = ['./nonexistent_base.py']\n")
    holder = middle if depth == 'base' else top
    with pytest.raises(LaunchError, match=rf'^{holder}: _base_ file not found: '
                                          rf'{holder.parent / "nonexistent_base.py"}$'):
        load_config(str(top))


def test_a_setting_the_config_leaves_none_is_set_key_by_key(load_config_log):
    """``optim_wrapper.clip_grad.max_norm=3`` (the recipes leave clip_grad None; the guarded
    wrappers advise clipping) failed in mmengine's merge, and a whole dict is refused."""
    cfg = load_config(str(DEMO), {'optim_wrapper.clip_grad.max_norm': 3.0})
    assert cfg.optim_wrapper.clip_grad == {'max_norm': 3.0}
    assert any('clip_grad is None in the config' in message
               for message in load_config_log(DEMO, {'optim_wrapper.clip_grad.max_norm': 3.0}))


def test_a_checkpoint_or_folder_given_as_the_config_is_named(tmp_path):
    """``tools/test.py epoch_1.pth CONFIG`` failed in mmengine with "Only py/yml/yaml/json type
    are supported now!", naming no file; a folder was 'config file not found'."""
    checkpoint = tmp_path / 'epoch_1.pth'
    torch.save({'state_dict': {}}, checkpoint)
    with pytest.raises(LaunchError, match=rf'{checkpoint} is not a .*checkpoint given as '
                                          r'the config\? The config comes first'):
        load_config(str(checkpoint))
    with pytest.raises(LaunchError,
                       match=rf'^config {tmp_path} is a folder; expected a config file'):
        load_config(str(tmp_path))


@pytest.fixture
def pipeline_warnings(load_config_log):
    return lambda config, cfg_options=None: [
        line for line in load_config_log(config, cfg_options) if 'differs from' in line]


def test_a_changed_train_pipeline_that_does_not_reach_the_dataloader_is_named(
        tmp_path, pipeline_warnings):
    """mmengine copied the base's train_pipeline into train_dataloader when it read the base:
    changing the variable alone trained at the old crop without a word."""
    child = tmp_path / 'crop96.py'
    child.write_text(f"_base_ = ['{DEMO}']\ntrain_pipeline = [dict(type='LoadImageRGB')]\n")
    [warning] = pipeline_warnings(child)
    assert 'train_pipeline differs from train_dataloader.dataset.pipeline' in warning
    # --cfg-options train_pipeline.1.size=96: the option's own warning (test_copied_variables.py)
    assert not pipeline_warnings(DEMO)
    assert not pipeline_warnings(DEMO, {'train_dataloader.dataset.pipeline.1.size': 96,
                                         'train_pipeline.1.size': 96})


def test_the_running_pipeline_changed_on_the_command_line_is_not_named(pipeline_warnings):
    """The warning told a user who changed train_dataloader.dataset.pipeline, as it asks, to
    change that pipeline; the variable is then left behind, as the schedule check leaves a
    length variable that --cfg-options train_cfg... overrides."""
    assert not pipeline_warnings(DEMO, {'train_dataloader.dataset.pipeline.1.size': 96})


def test_shipped_configs_use_their_pipeline_variables(pipeline_warnings):
    """Including the mmseg ones, whose inherited variables carry the _scope_ mmengine adds."""
    for config in [SEGMENTATION, *sorted((ROOT / 'configs').rglob('*.py'))]:
        if '_base_' not in config.parts:
            assert not pipeline_warnings(config), config


@pytest.mark.parametrize('value', ["{'type':'SwinTransformer'}", "dict(type='SwinTransformer')"])
def test_a_dict_typed_on_the_command_line_is_named(value):
    """mmengine's DictAction keeps it as a string: the builder said 'cfg should be a dict'."""
    with pytest.raises(LaunchError, match=r'--cfg-options model.backbone=.*a dict cannot '
                                          r'be given on the command line.*'
                                          r'model.backbone.type='):
        load_config(str(DEMO), {'model.backbone': value})


@pytest.mark.parametrize('key, value, current, number', [
    ('model.mask_ratio', 'abc', '0.75', 0.5),
    ('optim_wrapper.optimizer.lr', '1e-3x', '0.001', 0.5),
    ('param_scheduler.1.end', 'twelve', '12', 6)])
def test_a_word_given_for_a_number_is_named(key, value, current, number):
    """It reached the module as a string: model.mask_ratio=abc ended in "'<' not supported
    between instances of 'str' and 'float'", an interpreter error shown as a traceback."""
    with pytest.raises(LaunchError, match=rf'--cfg-options {key}={value}: .*demo_vit_'
                                          rf"tiny_embedded.py has a number there "
                                          rf"\({current}\); '{value}' is not one"):
        load_config(str(DEMO), {key: value})
    load_config(str(DEMO), {key: number, 'model.backbone.init_cfg': 'text where None was'})


@pytest.mark.parametrize('key, value, current', [
    ('model.mask_ratio', [0, 75], '0.75'), ('optim_wrapper.optimizer.weight_decay', [0, 5], '0.05'),
    ('model.neck.depth', (1, 2), '1')])
def test_a_list_given_for_a_number_is_named(key, value, current, load_config_log):
    """mmengine reads 0,75 (a decimal comma) as the list [0, 75]: it reached the module and
    failed there in a TypeError traceback ("'<' not supported between 'int' and 'list'"),
    naming neither the key nor the value."""
    logged = '\n'.join(load_config_log(DEMO, {key: value}))
    assert f'--cfg-options {key}: {DEMO} has a number there ({current}), given the list ' \
        f'{list(value)} (commas separate list items; a decimal number takes a point)' in logged
    assert 'given the list' not in '\n'.join(load_config_log(DEMO, {key: 0.5}))


@pytest.mark.parametrize('key, value', [
    ('train_cfg.max_epochs', 1.5), ('train_cfg.max_epochs', 0), ('train_cfg.max_epochs', True),
    ('train_cfg.val_interval', 0), ('randomness.seed', -1), ('randomness.seed', 2 ** 32),
    ('randomness.seed', 0.5)])
def test_a_count_or_seed_a_run_cannot_use_is_named(key, value):
    """max_epochs=1.5 ended in mmengine's bare AssertionError, seed=-1 in numpy's ValueError
    raised from compiled code, and val_interval=0 in a ZeroDivisionError after the first
    epoch: each a traceback that named no key."""
    with pytest.raises(LaunchError, match=rf'{key}={value!r} \(from .*demo_vit_'
                                          rf'tiny_embedded.py or --cfg-options\)'):
        load_config(str(DEMO), {key: value})


def test_whole_counts_and_seeds_numpy_takes_are_accepted():
    """A count computed in a config (``800 * 0.5``) is a float mmengine's loops accept."""
    for options in ({'train_cfg.max_epochs': 2.0, 'randomness.seed': 2 ** 32 - 1},
                    {'train_cfg.val_interval': 1, 'randomness.seed': None}):
        load_config(str(DEMO), options)


@pytest.mark.parametrize('config, key, value, expected', [
    (DEMO, 'train_dataloader.batch_size', 0, 'an integer of at least 1'),
    (DEMO, 'train_dataloader.batch_size', 2.5, 'an integer of at least 1'),
    (DEMO, 'train_dataloader.batch_size', None, 'an integer of at least 1'),
    (FINETUNE_DEMO, 'val_dataloader.batch_size', -1, 'an integer of at least 1'),
    (FINETUNE_DEMO, 'test_dataloader.batch_size', True, 'an integer of at least 1'),
    (KNN_DEMO, 'test_cfg.bank_dataloader.batch_size', 0, 'an integer of at least 1'),
    (DEMO, 'train_dataloader.num_workers', -1, 'an integer of at least 0'),
    (DEMO, 'train_dataloader.num_workers', 1.5, 'an integer of at least 0'),
    (FINETUNE_DEMO, 'val_dataloader.num_workers', -2, 'an integer of at least 0'),
    (FINETUNE_DEMO, 'test_dataloader.num_workers', None, 'an integer of at least 0'),
    (DEMO, 'optim_wrapper.optimizer.lr', -1, 'a number of at least 0'),
    (DEMO, 'optim_wrapper.optimizer.lr', None, 'a number of at least 0'),
    (DEMO, 'optim_wrapper.optimizer.lr', float('nan'), 'a number of at least 0'),
    (DEMO, 'optim_wrapper.optimizer.lr', [0.001, 0.0005], 'a number of at least 0')])
def test_a_loader_size_or_lr_torch_refuses_is_named(config, key, value, expected):
    """batch_size=0, num_workers=-1 and lr=-1 reached torch once the Runner was built, seconds
    into the start-up, and ended in its errors ('batch_size should be a positive integer
    value', 'num_workers option should be non-negative', 'Invalid learning rate: -1'), which
    name no config key."""
    with pytest.raises(LaunchError, match=rf'^{re.escape(key)}={re.escape(repr(value))} '
                                          rf'\(from .*{config.name} or --cfg-options\): '
                                          rf'expected {expected}'):
        load_config(str(config), {key: value})


def test_loader_sizes_and_lrs_torch_takes_are_accepted():
    """lr=0 is a learning rate torch and mmengine take (a warm-up from zero); a dataloader the
    config leaves None (no validation) has nothing to check."""
    load_config(str(DEMO), {'train_dataloader.batch_size': 1, 'train_dataloader.num_workers': 0,
                            'optim_wrapper.optimizer.lr': 0})
    load_config(str(FINETUNE_DEMO), {'val_dataloader': None, 'val_cfg': None,
                                     'val_evaluator': None, 'test_dataloader.num_workers': 0})


def test_worker_settings_are_left_out_without_workers(load_config_log):
    """num_workers=0 (shrinking a run) on an ImageNet config ended in torch's 'persistent_workers
    option needs num_workers > 0', naming no config key; DataLoader refuses prefetch_factor
    without workers too."""
    config = ROOT / 'configs' / 'finetune' / 'vit_b_ft_100e.py'
    options = {'train_dataloader.num_workers': 0, 'val_dataloader.num_workers': 0,
               'val_dataloader.prefetch_factor': 4}
    logged = load_config_log(config, options)
    assert ('train_dataloader.num_workers=0: persistent_workers left out (they need worker '
            'processes)') in logged
    assert ('val_dataloader.num_workers=0: persistent_workers and prefetch_factor left out '
            '(they need worker processes)') in logged
    cfg = load_config(str(config), options)
    for name in ('train_dataloader', 'val_dataloader'):
        loader = cfg[name]
        assert 'persistent_workers' not in loader and 'prefetch_factor' not in loader
        torch.utils.data.DataLoader([0], num_workers=loader.num_workers,
                                    **{key: value for key, value in loader.items()
                                       if key in ('persistent_workers', 'prefetch_factor')})
    assert load_config(str(config)).train_dataloader.persistent_workers  # with workers: kept


def test_a_packaged_config_is_the_file_under_configs():
    """tools/train.py fastmim::fastmim/... said 'config file not found: fastmim::...', though
    get_model and _base_ take such paths."""
    packaged = load_config('fastmim::fastmim/demo_vit_tiny_embedded.py')
    assert Path(packaged.filename).resolve() == DEMO.resolve()
    assert packaged.model == Config.fromfile(str(DEMO)).model


@pytest.mark.parametrize('config, message', [
    ('fastmim::fastmim/typo.py', r'^fastmim::fastmim/typo\.py: config file not found: .*'
     r'configs/fastmim/typo\.py$'),
    ('fastmim::fastmim/vit_b_hog_80e.py', r'^fastmim::fastmim/vit_b_hog_80e\.py: config file not '
     r'found: .*configs/fastmim/vit_b_hog_80e\.py \(did you mean '
     r'fastmim::fastmim/vit_b_hog_800e\.py or fastmim::fastmim/pvtv2_b2_hog_800e\.py\?\)$'),
    ('fastmin::fastmim/typo.py', r"^config 'fastmin::fastmim/typo\.py': 'fastmin' is not a "
     r'package whose configs mmengine reads'),
])
def test_a_wrong_packaged_config_is_named_as_given(config, message):
    with pytest.raises(LaunchError, match=message):
        load_config(config)


IMG_SIZE_WARNING = 'model.backbone.img_size is'


@pytest.mark.parametrize('config, size, places', [
    (DEMO, 160, ['train_dataloader.dataset.pipeline.1.size (RandomResizedCrop) 128']),
    (FINETUNE_DEMO, 192, ['train_dataloader.dataset.pipeline.1.size (RandomResizedCrop) 160',
                          'train_dataloader.dataset.pipeline.3.img_size (RandAugment) 160',
                          'val_dataloader.dataset.pipeline.1.crop_size (ResizeShorterCenterCrop)'
                          ' 160'])])
def test_an_input_size_changed_in_the_model_alone_is_named(load_config_log, config, size,
                                                           places):
    """A child config that set img_size alone trained at the base's crops without a word (the
    backbones take any size), and its checkpoints recorded both sizes."""
    warnings = [message for message in load_config_log(config, {'model.backbone.img_size': size})
                if IMG_SIZE_WARNING in message]
    assert len(warnings) == 1
    assert (f'model.backbone.img_size is {size}, but the pipelines feed other sizes: '
            f'{", ".join(places)}. The run uses what the pipelines feed') in warnings[0]


def test_no_shipped_config_feeds_another_size_than_its_backbone_is_built_for(load_config_log):
    configs = [path for path in sorted(ROOT.glob('configs/**/*.py'))
               + sorted(ROOT.glob('projects/*/configs/*.py')) if '_base_' not in path.parts]
    assert len(configs) > 30
    for config in configs:
        assert not [message for message in load_config_log(config)
                    if IMG_SIZE_WARNING in message], config


@pytest.mark.parametrize('kind', ['RandomResizedCrop', 'fastmim.RandomResizedCrop', 'class'])
def test_the_fed_input_size_is_found_however_the_transform_is_named(kind):
    """A transform typed by its class (new-style configs) was read as "RandomResizedCrop'>"
    and not found: get_flops measured such a config at no size of its own."""
    from fastmim.datasets.transforms.processing import RandomResizedCrop
    from fastmim.engine.input_sizes import fed_input_size
    cfg = Config(dict(train_dataloader=dict(dataset=dict(pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type=RandomResizedCrop if kind == 'class' else kind, size=96)]))))
    assert fed_input_size(cfg) == (
        'train_dataloader.dataset.pipeline.1.size (RandomResizedCrop)', (96, 96))


SWIN = ROOT / 'configs' / 'fastmim' / 'swin_b_hog_400e.py'
PROGRESSIVE = ROOT / 'configs' / 'fastmim' / 'vit_b_hog_800e_progressive.py'
CROP = 'train_dataloader.dataset.pipeline.1.size (RandomResizedCrop)'


@pytest.mark.parametrize('config, size, block, where', [
    (DEMO, 128, 16, CROP), (SWIN, 128, 32, CROP),
    (PROGRESSIVE, 96, 16, 'custom_hooks.0.stages.0.input_size (ProgressiveResolutionHook)')])
def test_a_mask_ratio_that_leaves_no_block_visible_is_refused_at_load(config, size, block,
                                                                     where):
    """``--cfg-options model.mask_ratio=0.99`` was refused only at the first training
    iteration, after the model, the dataset and the work dir were made; the message is the
    mask generator's, named with the key and where the input and block sizes are set."""
    from fastmim.models.utils import BlockMaskGenerator
    with pytest.raises(ValueError) as generator_refusal:
        BlockMaskGenerator(0.99, block).grid_size(size, size)
    reason = str(generator_refusal.value)[len('mask_ratio=0.99 '):]
    with pytest.raises(LaunchError) as raised:
        load_config(str(config), {'model.mask_ratio': 0.99})
    assert str(raised.value) == (
        f'model.mask_ratio=0.99 (from {config} or --cfg-options): {reason}; the input size '
        f'is set at {where}, the block size at model.block_size')
    assert 'largest mask_ratio that leaves one block visible is' in reason


def test_the_largest_mask_ratio_that_leaves_one_block_visible_is_accepted():
    """1 - 1/64: one of the demo's 64 blocks of 16 px stays visible at 128 px."""
    load_config(str(DEMO), {'model.mask_ratio': 1 - 1 / 64})
    load_config(str(PROGRESSIVE), {'model.mask_ratio': 1 - 1 / 36})


def test_a_crop_the_progressive_stages_replace_is_not_judged():
    """The stages' sizes are what the run feeds; a 16-px crop in the pipeline (one block,
    none visible at 0.75) never reaches the model."""
    load_config(str(PROGRESSIVE), {'train_dataloader.dataset.pipeline.1.size': 16})


def test_a_mask_ratio_of_a_config_whose_input_size_is_not_read_is_left_to_the_model(tmp_path):
    """A pipeline without a transform of known size gives no input size at load: the mask
    generator refuses the ratio at the first mask, as before."""
    config = tmp_path / 'no_crop.py'
    config.write_text(f"_base_ = ['{DEMO}']\n"
                      "train_dataloader = dict(dataset=dict(pipeline=[dict(type='PackInputs')]))\n")
    assert load_config(str(config), {'model.mask_ratio': 0.99}).model.mask_ratio == 0.99


@pytest.mark.parametrize('option, value, message', [
    ('model.backbone.drop_path_rat', 0.1, r"model\.backbone \(VisionTransformer\) takes no "
                                          r"drop_path_rat; did you mean 'drop_path_rate'"),
    ('model.neck.dept', 2, r"model\.neck \(MIMDecoder\) takes no dept; did you mean 'depth'"),
    ('model.backbone.type', 'VisionTransformr', r"VisionTransformr is no registered type where "
                                                r"VisionTransformer is; did you mean "
                                                r"'VisionTransformer'"),
])
def test_a_mistyped_key_or_type_is_refused_at_load_with_the_close_names(option, value,
                                                                        message):
    """The key was added with a warning and refused when the model was built (~190 lines of
    start-up later); the type ended in mmengine's KeyError there, with no suggestion."""
    with pytest.raises(LaunchError, match=rf'^--cfg-options {option}: {DEMO}: {message}'):
        load_config(str(DEMO), {option: value})


def test_a_config_that_sets_no_model_is_refused_as_no_training_config(tmp_path):
    """A _base_ fragment or a results JSON given as CONFIG ended in 'KeyError: model' (train.py,
    test.py) or an AttributeError traceback (get_flops.py)."""
    results = tmp_path / 'results.json'
    results.write_text('{"accuracy/top1": 71.2}')
    for config in (ROOT / 'configs' / '_base_' / 'default_runtime.py', results):
        with pytest.raises(LaunchError, match=rf'^{re.escape(str(config))} sets no `model`: a '
                                              r'`_base_` fragment or not a training config; '
                                              r'give a full config such as configs/'):
            load_config(str(config))


def test_a_model_of_fastmim_without_its_default_scope_is_named():
    """A model fragment has no default_scope: mmengine looked FastMIM up in its own registry
    ('FastMIM is not in the mmengine::model registry'), after making the work dir."""
    fragment = ROOT / 'configs' / '_base_' / 'models' / 'fastmim_vit_b.py'
    with pytest.raises(LaunchError, match=rf"^{re.escape(str(fragment))} sets no default_scope"
                                          r".*FastMIM.*default_scope = 'fastmim'"):
        load_config(str(fragment))
    assert load_config(str(fragment), {'default_scope': 'fastmim'}).model.type == 'FastMIM'


def test_a_fragment_loads_where_no_model_is_built():
    """tools/misc/print_config.py prints a fragment too: printing one is legitimate."""
    for fragment in ('default_runtime.py', 'models/fastmim_vit_b.py'):
        load_config(str(ROOT / 'configs' / '_base_' / fragment), builds_model=False)


@pytest.mark.parametrize('option', ['model..mask_ratio', '.model.mask_ratio',
                                    'model.mask_ratio.', 'model.mask_ratio..'])
def test_a_key_with_an_empty_part_is_refused_naming_the_option(option):
    """A double dot ended in a message cut off at 'takes no ', a leading dot added a key named
    '' with a warning that named none, a trailing one in mmengine's TypeError."""
    with pytest.raises(LaunchError, match=rf'^--cfg-options {re.escape(option)}: an empty key '
                                          r'part \(a leading, trailing or double dot\)$'):
        load_config(str(DEMO), {option: 0.5})


@pytest.mark.parametrize('option, message', [
    ('custom_hooks.1.interval', 'custom_hooks has 1 entry (index 0 to 0)'),
    ('param_scheduler.5.end', 'param_scheduler has 2 entries (index 0 to 1)'),
    ('train_dataloader.dataset.pipeline.9.size',
     'train_dataloader.dataset.pipeline has 4 entries (index 0 to 3)'),
    ('custom_hooks.last.interval', 'custom_hooks is a list of 1 entry: give an index (0 to 0)'),
])
def test_a_list_entry_the_config_lacks_is_refused_naming_the_option(option, message):
    """mmengine's merge ended in a KeyError printing the whole list, naming no option (an
    index past the end), or a TypeError traceback (a name where a list takes an index)."""
    with pytest.raises(LaunchError, match=rf'^--cfg-options {re.escape(option)}: {DEMO}: '
                                          rf'{re.escape(message)}$'):
        load_config(str(DEMO), {option: 3})


@pytest.mark.parametrize('config, option, message', [
    (DEMO, 'train_cfg.max_epoch', r"train_cfg \(ResumableEpochBasedTrainLoop\) takes no "
                                  r"max_epoch; did you mean 'max_epochs'"),
    (ROOT / 'configs' / 'experiments' / 'fashion_mnist_finetune.py', 'train_cfg.max_iter',
     r"train_cfg \(ResumableIterBasedTrainLoop\) takes no max_iter; did you mean 'max_iters'"),
])
def test_a_mistyped_train_loop_key_is_refused_at_load(config, option, message):
    """The loop would refuse it only once the Runner builds it, after the model and the work
    dir: mmengine's names (EpochBasedTrainLoop.__init__) are the ones close to the typo."""
    with pytest.raises(LaunchError, match=rf'^--cfg-options {option}: {config}: {message}'):
        load_config(str(config), {option: 1})


@pytest.mark.parametrize('option, value', [
    ('train_cfg.max_epochs', 3), ('train_cfg.val_interval', 2), ('train_cfg.val_begin', 2),
    ('train_cfg.dynamic_intervals', [(2, 1)])])
def test_the_epoch_loop_s_arguments_are_accepted_without_a_typo_warning(load_config_log,
                                                                       option, value):
    """ResumableEpochBasedTrainLoop hands mmengine's EpochBasedTrainLoop arguments on as
    ``**kwargs``: an argument the config leaves at its default is still the loop's, set on the
    command line with no "has no such key" warning and no refusal."""
    logged = load_config_log(DEMO, {option: value})
    assert not [line for line in logged if 'no such key' in line or 'takes no' in line]


FOOLBOX_EVAL = ROOT / 'configs' / 'timm' / 'tf_efficientnet_lite0_foolbox_eval.py'


@pytest.mark.parametrize('key', ['data_root', 'data_prefix', 'ann_file'])
@pytest.mark.parametrize('config, entry, dataset', [
    (DEMO, 'train_dataloader.dataset', 'EmbeddedPhotos'),
    (KNN_DEMO, 'test_cfg.bank_dataloader.dataset', 'EmbeddedPhotos'),
    (FOOLBOX_EVAL, 'test_dataloader.dataset', 'EmbeddedImageNetPhotos'),
])
def test_a_file_key_given_an_embedded_dataset_is_refused_at_load_with_the_way_to_a_folder(
        config, entry, dataset, key):
    """The key was added with a warning and never read: the run trained on the embedded
    photos, not the folder (with data_prefix too, mmengine's BaseDataset failed on it after
    the start-up: 'str' object has no attribute 'items')."""
    with pytest.raises(LaunchError) as refused:
        load_config(str(config), {f'{entry}.{key}': 'photos'})
    message = str(refused.value)
    assert message.startswith(
        f'--cfg-options {entry}.{key}: {config}: {entry} ({dataset}) takes no {key}; ')
    assert "_delete_=True, type='ImageFolder', data_root=" in message
    assert "docs/data.md, 'Pre-train on your own folder, at demo size'" in message
    assert 'did you mean' not in message


@pytest.mark.parametrize('options', [
    {'model.backbone.mlp_ratio': 2.0},  # timm's VisionTransformer takes it (**timm_kwargs)
    {'model.backbone.type': 'fastmim.SwinTransformer'},
    {'model.backbone.type': 'SwinTransformer'},
    # Checked against the type the options set: timm's VisionTransformer has no window_size.
    {'model.backbone.type': 'SwinTransformer', 'model.backbone.window_size': 4},
    {'custom_hooks.0.priority': 'LOW'},  # taken by the Runner, not the hook
    # TimmBackbone's **kwargs go to timm.create_model, whose keywords depend on the model.
    {'model.backbone.type': 'TimmBackbone', 'model.backbone.global_pool': 'avg'},
])
def test_keys_and_types_the_classes_take_are_accepted(options):
    from fastmim.engine.config_keys import mistyped_option_keys, unknown_option_types
    tree = Config.fromfile(str(DEMO)).to_dict()
    tree.setdefault('custom_hooks', [dict(type='EMAHook')])
    assert not list(mistyped_option_keys(tree, options))
    assert not list(unknown_option_types(tree, options))
    assert list(mistyped_option_keys(tree, {'model.backbone.window_size': 4}))  # ViT's: refused


@pytest.mark.parametrize('backbone', ['VisionTransformer', 'EVA02', 'SwinTransformer',
                                      'PyramidVisionTransformerV2', 'CMT', 'TimmBackbone'])
def test_frozen_stages_is_taken_by_every_backbone(backbone):
    """``--cfg-options model.backbone.frozen_stages=4`` freezes any fastmim backbone."""
    from fastmim.engine.config_keys import added_arguments, mistyped_option_keys
    tree = Config.fromfile(str(DEMO)).to_dict()
    options = {'model.backbone.type': backbone, 'model.backbone.frozen_stages': 4}
    assert not list(mistyped_option_keys(tree, options))
    assert 'model.backbone.frozen_stages' in added_arguments(tree, options)


class _TakesFoo:
    def __init__(self, foo=1):
        self.foo = foo


class _PassesKeywordsToItsBase(_TakesFoo):
    def __init__(self, bar=2, **kwargs):
        super().__init__(**kwargs)
        self.bar = bar


class _KeepsKeywords:
    def __init__(self, bar=2, **kwargs):
        self.settings = dict(kwargs, bar=bar)


def test_a_key_that_kwargs_pass_on_to_a_base_class_is_taken_and_a_typo_refused():
    """A class whose ``**kwargs`` go to its base's ``__init__`` (the embedded datasets pass
    BaseDataset's arguments on) was taken to take any keyword: a typo under it was neither
    warned about nor refused at load, and Python refused it when the Runner built it."""
    from fastmim.engine.config_keys import added_arguments, mistyped_option_keys
    tree = dict(model=dict(type=_PassesKeywordsToItsBase, bar=3))
    assert _PassesKeywordsToItsBase(foo=5).foo == 5  # Python's own answers, the reference
    with pytest.raises(TypeError, match="unexpected keyword argument 'fooo'"):
        _PassesKeywordsToItsBase(fooo=5)

    assert not list(mistyped_option_keys(tree, {'model.foo': 5}))
    assert added_arguments(tree, {'model.foo': 5}) == {'model.foo'}  # no typo warning
    [(option, refusal, close)] = mistyped_option_keys(tree, {'model.fooo': 5})
    assert (option, close) == ('model.fooo', ['foo'])
    assert refusal == 'model (_PassesKeywordsToItsBase) takes no fooo'


def test_a_class_that_keeps_its_kwargs_takes_any_key():
    """``**kwargs`` that no base ``__init__`` takes (they reach ``object``) are the class's
    own (mmengine's CheckpointHook keeps them): no key under it can be called a typo."""
    from fastmim.engine.config_keys import mistyped_option_keys
    tree = dict(model=dict(type=_KeepsKeywords, bar=3))
    assert _KeepsKeywords(anything=1).settings == dict(anything=1, bar=2)
    assert not list(mistyped_option_keys(tree, {'model.anything': 5}))


def test_no_key_or_type_of_a_shipped_config_would_be_refused_on_the_command_line():
    """Every key that a shipped config sets in an entry, given as if the entry lacked it, and
    every type given as itself: none may be refused (builder keys, **kwargs classes)."""
    import copy

    from fastmim.engine.config_keys import (_typed_dicts, mistyped_option_keys,
                                            unknown_option_types)
    configs = [path for path in sorted(ROOT.glob('configs/**/*.py'))
               + sorted(ROOT.glob('projects/*/configs/*.py')) if '_base_' not in path.parts]
    assert len(configs) > 30
    refused, checked = [], 0
    for config in configs:
        cfg = Config.fromfile(str(config))
        tree = cfg.to_dict()
        for path, node in list(_typed_dicts(tree, '')):
            for key in [key for key in node if isinstance(key, str)]:
                lacking = copy.deepcopy(tree)
                entry = lacking
                for part in path.split('.') if path else []:
                    entry = entry[int(part)] if isinstance(entry, list) else entry[part]
                del entry[key]
                option = f'{path}.{key}' if path else key
                refused += [(config.name, *found) for found in
                            mistyped_option_keys(lacking, {option: node[key]})]
                checked += 1
            if path and isinstance(node.get('type'), str):
                refused += [(config.name, *found) for found in unknown_option_types(
                    tree, {f'{path}.type': node['type']}, cfg.get('default_scope'))]
    assert checked > 1000
    assert not refused


DEMO_STARTS = [ROOT / 'configs' / 'finetune' / name for name in
               ('demo_vit_tiny_embedded_ft.py', 'demo_vit_tiny_embedded_linear.py')]


@pytest.mark.parametrize('config', DEMO_STARTS)
def test_a_missing_demo_checkpoint_is_named_with_the_command_that_makes_it(
        config, tmp_path, monkeypatch):
    """Run before `make demo`, a fine-tuning demo names the command that writes its start
    checkpoint and the way to start from scratch, not only 'checkpoint not found'."""
    from fastmim.engine.checkpoint import CheckpointError, check_start_checkpoints
    # A checkout without work_dirs/demo (this one's may hold the demo's), run from elsewhere.
    shutil.copytree(ROOT / 'configs', tmp_path / 'checkout' / 'configs')
    monkeypatch.chdir(tmp_path)
    cfg = load_config(str(tmp_path / 'checkout' / config.relative_to(ROOT)))
    with pytest.raises(CheckpointError) as refused:
        check_start_checkpoints(cfg)
    assert str(refused.value) == (
        'model.backbone.init_cfg.checkpoint: checkpoint not found: '
        'work_dirs/demo/epoch_12.pth; it is made by `make demo` '
        '(configs/fastmim/demo_vit_tiny_embedded.py); to train from scratch instead: '
        '--cfg-options model.backbone.init_cfg=None')


def test_a_demo_checkpoint_relative_to_another_directory_names_the_checkout_s_file(
        tmp_path, monkeypatch):
    """Run from another directory after `make demo`, the fine-tuning demo said the checkpoint
    was not there and that `make demo` makes it: the relative path was read from the current
    directory."""
    from fastmim.engine.checkpoint import CheckpointError, check_start_checkpoints
    checkout, elsewhere = tmp_path / 'checkout', tmp_path / 'elsewhere'
    shutil.copytree(ROOT / 'configs', checkout / 'configs')
    (checkout / 'work_dirs' / 'demo').mkdir(parents=True)
    (checkout / 'work_dirs' / 'demo' / 'epoch_12.pth').write_bytes(b'PK\x05\x06' + bytes(18))
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(str(checkout / 'configs' / 'finetune' / DEMO_STARTS[0].name))
    with pytest.raises(CheckpointError) as refused:
        check_start_checkpoints(cfg)
    assert str(refused.value) == (
        'model.backbone.init_cfg.checkpoint: checkpoint not found: '
        f'work_dirs/demo/epoch_12.pth; it is relative to the current directory {elsewhere}, '
        f'and {checkout}/work_dirs/demo/epoch_12.pth exists: run from {checkout} or give the '
        'full path; to train from scratch instead: --cfg-options model.backbone.init_cfg=None')


@pytest.mark.parametrize('config', DEMO_STARTS)
def test_the_named_maker_writes_the_checkpoint(config):
    """The command named is the pre-training demo, whose last checkpoint (tools/demo.py's
    work dir, epoch max_epochs) is the file the config starts from."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('demo_tool', ROOT / 'tools' / 'demo.py')
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    cfg = Config.fromfile(str(config))
    (path, command), = cfg.checkpoints_made_by.items()
    assert path == cfg.model.backbone.init_cfg.checkpoint
    maker = re.fullmatch(r'`make demo` \((.+)\)', command)[1]
    assert ROOT / maker == Path(demo.CONFIG)
    made = Config.fromfile(demo.CONFIG)
    assert ROOT / path == Path(demo.WORK_DIR) / f'epoch_{made.train_cfg.max_epochs}.pth'
    assert made.train_cfg.max_epochs % made.default_hooks.checkpoint.interval == 0


def test_a_missing_init_checkpoint_no_config_makes_is_named_with_the_scratch_option(
        tmp_path):
    from fastmim.engine.checkpoint import CheckpointError, check_start_checkpoints
    missing = str(tmp_path / 'epoch_800.pth')
    cfg = Config(dict(load_from=None, model=dict(type='X', backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint=missing)))))
    with pytest.raises(CheckpointError, match=rf'^model\.backbone\.init_cfg\.checkpoint: '
                       rf'checkpoint not found: {re.escape(missing)}; to train from scratch '
                       r'instead: --cfg-options model\.backbone\.init_cfg=None$'):
        check_start_checkpoints(cfg)
    with pytest.raises(CheckpointError, match=r'not found: [^;]*$'):  # load_from: no init_cfg
        check_start_checkpoints(Config(dict(load_from=missing)))


@pytest.mark.parametrize('options, key, value', [
    ({'model.test_cfg.crop_size': (250, 250), 'model.test_cfg.stride': (171, 171)},
     'model.test_cfg.crop_size', (250, 250)),
    ({'model.data_preprocessor.size': (250, 250),
      'train_dataloader.dataset.pipeline.3.crop_size': (250, 250)},
     'model.data_preprocessor.size', (250, 250)),
    ({'model.data_preprocessor.size': (240, 240),
      'train_dataloader.dataset.pipeline.3.crop_size': (250, 250)},
     'train_dataloader.dataset.pipeline.3.crop_size', (250, 250))])
def test_a_size_the_plain_vit_cannot_take_is_refused_at_load(options, key, value):
    """A slide-test crop of 250 px for a ViT/16 passed training and failed at the first
    validation (iteration 16,000 at full scale) in the backbone's ValueError, naming no key; a
    250-px training crop that the data preprocessor does not pad (to a size of 240 it pads
    nothing) failed at the first forward."""
    with pytest.raises(LaunchError, match=rf'^{re.escape(key)}={re.escape(repr(value))} '
                                          rf'\(from .*{SEGMENTATION.name} or --cfg-options\): '
                                          r'.*VisionTransformer.* multiples of 16 '
                                          r'\(model\.backbone\.patch_size\)'):
        load_config(str(SEGMENTATION), options)


@pytest.mark.parametrize('options', [
    # padded to the preprocessor's 512 x 512
    {'train_dataloader.dataset.pipeline.3.crop_size': (250, 250)},
    # padded to a multiple of 16
    {'model.data_preprocessor.size': None, 'model.data_preprocessor.size_divisor': 16,
     'train_dataloader.dataset.pipeline.3.crop_size': (250, 250)},
    # whole-image inference crops nothing, and the evaluation images are padded to multiples
    # (by size_divisor in place of the recipe's size: mmseg pads by one of the two)
    {'model.test_cfg.mode': 'whole', 'model.test_cfg.crop_size': (250, 250),
     'model.data_preprocessor.test_cfg.size': None,
     'model.data_preprocessor.test_cfg.size_divisor': 16},
    # whole-image inference of images resized to 500 x 512, padded to the recipe's 512 x 512
    {'model.test_cfg.mode': 'whole', 'val_dataloader.dataset.pipeline.1.keep_ratio': False,
     'val_dataloader.dataset.pipeline.1.scale': (500, 512),
     'test_dataloader.dataset.pipeline.1.keep_ratio': False,
     'test_dataloader.dataset.pipeline.1.scale': (500, 512)},
    # whole-image inference of images resized to one size, a multiple of 16
    {'model.test_cfg.mode': 'whole', 'val_dataloader.dataset.pipeline.1.keep_ratio': False,
     'val_dataloader.dataset.pipeline.1.scale': (512, 512),
     'test_dataloader.dataset.pipeline.1.keep_ratio': False,
     'test_dataloader.dataset.pipeline.1.scale': (512, 512)},
    # multiples of the patch size the config gives (the size built for too)
    {'model.backbone.patch_size': 10, 'model.backbone.img_size': 250,
     'model.data_preprocessor.size': (250, 250),
     'train_dataloader.dataset.pipeline.3.crop_size': (250, 250),
     'model.test_cfg.crop_size': (250, 250)}])
def test_sizes_the_plain_vit_takes_are_accepted(options):
    load_config(str(SEGMENTATION), options)



def test_mmseg_pads_evaluation_images_only_as_its_test_cfg_says():
    """Why whole-image inference is checked: mmseg's SegDataPreProcessor pads training batches
    to ``size`` / ``size_divisor``, evaluation images only to what its ``test_cfg`` says. A
    512 x 683 image (the recipe's test Resize, scale (2048, 512) with keep_ratio, of a 375 x
    500 photo) reaches a ViT/16 as it is, which the ViT refuses at the first validation."""
    from mmseg.models import SegDataPreProcessor
    from mmseg.structures import SegDataSample
    image = dict(inputs=[torch.zeros(3, 512, 683, dtype=torch.uint8)],
                 data_samples=[SegDataSample()])
    unpadded = SegDataPreProcessor(size=(512, 512), size_divisor=16)
    assert unpadded(image, training=False)['inputs'].shape == (1, 3, 512, 683)
    padded = SegDataPreProcessor(test_cfg=dict(size_divisor=16))
    assert padded(image, training=False)['inputs'].shape == (1, 3, 512, 688)


NO_TEST_SIZE = {'model.data_preprocessor.test_cfg.size': None}


@pytest.mark.parametrize('options, advice', [
    # the recipe's padding to 512 x 512 leaves the larger images as they are
    ({}, r'test_cfg=dict\(size=None, size_divisor=16\) \(its size \(512, 512\) pads only '
         r'the images smaller than it'),
    # padded, but to multiples of 8
    ({**NO_TEST_SIZE, 'model.data_preprocessor.test_cfg.size_divisor': 8},
     r'test_cfg=dict\(size_divisor=16\)'),
    # the training batches' padding does not reach the evaluation images
    ({'model.data_preprocessor.size': None, 'model.data_preprocessor.size_divisor': 16},
     r'test_cfg=dict\(size=None, size_divisor=16\)'),
    # a size of multiples, but smaller than the longest side the Resize gives (2048)
    ({'model.data_preprocessor.test_cfg.size': (1024, 1024)},
     r'test_cfg=dict\(size=None, size_divisor=16\) \(its size \(1024, 1024\)')])
def test_whole_inference_of_images_resized_to_their_aspect_ratio_is_refused_at_load(options,
                                                                                     advice):
    """Whole-image inference feeds each evaluation image at the size the test Resize gives it
    (keep_ratio: it follows the image's aspect ratio, 512 x 683 for a 375 x 500 photo), which
    the ViT refused at the first validation, after the training's first 16,000 iterations. A
    test_cfg size pads only the images smaller than it."""
    options = {'model.test_cfg.mode': 'whole', **options}
    with pytest.raises(LaunchError, match=(
            rf"^model\.test_cfg\.mode='whole' \(from .*{SEGMENTATION.name} or --cfg-options\): "
            r'.*VisionTransformer.* multiples of 16 \(model\.backbone\.patch_size\); '
            r'whole-image inference feeds each image as val_dataloader\.dataset\.pipeline\.1 '
            r'\(Resize, keep_ratio=True\) resizes it, to sides that follow its aspect ratio, '
            r'padded only as model\.data_preprocessor\.test_cfg says.*: set '
            rf'model\.data_preprocessor\.{advice}')):
        load_config(str(SEGMENTATION), options)


def test_whole_inference_of_images_resized_to_another_size_names_the_scale():
    """Without keep_ratio, Resize's scale (w, h) is the one size every image gets; 600 px
    is wider than the recipe's evaluation padding (512)."""
    options = {'model.test_cfg.mode': 'whole'}
    for loader in ('val_dataloader', 'test_dataloader'):
        options.update({f'{loader}.dataset.pipeline.1.keep_ratio': False,
                        f'{loader}.dataset.pipeline.1.scale': (600, 512)})
    with pytest.raises(LaunchError, match=(
            r'^val_dataloader\.dataset\.pipeline\.1\.scale=\(600, 512\) .*multiples of 16 '
            r'.*whole-image inference feeds each image at this size')):
        load_config(str(SEGMENTATION), options)



@pytest.mark.parametrize('options', [
    # the whole-image advice typed on the command line, beside the recipe's size
    {'model.data_preprocessor.test_cfg.size_divisor': 16},
    # the recipe's padding turned off: a test_cfg that pads by neither
    NO_TEST_SIZE])
def test_an_evaluation_padding_mmseg_asserts_against_is_refused_at_load(options):
    """mmseg's SegDataPreProcessor with a test_cfg pads the evaluation images by exactly one
    of size and size_divisor, and asserts it only at the first validation."""
    from mmseg.models import SegDataPreProcessor
    from mmseg.structures import SegDataSample
    cfg = Config.fromfile(str(SEGMENTATION))
    cfg.merge_from_dict(options)
    padding = cfg.model.data_preprocessor.test_cfg
    image = dict(inputs=[torch.zeros(3, 512, 683, dtype=torch.uint8)],
                 data_samples=[SegDataSample()])
    with pytest.raises(AssertionError, match='only one of size and size_divisor'):
        SegDataPreProcessor(test_cfg=dict(padding))(image, training=False)
    with pytest.raises(LaunchError, match=(
            rf'^model\.data_preprocessor\.test_cfg=.*\(from .*{SEGMENTATION.name} or '
            r"--cfg-options\): mmseg's SegDataPreProcessor pads the evaluation images by "
            r'exactly one of size and size_divisor')):
        load_config(str(SEGMENTATION), options)


@pytest.mark.parametrize('divisor, refused', [(32, False), (8, True)])
def test_whole_inference_of_images_rounded_to_multiples_after_the_resize(tmp_path, divisor,
                                                                        refused):
    """mmseg's ResizeToMultiple after the Resize makes the sides multiples of its divisor."""
    child = tmp_path / 'child.py'
    child.write_text(
        f"_base_ = ['{SEGMENTATION}']\nmodel = dict(test_cfg=dict(mode='whole'))\n"
        "pipeline = [dict(type='LoadImageFromFile'),\n"
        "            dict(type='Resize', scale=(2048, 512), keep_ratio=True),\n"
        f"            dict(type='ResizeToMultiple', size_divisor={divisor}),\n"
        "            dict(type='LoadAnnotations', reduce_zero_label=True),\n"
        "            dict(type='PackSegInputs')]\n"
        "val_dataloader = dict(dataset=dict(pipeline=pipeline))\n"
        "test_dataloader = val_dataloader\n")
    if not refused:
        load_config(str(child))
        return
    with pytest.raises(LaunchError, match=r"^model\.test_cfg\.mode='whole' .*"
                                          r'val_dataloader\.dataset\.pipeline\.1 \(Resize'):
        load_config(str(child))

def test_whole_inference_of_images_the_pipeline_does_not_resize_is_not_judged():
    """The Fashion-MNIST study's test pipeline resizes nothing: its 64-px canvases are fed as
    the dataset holds them, a size the config does not state."""
    config = ROOT / 'configs' / 'experiments' / 'fashion_mnist_upernet.py'
    cfg = load_config(str(config))
    assert cfg.model.test_cfg.mode == 'whole' and 'test_cfg' not in cfg.model.data_preprocessor

# The segmentation recipe's sizes, 496 px: a multiple of 16, none of 32.
OFF_32 = [{'model.test_cfg.crop_size': (496, 496), 'model.test_cfg.stride': (331, 331)},
          {'model.data_preprocessor.size': (496, 496),
           'train_dataloader.dataset.pipeline.3.crop_size': (496, 496)}]
TINY_SWIN = dict(type='fastmim.SwinTransformer', arch='t', img_size=224, window_size=7,
                 out_indices=(0, 1, 2, 3))
TINY_CMT = dict(type='fastmim.CMT', arch='ti', img_size=224, out_indices=(0, 1, 2, 3))


def segmentation_with(tmp_path, backbone: dict) -> Path:
    """The segmentation recipe with another fastmim backbone, as a user's child config
    replaces it."""
    child = tmp_path / 'child.py'
    child.write_text(f"_base_ = ['{SEGMENTATION}']\n"
                     f"model = dict(backbone=dict(_delete_=True, **{backbone!r}))\n")
    return child


@pytest.mark.parametrize('options', OFF_32)
@pytest.mark.parametrize('backbone, why', [
    # 4 px patches halved by a patch merging at each of the 3 stages after the first
    (TINY_SWIN, r'SwinTransformer takes inputs whose height and width are multiples of 32 '
                r'\(its total stride: model\.backbone\.patch_size 4 x 2\^3'),
    # a stride-2 stem, then a stride-2 patch aggregation opening each of the 4 stages
    (TINY_CMT, r'CMT takes inputs whose height and width are multiples of 32 '
               r'\(its total stride')])
def test_a_size_off_the_total_stride_of_swin_or_cmt_is_refused_at_load(tmp_path, options,
                                                                       backbone, why):
    """Swin and CMT refuse, in their forward and naming no key, an input whose sides are no
    multiples of 32 (Swin's ``input size (496, 496) must be a multiple of the total stride
    32``); they stated no multiple, so config load passed a 496-px slide-test crop, which
    failed at the first validation."""
    key, value = next((key, value) for key, value in options.items() if 'stride' not in key)
    with pytest.raises(LaunchError, match=rf'^{re.escape(key)}={re.escape(repr(value))} '
                                          rf'\(from .*child\.py or --cfg-options\): {why}'):
        load_config(str(segmentation_with(tmp_path, backbone)), options)


def test_the_swin_multiple_follows_its_patch_size_and_stages(tmp_path):
    """Two stages of 2-px patches: a total stride of 4, which 500 px is a multiple of."""
    two_stages = dict(TINY_SWIN, arch=dict(embed_dim=16, depths=(2, 2), num_heads=(1, 2)),
                      patch_size=2, out_indices=(0, 1))
    sizes = {'model.test_cfg.crop_size': (500, 500), 'model.test_cfg.stride': (331, 331),
             'model.data_preprocessor.size': (500, 500)}
    load_config(str(segmentation_with(tmp_path, two_stages)), sizes)
    with pytest.raises(LaunchError, match=r'multiples of 4 \(its total stride: '
                                          r'model\.backbone\.patch_size 2 x 2\^1'):
        load_config(str(segmentation_with(tmp_path, two_stages)),
                    {**sizes, 'model.test_cfg.crop_size': (502, 502)})


@pytest.mark.parametrize('backbone', [TINY_SWIN, TINY_CMT])
def test_multiples_of_the_total_stride_are_accepted(tmp_path, backbone):
    load_config(str(segmentation_with(tmp_path, backbone)))  # 512 px throughout


@pytest.mark.parametrize('options', OFF_32)
def test_pvtv2_takes_any_size_and_no_size_is_refused(tmp_path, options):
    """PVTv2's patch embeddings are padded convolutions: any size runs
    (tests/test_models/test_backbones/test_pvtv2.py)."""
    pvtv2 = dict(type='fastmim.PyramidVisionTransformerV2', arch='b0', out_indices=(0, 1, 2, 3))
    load_config(str(segmentation_with(tmp_path, pvtv2)), options)


DETECTION = ROOT / 'projects' / 'detection' / 'configs' / 'mask_rcnn_fastmim_swin_b_fpn_3x_coco.py'
VIT_DETECTION = (ROOT / 'projects' / 'detection' / 'configs' /
                 'mask_rcnn_fastmim_vit_b_simple_fpn_lsj_coco.py')


def test_mmdet_pads_evaluation_images_to_its_pad_size_divisor():
    """Why the detection padding is checked: mmdet's DetDataPreprocessor pads the evaluation
    batches to multiples of pad_size_divisor, as the training ones. A 424 x 640 photo resized to
    fit the Swin recipe's (1666, 1024) keeping its ratio is 1024 x 1546; by 16 it is padded to
    1024 x 1552, no multiple of Swin's 32."""
    from mmdet.models import DetDataPreprocessor
    from mmdet.structures import DetDataSample
    image = dict(inputs=[torch.zeros(3, 1024, 1546, dtype=torch.uint8)],
                 data_samples=[DetDataSample()])
    padded = DetDataPreprocessor(pad_size_divisor=16)(image, training=False)['inputs']
    assert padded.shape == (1, 3, 1024, 1552)


def test_a_detection_pad_size_divisor_off_the_backbone_multiple_is_refused_at_load():
    """``pad_size_divisor=16`` with the Swin recipe passed the config load and the training
    (its crops are padded to 1024 x 1024) and failed at the first validation, after a whole
    epoch, in Swin's 'input size (1024, 1552) must be a multiple of the total stride 32'."""
    with pytest.raises(LaunchError, match=(
            rf'^model\.data_preprocessor\.pad_size_divisor=16 \(from .*{DETECTION.name} or '
            r'--cfg-options\): SwinTransformer takes inputs whose height and width are '
            r'multiples of 32 \(its total stride.*\); evaluation feeds each image as '
            r'val_dataloader\.dataset\.pipeline\.1 \(Resize, keep_ratio=True\) resizes it, to '
            r'sides that follow its aspect ratio, padded to multiples of pad_size_divisor: '
            r'give a multiple of 32$')):
        load_config(str(DETECTION), {'model.data_preprocessor.pad_size_divisor': 16})


def detection_test_pipeline_with(tmp_path, padding: str) -> Path:
    """The Swin recipe with ``padding`` (a transform) after its test Resize."""
    child = tmp_path / 'child.py'
    child.write_text(f"_base_ = ['{DETECTION}']\n"
                     "test_pipeline = [\n"
                     "    dict(type='LoadImageFromFile'),\n"
                     "    dict(type='Resize', scale=(1666, 1024), keep_ratio=True),\n"
                     f"    {padding},\n"
                     "    dict(type='PackDetInputs')]\n"
                     "val_dataloader = dict(dataset=dict(pipeline=test_pipeline))\n"
                     "test_dataloader = val_dataloader\n")
    return child


@pytest.mark.parametrize('config, options', [
    (DETECTION, {'model.data_preprocessor.pad_size_divisor': 64}),
    # ViT/16 takes multiples of 16
    (VIT_DETECTION, {'model.data_preprocessor.pad_size_divisor': 16}),
    # test images all resized to one size of multiples of 32: (w, h) = (1344, 800)
    (DETECTION, {'model.data_preprocessor.pad_size_divisor': 16,
                 **{f'{loader}.dataset.pipeline.1.{key}': value
                    for loader in ('val_dataloader', 'test_dataloader')
                    for key, value in (('keep_ratio', False), ('scale', (1344, 800)))}})])
def test_a_detection_padding_the_backbone_takes_is_accepted(config, options):
    load_config(str(config), options)


@pytest.mark.parametrize('padding', [
    "dict(type='Pad', size_divisor=32)",
    # LSJ-style: every image padded to one square of multiples of 32, larger than any side
    "dict(type='Pad', size=(1696, 1696))"])
def test_detection_images_padded_to_multiples_in_the_test_pipeline_are_accepted(tmp_path,
                                                                                padding):
    load_config(str(detection_test_pipeline_with(tmp_path, padding)),
                {'model.data_preprocessor.pad_size_divisor': 16})


def test_detection_images_padded_to_a_size_smaller_than_the_resize_are_refused(tmp_path):
    """mmcv's Pad leaves a side longer than its size as it is: a 1024 x 1546 image stays 1546
    wide beside a Pad to 1024 x 1024."""
    padded = detection_test_pipeline_with(tmp_path, "dict(type='Pad', size=(1024, 1024))")
    with pytest.raises(LaunchError, match=r'^model\.data_preprocessor\.pad_size_divisor=16 '):
        load_config(str(padded), {'model.data_preprocessor.pad_size_divisor': 16})


def test_detection_images_of_one_size_padded_off_the_multiple_are_refused():
    """Without keep_ratio every test image is 800 x 1350, which pad_size_divisor 16 pads to
    800 x 1360: no multiple of Swin's 32."""
    options = {'model.data_preprocessor.pad_size_divisor': 16}
    for loader in ('val_dataloader', 'test_dataloader'):
        options.update({f'{loader}.dataset.pipeline.1.keep_ratio': False,
                        f'{loader}.dataset.pipeline.1.scale': (1350, 800)})
    with pytest.raises(LaunchError, match=(
            r'^model\.data_preprocessor\.pad_size_divisor=16 .*multiples of 32 .*evaluation '
            r'feeds each image as val_dataloader\.dataset\.pipeline\.1 \(Resize scale \(w, h\) '
            r'without keep_ratio\) resizes it, padded to multiples of pad_size_divisor: '
            r'800 x 1360; give a multiple of 32$')):
        load_config(str(DETECTION), options)


SWIN_FINETUNE = ROOT / 'configs' / 'finetune' / 'swin_b_ft_100e.py'


VIT_16 = r'VisionTransformer takes inputs whose height and width are multiples of 16 '


@pytest.mark.parametrize('config, key, value, why', [
    (FINETUNE_DEMO, 'train_dataloader.dataset.pipeline.1.size', 150,
     VIT_16 + r'\(model\.backbone\.patch_size\)$'),
    (FINETUNE_DEMO, 'val_dataloader.dataset.pipeline.1.crop_size', 150, VIT_16),
    (FINETUNE_DEMO, 'test_dataloader.dataset.pipeline.1.crop_size', (160, 150), VIT_16),
    # the kNN bank's crops, read by the test loop
    (KNN_DEMO, 'test_cfg.bank_dataloader.dataset.pipeline.1.size', 120, VIT_16),
    # 208 px: a multiple of 16, none of Swin's 32
    (SWIN_FINETUNE, 'train_dataloader.dataset.pipeline.1.size', 208,
     r'SwinTransformer takes inputs whose height and width are multiples of 32 '
     r'\(its total stride')])
def test_a_classification_crop_the_backbone_cannot_take_is_refused_at_load(config, key, value,
                                                                           why):
    """A fine-tuning crop of 150 px for a ViT/16 loaded and failed in the forward, naming no
    key ('expected a (B, C, H, W) input with H and W multiples of the patch size 16, got (2,
    3, 150, 150)'): a training crop at the first iteration, once the dataset and the model
    were built and the checkpoint loaded, an evaluation crop only at the first validation."""
    with pytest.raises(LaunchError, match=rf'^{re.escape(key)}={re.escape(repr(value))} '
                                          rf'\(from .*{config.name} or --cfg-options\): {why}'):
        load_config(str(config), {key: value})


@pytest.mark.parametrize('options', [
    # resolution transfer: crops of 144 px for a backbone built at 160 (img_size) run
    {'train_dataloader.dataset.pipeline.1.size': 144,
     'val_dataloader.dataset.pipeline.1.crop_size': 144},
    # multiples of the patch size the config gives
    {'model.backbone.patch_size': 10, 'train_dataloader.dataset.pipeline.1.size': 150,
     'val_dataloader.dataset.pipeline.1.crop_size': 150},
    # padded to multiples of 16 by the data preprocessor, in training and evaluation
    {'model.data_preprocessor.pad_size_divisor': 16,
     'train_dataloader.dataset.pipeline.1.size': 150,
     'val_dataloader.dataset.pipeline.1.crop_size': 150}])
def test_classification_crops_the_backbone_takes_are_accepted(options):
    load_config(str(FINETUNE_DEMO), options)


def test_a_training_crop_the_progressive_stages_replace_is_not_judged(tmp_path):
    """ProgressiveResolutionHook sets the training crop's size from its first stage on: the
    pipeline's own size is never fed."""
    child = tmp_path / 'child.py'
    child.write_text(f"_base_ = ['{FINETUNE_DEMO}']\n"
                     "custom_hooks = [dict(type='ProgressiveResolutionHook', stages=[\n"
                     "    dict(epoch=0, input_size=128, batch_size=32, accumulative_counts=1),\n"
                     "    dict(epoch=5, input_size=160, batch_size=32, accumulative_counts=1)])]\n")
    load_config(str(child), {'train_dataloader.dataset.pipeline.1.size': 150})


@pytest.mark.parametrize('config, options, value, other', [
    # size_divisor typed on the command line beside the recipe's size
    (SEGMENTATION, {'model.data_preprocessor.size_divisor': 16}, (512, 512),
     r'model\.data_preprocessor\.size_divisor is 16 too: set one of them None'),
    # the study's padding turned off: neither
    (FASHION_UPERNET, {'model.data_preprocessor.size': None}, None,
     r'model\.data_preprocessor\.size_divisor is None too: set one of them')])
def test_a_training_padding_mmseg_asserts_against_is_refused_at_load(config, options, value,
                                                                     other):
    """mmseg's SegDataPreProcessor pads the training batches by exactly one of its size and
    size_divisor, and asserts it only at the first training iteration, once the datasets and
    the model are built and the checkpoint loaded."""
    from mmseg.models import SegDataPreProcessor
    from mmseg.structures import SegDataSample
    cfg = Config.fromfile(str(config))
    cfg.merge_from_dict(options)
    preprocessor = dict(cfg.model.data_preprocessor)
    del preprocessor['type']
    image = dict(inputs=[torch.zeros(3, 64, 64, dtype=torch.uint8)],
                 data_samples=[SegDataSample()])
    with pytest.raises(AssertionError, match='only one of size and size_divisor'):
        SegDataPreProcessor(**preprocessor)(image, training=True)
    with pytest.raises(LaunchError, match=(
            rf'^model\.data_preprocessor\.size={re.escape(repr(value))} \(from '
            rf".*{config.name} or --cfg-options\): mmseg's SegDataPreProcessor pads the "
            r'training batches by exactly one of size and size_divisor \(its stack_batch '
            rf'asserts it at the first training iteration\), and {other}$')):
        load_config(str(config), options)


def test_a_config_that_trains_nothing_needs_no_training_padding(tmp_path):
    """Without training batches (a config for tools/test.py alone) mmseg stacks the
    evaluation images as its test_cfg says, whatever size and size_divisor are."""
    child = tmp_path / 'child.py'
    child.write_text(f"_base_ = ['{FASHION_UPERNET}']\n"
                     "model = dict(data_preprocessor=dict(size=None))\n"
                     "train_dataloader = None\ntrain_cfg = None\noptim_wrapper = None\n"
                     "param_scheduler = None\n")
    load_config(str(child))


PRETRAINING_CROP = 'train_dataloader.dataset.pipeline.1.size'
STAGE = 'custom_hooks.0.stages.0.input_size'


@pytest.mark.parametrize('config, key', [(DEMO, PRETRAINING_CROP), (PROGRESSIVE, STAGE)])
def test_a_pretraining_size_the_mask_blocks_do_not_tile_is_refused_at_load(config, key):
    """A 136-px pre-training crop for the ViT recipes' 16-px blocks loaded and was refused by
    FastMIM's check_input_size only at the first forward (a progressive stage's once the
    Runner, model and dataset were built): the load refuses it in the mask generator's
    words, naming the key."""
    from fastmim.models.utils import BlockMaskGenerator
    with pytest.raises(ValueError) as generator_refusal:
        BlockMaskGenerator(0.75, 16).grid_size(136, 136, size_setting=key)
    with pytest.raises(LaunchError) as raised:
        load_config(str(config), {key: 136})
    assert str(raised.value) == (f'{key}=136 (from {config} or --cfg-options): '
                                 f'{generator_refusal.value}')


@pytest.mark.parametrize('config, key, size, block, why', [
    # 8-px blocks tile 136 px; the ViT's 16-px patches do not
    (DEMO, PRETRAINING_CROP, 136, 8, VIT_16 + r'\(model\.backbone\.patch_size\)$'),
    (PROGRESSIVE, STAGE, 136, 8, VIT_16 + r'\(model\.backbone\.patch_size\)$'),
    # 144 px: 16-px blocks tile it, Swin's total stride does not
    (SWIN, PRETRAINING_CROP, 144, 16, r'SwinTransformer takes inputs whose height and width '
                                      r'are multiples of 32 \(its total stride')])
def test_a_pretraining_size_off_the_backbone_multiple_is_refused_at_load(config, key, size,
                                                                         block, why):
    """FastMIM refused a crop its mask blocks tile but the backbone's stride does not only at
    the first forward ('input 144x144 is not a multiple of the backbone output stride 32');
    the load refuses it as it refuses a fine-tuning crop."""
    with pytest.raises(LaunchError, match=rf'^{re.escape(key)}={size} '
                                          rf'\(from .*{config.name} or --cfg-options\): {why}'):
        load_config(str(config), {key: size, 'model.block_size': block})


@pytest.mark.parametrize('config, options', [
    (DEMO, {PRETRAINING_CROP: 144}),
    (PROGRESSIVE, {STAGE: 112}),
    (SWIN, {PRETRAINING_CROP: 160}),
    # padded to 144 x 144 by the data preprocessor: its blocks and patches tile that
    (DEMO, {PRETRAINING_CROP: 136, 'model.data_preprocessor.pad_size_divisor': 16})])
def test_pretraining_sizes_the_model_takes_are_accepted(config, options):
    load_config(str(config), options)


# What the slide-inference warning tells to set, for the segmentation recipe's 512-px crop.
SLIDE_PADDING = 'model.data_preprocessor.test_cfg=dict(size=(512, 512), size_divisor=None)'


def slide_windows(cfg, height, width):
    """The window sizes that mmseg's slide inference feeds the model for a ``height`` x
    ``width`` photo under ``cfg`` (the segmentation recipe's settings): the test Resize,
    then the data preprocessor's evaluation padding, then slide_inference itself, with an
    encode_decode that records what it is given."""
    import numpy as np
    from types import SimpleNamespace
    from mmcv.transforms import Resize
    from mmseg.models import EncoderDecoder, SegDataPreProcessor
    from mmseg.structures import SegDataSample
    resize, = [dict(transform) for transform in cfg.test_dataloader.dataset.pipeline
               if transform['type'] == 'Resize']
    del resize['type']
    image = Resize(**resize)(dict(img=np.zeros((height, width, 3), np.uint8)))['img']
    padding = cfg.model.data_preprocessor.get('test_cfg')
    preprocessor = SegDataPreProcessor(test_cfg=dict(padding) if padding else None)
    inputs = preprocessor(dict(inputs=[torch.from_numpy(image).permute(2, 0, 1)],
                               data_samples=[SegDataSample()]), training=False)['inputs']
    windows = []

    def encode_decode(crop, metas):
        windows.append(tuple(crop.shape[-2:]))
        return crop.new_zeros(1, 1, *crop.shape[-2:])
    segmentor = SimpleNamespace(test_cfg=cfg.model.test_cfg, out_channels=1,
                                encode_decode=encode_decode)
    EncoderDecoder.slide_inference(segmentor, inputs.float(), [{}])
    return set(windows)


def test_mmseg_slide_inference_crops_an_unpadded_image_below_the_crop_at_its_own_size():
    """Why slide inference without evaluation padding is warned about: the recipe's test Resize
    (scale (2048, 512), keep_ratio) makes a 100 x 1000 photo 205 x 2048, and slide inference
    crops it at 205 rows, which a ViT/16 refuses; the recipe's padding to the crop makes its
    windows 512 x 512. A 4:3 photo is as large as the crop: padded or not, its windows are."""
    recipe = Config.fromfile(str(SEGMENTATION))
    unpadded = Config.fromfile(str(SEGMENTATION))
    unpadded.model.data_preprocessor.test_cfg = None
    assert slide_windows(unpadded, 100, 1000) == {(205, 512)}
    assert slide_windows(recipe, 100, 1000) == {(512, 512)}
    assert slide_windows(unpadded, 375, 500) == slide_windows(recipe, 375, 500) == {(512, 512)}


@pytest.mark.parametrize('options', [
    {'model.data_preprocessor.test_cfg': None},
    # padded, but only the images smaller than 256 px
    {'model.data_preprocessor.test_cfg.size': (256, 256)},
    # padded, but to multiples of 8
    {'model.data_preprocessor.test_cfg.size': None,
     'model.data_preprocessor.test_cfg.size_divisor': 8}])
def test_slide_inference_of_images_the_config_does_not_pad_is_warned_about(load_config_log,
                                                                          options):
    """Without padding to the crop, the recipe loaded without a word, and its validation
    failed at the first image wider than 4:1, in the ViT's 'expected ... H and W multiples of
    the patch size 16, got (1, 3, 205, 512)'. Only such images fail, so the load warns,
    naming the key that pads them."""
    warned = [line for line in load_config_log(SEGMENTATION, options) if SLIDE_PADDING in line]
    assert len(warned) == 1
    assert re.search(r"model\.test_cfg\.mode='slide'.*val_dataloader\.dataset\.pipeline\.1 "
                     r'\(Resize, keep_ratio=True\).*more elongated than 4:1.*'
                     r'VisionTransformer takes inputs whose height and width are multiples of '
                     r'16', warned[0]), warned[0]


PVTV2 = dict(type='fastmim.PyramidVisionTransformerV2', arch='b0', out_indices=(0, 1, 2, 3))


@pytest.mark.parametrize('backbone, options', [
    # the recipe: padded to the crop
    (None, {}),
    # padded to multiples of 16
    (None, {'model.data_preprocessor.test_cfg.size': None,
            'model.data_preprocessor.test_cfg.size_divisor': 16}),
    # every image resized to 1024 x 512: as large as the crop
    (None, {'model.data_preprocessor.test_cfg': None,
            **{f'{loader}.dataset.pipeline.1.{key}': value
               for loader in ('val_dataloader', 'test_dataloader')
               for key, value in (('keep_ratio', False), ('scale', (1024, 512)))}}),
    # PVTv2 takes any size
    (PVTV2, {'model.data_preprocessor.test_cfg': None})])
def test_slide_inference_of_images_that_reach_the_crop_is_not_warned_about(
        tmp_path, load_config_log, backbone, options):
    config = segmentation_with(tmp_path, backbone) if backbone else SEGMENTATION
    assert not [line for line in load_config_log(config, options) if 'slide' in line]


SWIN_PRETRAINING = ROOT / 'configs' / 'fastmim' / 'swin_b_hog_400e.py'
CMT_PRETRAINING = ROOT / 'configs' / 'fastmim' / 'cmt_s_hog_800e.py'
EVA02_PRETRAINING = ROOT / 'configs' / 'fastmim' / 'eva02_b_hog_800e.py'
PVTV2_PRETRAINING = ROOT / 'configs' / 'fastmim' / 'pvtv2_b2_hog_800e.py'
SWIN_TOTAL_STRIDE = (r'SwinTransformer takes inputs whose height and width are multiples of 32 '
                     r'\(its total stride: model\.backbone\.patch_size 4 x 2\^3')


@pytest.mark.parametrize('config, value, why', [
    (SWIN_PRETRAINING, 130, SWIN_TOTAL_STRIDE),
    (SWIN_FINETUNE, (224, 230), SWIN_TOTAL_STRIDE),
    (CMT_PRETRAINING, 144, r'CMT takes inputs whose height and width are multiples of 32 '
                           r'\(its total stride'),
    (DEMO, 136, VIT_16 + r'\(model\.backbone\.patch_size\)$'),
    (EVA02_PRETRAINING, 120, r'EVA02 takes inputs whose height and width are multiples of 16 '
                             r'\(model\.backbone\.patch_size\)$')])
def test_an_img_size_off_the_backbone_multiple_is_refused_at_load(config, value, why):
    """``--cfg-options model.backbone.img_size=130`` on a Swin config loaded, and the backbone
    refused it only as it was built, after the dataset and the work dir were made: the load
    refuses it naming the key, the value and the multiple the backbone class states."""
    with pytest.raises(LaunchError, match=rf'^model\.backbone\.img_size={re.escape(repr(value))} '
                                          rf'\(from .*{config.name} or --cfg-options\): {why}'):
        load_config(str(config), {'model.backbone.img_size': value})


# Backbones small enough to build for each size, with the multiples they state.
TINY_BACKBONES = [
    dict(type='fastmim.SwinTransformer', window_size=1,
         arch=dict(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))),
    dict(type='fastmim.CMT', arch=dict(embed_dims=[8, 8, 8, 8], depths=[1, 1, 1, 1],
                                       num_heads=[1, 1, 1, 1], stem_channels=8, mlp_ratio=1.0)),
    dict(type='fastmim.VisionTransformer', arch=dict(embed_dim=16, depth=1, num_heads=1)),
    dict(type='fastmim.EVA02', arch=dict(embed_dim=16, depth=1, num_heads=1)),
]


@pytest.mark.parametrize('backbone', TINY_BACKBONES, ids=lambda entry: entry['type'])
def test_the_img_sizes_refused_at_load_are_those_the_backbone_refuses_when_built(tmp_path,
                                                                                 backbone):
    """Independent of the load's reading of the class: each size is built, and the load
    refuses exactly the sizes the backbone's constructor refuses."""
    from fastmim.registry import MODELS
    for size in (64, 80, 96, 100, (64, 80), (96, 64)):
        entry = dict(backbone, img_size=size)
        try:
            MODELS.build(entry)
            built = True
        except ValueError:
            built = False
        child = tmp_path / 'child.py'
        child.write_text(f"_base_ = ['{DEMO}']\n"
                         f"model = dict(backbone=dict(_delete_=True, **{entry!r}))\n")
        try:
            load_config(str(child))
            loaded = True
        except LaunchError as error:
            assert str(error).startswith(f'model.backbone.img_size={size!r} ')
            loaded = False
        assert built == loaded, (backbone['type'], size, built, loaded)


PVTV2_OUTPUT_STRIDE = (r'the backbone output stride 32 \(PyramidVisionTransformerV2\) does not '
                       r'divide it: FastMIM predicts the target on the grid of the last map; '
                       r'make it a multiple of 32$')


@pytest.mark.parametrize('config, key, options', [
    (PVTV2_PRETRAINING, PRETRAINING_CROP, {}),
    # a progressive stage size, the stages set on a PVTv2 config
    (PVTV2_PRETRAINING, STAGE,
     {'custom_hooks': [dict(type='ProgressiveResolutionHook',
                            stages=[dict(epoch=0, input_size=144)])]})])
def test_a_pretraining_size_off_the_output_stride_is_refused_at_load(tmp_path, config, key,
                                                                     options):
    """PVTv2 takes any size (no input multiple), but FastMIM refused a 144-px crop that its
    16-px blocks tile and PVTv2's output stride 32 does not only at the first iteration
    (check_input_size): the load refuses it, the stride read from the backbone class."""
    child = tmp_path / 'child.py'
    child.write_text(f"_base_ = ['{config}']\n" + ''.join(
        f'{name} = {value!r}\n' for name, value in options.items()))
    with pytest.raises(LaunchError, match=rf'^{re.escape(key)}=144 '
                                          rf'\(from .*child\.py or --cfg-options\): '
                                          + PVTV2_OUTPUT_STRIDE):
        load_config(str(child), {'model.block_size': 16,
                                 **({} if options else {PRETRAINING_CROP: 144})})


def test_the_output_stride_follows_the_out_indices():
    """PVTv2's third stage has stride 16, which divides 144 px."""
    load_config(str(PVTV2_PRETRAINING), {'model.block_size': 16, PRETRAINING_CROP: 144,
                                         'model.backbone.out_indices': (2, )})


TINY_PVTV2 = dict(type='fastmim.PyramidVisionTransformerV2',
                  arch=dict(depths=(1, 1, 1, 1), embed_dims=(8, 16, 32, 64),
                            num_heads=(1, 1, 1, 1)))


@pytest.mark.parametrize('backbone', [*TINY_BACKBONES, TINY_PVTV2], ids=lambda entry: entry['type'])
@pytest.mark.parametrize('out_indices', [(3, ), (1, 2)])
def test_each_backbone_class_states_the_output_stride_it_is_built_with(backbone, out_indices):
    """The class's answer, read from the settings alone, is the built backbone's last stride;
    a plain ViT has no stages, its blocks one stride."""
    from fastmim.registry import MODELS
    entry = dict(backbone, out_indices=(0, ) if 'depth' in backbone['arch'] else out_indices)
    built = MODELS.build(entry)
    assert type(built).output_stride(entry) == built.out_strides[-1]


@pytest.mark.parametrize('out_indices', [(3, ), (2, )])
def test_the_pretraining_sizes_refused_at_load_are_those_fastmim_refuses(tmp_path, out_indices):
    """Independent of the load's reading of the class: FastMIM is built (a tiny PVTv2, 16-px
    blocks) and its check_input_size asked for each crop; the load refuses exactly those."""
    from fastmim.registry import MODELS
    backbone = dict(TINY_PVTV2, out_indices=out_indices)
    options = {'model.block_size': 16}
    cfg = load_config(str(PVTV2_PRETRAINING), options)
    cfg.model.backbone = backbone
    cfg.model.neck = dict(cfg.model.neck, embed_dim=16, depth=1, num_heads=1)
    model = MODELS.build(cfg.model)
    child = tmp_path / 'child.py'
    child.write_text(f"_base_ = ['{PVTV2_PRETRAINING}']\n"
                     f"model = dict(backbone=dict(_delete_=True, **{backbone!r}))\n")
    for size in (96, 112, 128, 144, 160, 176):
        try:
            model.check_input_size(size, size)
            taken = True
        except ValueError:
            taken = False
        try:
            load_config(str(child), {**options, PRETRAINING_CROP: size})
            loaded = True
        except LaunchError:
            loaded = False
        assert taken == loaded, (out_indices, size, taken, loaded)
