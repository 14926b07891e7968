"""What ``tools/train.py``, ``tools/test.py``, ``tools/misc/print_config.py`` and
``tools/analysis/get_flops.py`` check before they import fastmim, mmengine and torch (seconds;
more from a cluster's shared file system): the config file of the command line.

A mistyped config path (``configs/fastmim/vit_b_hog_80e.py``) was refused only after those
imports, some 9 s later on a busy 2-core machine, with a line that takes no import to write.
The check is fastmim's own (:func:`fastmim.config_file.check_config_file`, the one
``load_config`` runs later), loaded from its file without the package, whose ``__init__`` imports
torch. Standard library only: a tool imports this module from its own folder.
"""
import importlib.util
import os
import os.path as osp
import sys

# What ends the flags: with one of them the config is left to the tool's own check.
HELP_FLAGS = ('-h', '--help')
# Set by a launcher that starts several processes: each would print the same line, where the
# tool's own check lets the node's first process report it (fastmim.cli.run_cli).
LAUNCH_FLAGS = ('--launcher', '--local_rank', '--local-rank')


def refuse_a_missing_config(argv):
    """End the process (status 1) with the line ``run_cli`` prints for the same mistake
    (``error: LaunchError: config file not found: ...``) when the config of ``argv`` is no
    config file. Only where the config is known without the tool's parser
    (:func:`config_of`); otherwise the tool's own check, after its imports, reports it."""
    config = config_of(argv)
    config_file = load_config_check() if config is not None else None
    if config_file is None:
        return
    try:
        config_file.check_config_file(config)
    except (OSError, ValueError) as error:
        print(f'error: LaunchError: {error}', file=sys.stderr)
        sys.exit(1)


def config_of(argv):
    """The config that argparse will take from ``argv``: the first argument when it is no
    option, since argparse gives the first argument that is no option to the first positional,
    the config of every tool that checks here. None where that is not the whole story: a first
    argument that is an option, a packaged config (``fastmim::...``, which needs mmengine to locate), help
    asked for (it wins over a wrong config), ``--debug`` (the traceback of the full check),
    or a launcher's flag (:data:`LAUNCH_FLAGS`)."""
    if not argv or argv[0].startswith('-') or '::' in argv[0]:
        return None
    flags = {arg.partition('=')[0] for arg in argv if arg.startswith('-')}
    if flags & {*HELP_FLAGS, *LAUNCH_FLAGS, '--debug'} or os.environ.get('FASTMIM_DEBUG') == '1':
        return None
    return argv[0]


def load_config_check():
    """``fastmim.config_file`` of the fastmim that ``import fastmim`` finds (an installed
    version, or this repository's), executed from its file under a name of its own, so the
    package is not imported and the module is not the package's (which imports it again
    later). None without an importable fastmim (its import fails next, with its error) or with
    one that has no such file (an older version)."""
    package = importlib.util.find_spec('fastmim')
    if package is None or not package.submodule_search_locations:
        return None
    path = osp.join(package.submodule_search_locations[0], 'config_file.py')
    if not osp.isfile(path):
        return None
    spec = importlib.util.spec_from_file_location('fastmim_config_file_before_imports', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
