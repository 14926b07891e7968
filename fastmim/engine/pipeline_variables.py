"""Warn when a config's ``train_pipeline`` / ``test_pipeline`` is not the pipeline it trains or
tests with.

Configs name their pipelines in top-level variables that their dataloaders use
(``dataset=dict(pipeline=train_pipeline)``). mmengine resolves that use when it reads the file
that makes it, so a child config, or ``--cfg-options train_pipeline.1.size=96``, that changes
the variable alone changes nothing: the dataloader keeps the base's copy and the run trains at
the old crop without a word. The dataloaders' own pipelines are what runs; the variables are
compared with them after the config is complete. An option that changed the variable has its
own warning, which names the exact keys to set (:mod:`fastmim.engine.copied_variables`).
"""
import logging

from mmengine.logging import print_log

# The variable, and the dataloaders that use it in the OpenMMLab configs.
PIPELINE_USERS = (('train_pipeline', ('train_dataloader', )),
                  ('test_pipeline', ('val_dataloader', 'test_dataloader')))


def warn_unused_pipelines(cfg, path, cfg_options=None, warned=()):
    """Log a warning for each dataloader whose dataset pipeline differs from the variable its
    config family feeds it with (scopes that inheritance adds are not a difference). A
    dataloader pipeline that ``cfg_options`` change is what the user means to run; the
    variable is then left behind, not named. A variable in ``warned`` was named already, with
    the keys to set, by the warning about the option that changed it
    (:func:`~fastmim.engine.copied_variables.warn_copied_variables`)."""
    for variable, loaders in PIPELINE_USERS:
        if variable not in cfg or variable in warned:
            continue
        for loader in loaders:
            if _changed_on_command_line(f'{loader}.dataset.pipeline', cfg_options or {}):
                continue
            pipeline = (cfg.get(loader) or {}).get('dataset', {}).get('pipeline')
            if pipeline is not None and _unscoped(pipeline) != _unscoped(cfg[variable]):
                print_log(
                    f'{path}: {variable} differs from {loader}.dataset.pipeline, which is the '
                    f'one that runs ({variable} was copied into it when the file that uses it '
                    f'was read, so changing {variable} alone changes nothing); change '
                    f'{loader}.dataset.pipeline, or set {loader} = dict(dataset=dict('
                    f'pipeline={variable})) after changing it', logger='current',
                    level=logging.WARNING)


def _changed_on_command_line(key, cfg_options):
    return any(option == key or option.startswith(f'{key}.') for option in cfg_options)


def _unscoped(node):
    """``node`` without the ``_scope_`` keys mmengine adds to variables it inherits from
    another package's base (``mmseg::``)."""
    if isinstance(node, dict):
        return {key: _unscoped(value) for key, value in node.items() if key != '_scope_'}
    if isinstance(node, (list, tuple)):
        return [_unscoped(value) for value in node]
    return node
