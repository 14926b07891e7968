"""What the tools check before they import fastmim, mmengine and torch (seconds; more from a
cluster's shared file system): the Python they run under (:func:`refuse_a_python_without_the_stack`),
the config files of the command line, the checkpoint a tool reads (a missing file, a folder, a
zip archive cut short), and (``tools/train.py``) a ``load_from`` of ``--cfg-options`` the same
way and whether ``--resume``'s file holds anything to resume. The launchers ask it about
their config and train.py's ``--resume`` file (``tools/launch_checks.sh``,
:data:`LAUNCHER_CHECKS`) before they start their processes.

Importing this module puts the checkout that holds it first on ``sys.path``
(:func:`put_this_checkout_first`): the tools run their own checkout's fastmim.

A mistyped config path (``configs/fastmim/vit_b_hog_80e.py``) is a line that takes no import to
write; after the imports it comes some 9 s late on a busy 2-core machine. The check is fastmim's
own (:func:`fastmim.config_file.check_config_file`, the one ``load_config`` and
``fastmim.apis`` run later), loaded from its file without the package, whose ``__init__``
imports torch (:func:`load_fastmim_module`); so are the checkpoint loader's tests of a file,
in its words (``fastmim.checkpoint_files``). A weights-only file given to ``--resume`` is told
from the names in its pickle, read without unpickling anything; the full check
(``ResumeChecksHook``) runs only once the Runner is built, its log folder and config copy
written. Standard library only: a tool imports this module from its own folder.
"""
import ast
import functools
import importlib.util
import os
import os.path as osp
import sys

# What ends the flags: with one of them the config is left to the tool's own check.
HELP_FLAGS = ('-h', '--help')
# Set by a launcher that starts several processes: each would print the same line, where the
# tool's own check lets the node's first process report it (fastmim.cli.run_cli).
LAUNCH_FLAGS = ('--launcher', '--local_rank', '--local-rank')
# The error run_cli names for a config that load_config refuses.
LAUNCH_ERROR = 'LaunchError'
# The modules every tool imports after these checks, and where the Python that has them is made.
STACK = ('torch', 'mmengine', 'fastmim')
VENV_HINT = 'run with .venv/bin/python (made by make demo / tools/setup_env.sh)'
# The checkout this file belongs to: the folder above tools/.
CHECKOUT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def put_this_checkout_first():
    """Put :data:`CHECKOUT` first on ``sys.path`` when it holds the fastmim package. A tool's
    ``sys.path`` starts with its own folder, not the checkout's: with two checkouts sharing a
    venv, ``tools/train.py`` of one would import the other's fastmim (the editable install)
    without a word."""
    if osp.isfile(osp.join(CHECKOUT, 'fastmim', '__init__.py')):
        sys.path[:] = [CHECKOUT] + [entry for entry in sys.path
                                    if osp.abspath(entry or '.') != CHECKOUT]


put_this_checkout_first()


def refuse_a_python_without_the_stack():
    """End the process (status 1) in one line when this Python cannot import what the tool
    imports next (:data:`STACK`): a plain ``python3`` outside the venv would pass the config
    check, then end in a ``ModuleNotFoundError`` traceback."""
    missing = next((name for name in STACK if importlib.util.find_spec(name) is None), None)
    if missing:
        print(f"error: ModuleNotFoundError: No module named '{missing}' in {sys.executable}: "
              f'{VENV_HINT}', file=sys.stderr)
        sys.exit(1)


def refuse_a_missing_config(argv, flags=(), first=True, locate=None, reported_as=LAUNCH_ERROR):
    """End the process (status 1) with the line the tool prints after its imports for the same
    mistake (``error: LaunchError: config file not found: ...``, with the close config names)
    when a config of ``argv`` (:func:`configs_of`) is no config file. The tool's own check
    reports what this one leaves to it.

    ``flags``: the options whose value is a config (``--config``); ``first``: whether the first
    argument is one (the tool's first positional); ``locate(config)``: the file the tool reads
    for the config as typed, where that is not the path itself; ``reported_as``: the error
    type the tool's own check is reported as (``load_config``'s ``LaunchError``), None for the
    check's own (``FileNotFoundError``, as ``fastmim.apis.get_model`` raises it). A Python
    without the tool's imports is refused first."""
    refuse_a_python_without_the_stack()
    configs = configs_of(argv, flags, first)
    config_file = load_fastmim_module('config_file.py') if configs else None
    if config_file is None:
        return
    for config in configs:
        try:
            config_file.check_config_file(locate(config) if locate else config, given=config)
        except (OSError, ValueError) as error:
            print(f'error: {reported_as or type(error).__name__}: {error}', file=sys.stderr)
            sys.exit(1)


def refuse_a_missing_checkpoint(argv, position, pointer_taken=False):
    """End the process (status 1) with the line the checkpoint loader writes after the imports
    (``fastmim.engine.checkpoint.check_checkpoint_file``, its words) when the checkpoint at
    positional ``position`` of ``argv`` (:func:`positional`) is no file: a folder (named with
    the checkpoints in it) or nothing (with the newest checkpoints beside it). A URL or other
    ``scheme://`` / ``package::`` path is left to the loader, and so is anything the loader
    reads further (an empty file, ``last_checkpoint``), except a zip archive cut short
    (``fastmim.checkpoint_files.cut_off_archive``), which the loader's launch check also reads.
    All of it is left to the loader with a fastmim that has no ``checkpoint_files.py``.
    ``pointer_taken``: the tool also takes a work dir's ``last_checkpoint``
    (``tools/test.py``), which a folder's line then names."""
    refuse_a_python_without_the_stack()
    checkpoint = None if left_to_the_tool(argv) else positional(argv, position)
    problem = checkpoint_problem(checkpoint, pointer_taken) if checkpoint else ''
    if problem:
        print(f'error: CheckpointError: {problem}', file=sys.stderr)
        sys.exit(1)


def refuse_a_missing_load_from(argv):
    """End the process (status 1) with the line of ``tools/train.py``'s launch check after the
    imports (``fastmim.engine.checkpoint.check_start_checkpoints``: ``load_from: `` and the
    loader's words) when ``--cfg-options load_from=PATH`` names no checkpoint
    (:func:`load_from_problem`). The launch check meets it only once the config is loaded,
    some 7 s of imports later."""
    refuse_a_python_without_the_stack()
    problem = load_from_problem(argv)
    if problem:
        print(f'error: CheckpointError: {problem}', file=sys.stderr)
        sys.exit(1)


def load_from_problem(argv):
    """Why the ``load_from`` that ``--cfg-options`` of ``argv`` sets (:func:`load_from_of`)
    is no checkpoint (:func:`checkpoint_problem`), as the launch check says it after the
    imports; '' otherwise, also where the config names the commands that write its
    checkpoints (:func:`names_checkpoint_makers`: that refusal names the command). A
    ``load_from`` of the config file is left to the launch check."""
    checkpoint = load_from_of(argv)
    if not checkpoint or names_checkpoint_makers(config_of(argv)):
        return ''
    problem = checkpoint_problem(checkpoint)
    return f'load_from: {problem}' if problem else ''


def load_from_of(argv):
    """The path that ``--cfg-options ... load_from=PATH ...`` of ``argv`` sets, read as the
    option's parser reads it (``fastmim.cli.CfgOptionsAction``: the last one, quotes and outer
    spaces dropped), or None: for a value that is no path (a number, a bool, ``None``, a list
    or tuple), and where the flags are not the whole story: :func:`left_to_the_tool`, an item
    that is no ``KEY=VALUE`` (the parser's error comes first), ``--resume`` or ``resume=``
    given (a resumed run loads its checkpoint instead, or the launch check names the key
    ``--resume``). Arguments after ``--`` are no flags."""
    if left_to_the_tool(argv):
        return None
    arguments = argv[:argv.index('--')] if '--' in argv else argv
    items, taking = [], False
    for arg in arguments:
        if arg.startswith('-'):
            flag, equals, value = arg.partition('=')
            if len(flag) > 2 and '--resume'.startswith(flag):  # argparse takes abbreviations
                return None
            taking = arg == '--cfg-options'
            items += [value] if flag == '--cfg-options' and equals else []
        elif taking:
            items.append(arg)
    options = [item.partition('=') for item in items]
    if any(not (key and equals) for key, equals, _ in options) or any(
            key == 'resume' for key, _, _ in options):
        return None
    values = [value for key, _, value in options if key == 'load_from']
    return path_value(values[-1]) if values else None


def path_value(value):
    """``value`` of a ``--cfg-options`` item as the path it sets (quotes and outer spaces
    dropped), or None where the option's parser reads it as no string: a list or tuple (a
    bracket or a comma), a number, a bool, ``None``, or nothing."""
    text = value.strip().strip('\'"')
    if not text or text.startswith(('(', '[')) or ',' in text or text == 'None' or (
            text.lower() in ('true', 'false')):
        return None
    try:
        float(text)
    except ValueError:
        return text
    return None


def checkpoint_problem(checkpoint, pointer_taken=False):
    """Why the local ``checkpoint`` (``~`` expanded) is no checkpoint, in the loader's words
    (``fastmim.engine.checkpoint.check_checkpoint_file``): a folder (named with the checkpoints
    in it), nothing (with the newest checkpoints beside it), or a zip archive cut short
    (``fastmim.checkpoint_files.cut_off_archive``); '' otherwise, also for a URL or other
    ``scheme://`` / ``package::`` path, and for anything with a fastmim that has no
    ``checkpoint_files.py``. ``pointer_taken``: the tool also takes a work dir's
    ``last_checkpoint`` (``tools/test.py``), which a folder's line then names
    (``last_checkpoint_pointer``, the tool's words after the imports)."""
    if '://' in checkpoint or '::' in checkpoint:
        return ''
    files = load_fastmim_module('checkpoint_files.py')
    if files is None:
        return ''
    local = osp.expanduser(checkpoint)
    problem = files.no_checkpoint_file(local)
    if problem:
        return problem + (files.last_checkpoint_pointer(local) if pointer_taken else '')
    return files.cut_off_archive(local)


def names_checkpoint_makers(config):
    """Whether the file ``config`` sets ``checkpoints_made_by`` (``{path: command}``) at its top
    level, read as a syntax tree (nothing runs). A missing checkpoint of such a config is left
    to the tool: its refusal, once the config is loaded, names the command that writes the
    file (``fastmim.engine.config_loading.missing_checkpoint_hint``), which this line before
    the imports cannot. False for no config, or a file that is no Python (its own check says
    so)."""
    try:
        with open(config, encoding='utf-8') as file:
            tree = ast.parse(file.read())
    except (OSError, SyntaxError, TypeError, ValueError):
        return False
    return any(isinstance(target, ast.Name) and target.id == 'checkpoints_made_by'
               for node in tree.body if isinstance(node, ast.Assign) for target in node.targets)


def positional(argv, position):
    """The argument argparse gives the positional at ``position`` (0: the first), where the
    arguments up to it are no options; else None (the parser's to place)."""
    leading = argv[:position + 1]
    if len(leading) <= position or any(arg.startswith('-') for arg in leading):
        return None
    return leading[position]


def config_of(argv):
    """The config of a tool whose first positional is its config (:func:`configs_of`)."""
    configs = configs_of(argv)
    return configs[0] if configs else None


def configs_of(argv, flags=(), first=True):
    """The configs that argparse will take from ``argv``: (``first``) the first argument when
    it is no option, since argparse gives it to the first positional, and the value of each
    of ``flags`` (the last, where one is given twice, as argparse keeps it). None of them where
    that is not the whole story (:func:`left_to_the_tool`), nor a packaged config
    (``fastmim::...``, which needs mmengine to locate), nor a first argument that is an
    option."""
    if left_to_the_tool(argv):
        return []
    configs = [argv[0]] if first and argv and not argv[0].startswith('-') else []
    configs += [value for value in (flag_value(argv, flag) for flag in flags) if value]
    return [config for config in configs if '::' not in config]


def left_to_the_tool(argv):
    """Whether the tool's own checks, after its imports, must see ``argv`` first: help asked
    for (it wins over a wrong config), ``--debug`` or ``FASTMIM_DEBUG=1`` (the traceback of the
    full check), or a launcher's flag (:data:`LAUNCH_FLAGS`)."""
    flags = {arg.partition('=')[0] for arg in argv if arg.startswith('-')}
    return bool(flags & {*HELP_FLAGS, *LAUNCH_FLAGS, '--debug'}
                or os.environ.get('FASTMIM_DEBUG') == '1')


def flag_value(argv, flag):
    """The value argparse gives ``flag`` (``--flag VALUE`` or ``--flag=VALUE``; the last one),
    or None: also for a flag without a value, or with one that starts with ``-``, which the
    parser reads its own way. Arguments after ``--`` are no flags."""
    arguments = argv[:argv.index('--')] if '--' in argv else argv
    value = None
    for index, arg in enumerate(arguments):
        if arg == flag:
            following = arguments[index + 1:index + 2]
            value = following[0] if following and not following[0].startswith('-') else None
        elif arg.startswith(flag + '='):
            value = arg[len(flag) + 1:]
    return value


def refuse_resuming_weights_only(argv):
    """End the process (status 1) when ``--resume CKPT`` names a file cut short or one that
    holds weights only (:func:`weights_only_resume`). The full check (the loader's, and
    ``ResumeChecksHook``, whose advice this line gives) refuses it only once the Runner is
    built, half a minute later, with the log folder and config copy written in the work dir."""
    problem = weights_only_resume(argv)
    if problem:
        print(f'error: CheckpointError: {problem}', file=sys.stderr)
        sys.exit(1)


def weights_only_resume(argv):
    """Why ``--resume CKPT`` of ``tools/train.py``'s ``argv`` cannot resume, where CKPT is a
    zip archive cut short (``fastmim.checkpoint_files.cut_off_archive``, naming the files
    beside it that resume) or holds weights only (``holds_weights_only`` there: a published,
    converted or exported file); '' otherwise.
    Only where the flags are the whole story (:func:`left_to_the_tool`) and the fastmim found
    has ``checkpoint_files.py``; a file that is not plainly weights-only is left to the full
    check."""
    checkpoint = None if left_to_the_tool(argv) else flag_value(argv, '--resume')
    files = load_fastmim_module('checkpoint_files.py') if checkpoint else None
    if files is None:
        return ''
    path = osp.expanduser(checkpoint)
    cut_off = files.cut_off_archive(path, resuming=True)
    if cut_off or not files.holds_weights_only(path):
        return cut_off
    return (f'{checkpoint} holds weights only, without the state of the run that wrote them '
            f'(no {", ".join(files.RUN_STATE_KEYS)}): a published, converted or exported file. '
            '--resume continues a run from that state: resume from the run\'s latest '
            'checkpoint (epoch_*/iter_*.pth, or --resume alone), or start a new run from these '
            'weights with load_from / init_cfg, without --resume')


@functools.lru_cache(maxsize=None)
def load_fastmim_module(file_name):
    """The module of ``file_name`` (``'config_file.py'``: ``fastmim.config_file``) in the
    fastmim that ``import fastmim`` finds (an installed version, or this repository's),
    executed from its file under a name of its own (``fastmim_config_file_before_imports``),
    so the package, whose ``__init__`` imports torch, is not imported, and the module is not
    the package's (which imports it again later). Only for the package's standard-library-only
    modules. None without an importable fastmim (its import fails next, with its error) or with
    one that has no such file (an older version)."""
    package = importlib.util.find_spec('fastmim')
    if package is None or not package.submodule_search_locations:
        return None
    path = osp.join(package.submodule_search_locations[0], file_name)
    if not osp.isfile(path):
        return None
    name = f'fastmim_{osp.splitext(file_name)[0]}_before_imports'
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config_problem(config):
    """Why ``config`` is no config file, in the words of the tools' check
    (``check_config_file``, with the close config names), or '' (a config file, or no
    fastmim to ask)."""
    config_file = load_fastmim_module('config_file.py')
    try:
        if config_file is not None:
            config_file.check_config_file(config)
    except (OSError, ValueError) as error:
        return str(error)
    return ''


# What tools/launch_checks.sh asks before a launcher starts its processes, each of which would
# refuse the same: `early_checks.py config CONFIG` prints why CONFIG is no config file,
# `early_checks.py resume TRAIN_ARGS...` why tools/train.py refuses their --resume file,
# `early_checks.py load_from TRAIN_ARGS...` why it refuses their `--cfg-options load_from=`
# file; an empty line where nothing is refused.
LAUNCHER_CHECKS = {'config': lambda args: config_problem(args[0]), 'resume': weights_only_resume,
                   'load_from': load_from_problem}

if __name__ == '__main__':
    if len(sys.argv) < 2 or sys.argv[1] not in LAUNCHER_CHECKS:
        print(f'usage: early_checks.py {{{",".join(LAUNCHER_CHECKS)}}} ARGS...  (what the '
              'launchers ask before they start their processes: tools/launch_checks.sh)',
              file=sys.stderr)
        sys.exit(2)
    print(LAUNCHER_CHECKS[sys.argv[1]](sys.argv[2:]))
