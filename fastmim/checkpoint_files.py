"""What a checkpoint file is, told from its first bytes, its zip archive's end record and the
names in its pickle; the words that refuse a path that is no checkpoint file; and the hint
that names the checkpoints beside one (a leaf module, importing only the standard library).

The checkpoint loader (:mod:`fastmim.engine.checkpoint`) refuses a file by these tests, in
these words. ``tools/early_checks.py`` loads this file on its own, before the tools import
fastmim and torch, so that a checkpoint cut short or not there reads the same before the
imports as after them; it imports nothing of the package.
"""
import itertools
import os
import os.path as osp
import pickletools
import zipfile

# How every file torch.save writes starts: a zip archive (torch >= 1.6), or a pickle of
# protocol 2 or later (the legacy format).
TORCH_FILE_STARTS = (b'PK', b'\x80')
# The longest JSON header safetensors reads (its own limit).
SAFETENSORS_MAX_HEADER = 100_000_000
# The entries a training checkpoint holds beside the weights (mmengine's Runner.save_checkpoint):
# the state that --resume continues. A file with none of them holds weights only.
RUN_STATE_KEYS = ('meta', 'message_hub', 'optimizer')
# How many checkpoints a hint names.
NAMED_IN_A_HINT = 3


def first_bytes(path):
    """The bytes that tell a torch file (:data:`TORCH_FILE_STARTS`) and a safetensors file
    (:func:`is_safetensors_start`) apart."""
    with open(path, 'rb') as file:
        return file.read(9)


def is_safetensors_start(start):
    """Whether ``start`` (a file's first 9 bytes) begins a safetensors file: the length of its
    JSON header (8 bytes, little-endian), then the header's ``{``. To be checked before the torch
    starts: a header length can begin with ``b'\\x80'`` or ``b'PK'`` (one of 19280 bytes), and
    weights-only unpickling would then call the file corrupt."""
    if len(start) < 9 or start[8:9] != b'{':
        return False
    return 2 <= int.from_bytes(start[:8], 'little') <= SAFETENSORS_MAX_HEADER


def looks_loadable(path):
    """Whether ``path`` starts as a checkpoint the loader reads (a safetensors file, a torch
    zip archive with its end, a legacy torch pickle), so that the hint names no file that fails
    to load (a text file named .pth, an empty one, a copy or save cut off). Legacy pickles have
    no end to check."""
    try:
        start = first_bytes(path)
    except OSError:
        return False
    if is_safetensors_start(start):
        return True
    if start.startswith(b'PK'):
        return zipfile.is_zipfile(path)
    return start.startswith(TORCH_FILE_STARTS)


def holds_weights_only(path):
    """Whether ``path`` is a safetensors file (weights by its format), or a torch file (a zip
    archive, as torch has written since 1.6) whose pickle names none of
    :data:`RUN_STATE_KEYS`: a published, converted or exported file, which ``--resume``
    refuses. The pickle is read as opcodes (:func:`pickletools.genops`), which runs nothing,
    up to the first of those names: a training checkpoint names ``meta`` first and holds long
    loss histories after it. The tensors are not read. False for anything else: no such file,
    a legacy or unreadable one, ``last_checkpoint`` (the loader's checks say what they say)."""
    try:
        if is_safetensors_start(first_bytes(path)):
            return True
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            pickles = [name for name in archive.namelist()
                       if name.count('/') == 1 and name.endswith('/data.pkl')]
            if len(pickles) != 1:
                return False
            with archive.open(pickles[0]) as pickled:
                return not any(isinstance(arg, str) and arg in RUN_STATE_KEYS
                               for _, arg, _ in pickletools.genops(pickled))
    except Exception:  # any failure to read leaves the file to the loader's checks
        return False


def looks_resumable(path):
    """Whether ``path`` looks like a checkpoint that ``--resume`` continues a run from: one the
    loader reads (:func:`looks_loadable`) that holds more than weights
    (:func:`holds_weights_only`)."""
    return looks_loadable(path) and not holds_weights_only(path)


def no_checkpoint_file(path, resuming=False):
    """Why ``path`` (``~`` expanded) is no checkpoint file: a folder (named with the
    checkpoints it holds) or nothing (named with the newest checkpoints beside it; ``resuming``:
    those that resume, :func:`checkpoints_in`). '' for a file."""
    if osp.isdir(path):
        return (f'{path} is a folder; a checkpoint is a file'
                f'{checkpoints_in(path, resuming=resuming)}')
    if not osp.isfile(path):
        return f'checkpoint not found: {path}{other_checkpoints(path, resuming)}'
    return ''


def last_checkpoint_pointer(path):
    """``'; or give DIR/last_checkpoint, which names the newest'`` for a folder ``path``
    (``~`` expanded) that holds mmengine's ``last_checkpoint``, added to
    :func:`no_checkpoint_file` by a tool that takes that file as its checkpoint
    (``tools/test.py``); '' otherwise."""
    pointer = osp.join(path, 'last_checkpoint')
    if not osp.isdir(path) or not osp.isfile(pointer):
        return ''
    return f'; or give {pointer}, which names the newest'


def cut_off_archive(path, resuming=False):
    """Why ``path`` does not load when it starts as a torch zip archive without the end record
    that ``zipfile`` finds in its last bytes (all it reads): a save or copy cut short, whose
    ``b'PK'`` start passes for a torch file. '' otherwise, also for a file that is no archive
    at all or does not open (the loader's other checks name it). ``resuming``: the file was
    given to ``--resume`` (:func:`other_checkpoints`)."""
    try:
        start = first_bytes(path)
    except OSError:
        return ''
    if is_safetensors_start(start) or not start.startswith(b'PK') or zipfile.is_zipfile(path):
        return ''
    return (f'{path} is truncated or not a torch checkpoint: its zip archive has no end record '
            '(a save or copy cut short?). Load or resume from the checkpoint before it (--resume '
            'with its path; last_checkpoint may name this one)'
            f'{other_checkpoints(path, resuming)}')


def other_checkpoints(path, resuming=False):
    """A hint naming the newest other checkpoints beside ``path``, to resume or load from
    (``resuming``: to resume from, :func:`checkpoints_in`)."""
    return checkpoints_in(osp.dirname(osp.abspath(path)), besides=osp.basename(path),
                          resuming=resuming)


def checkpoints_in(folder, besides=None, resuming=False):
    """A hint naming the newest ``.pth`` checkpoints of ``folder`` other than ``besides``: the
    files that start as a checkpoint the loader reads (:func:`looks_loadable`), or
    (``resuming``: for a refused ``--resume``) those that also hold a run's state
    (:func:`looks_resumable`), since ``--resume`` refuses a weights-only file as well."""
    if not osp.isdir(folder):
        return ''
    names = sorted((name for name in os.listdir(folder)
                    if name.endswith('.pth') and name != besides
                    and osp.isfile(osp.join(folder, name))),
                   key=lambda name: osp.getmtime(osp.join(folder, name)), reverse=True)
    fits = looks_resumable if resuming else looks_loadable
    others = list(itertools.islice((name for name in names if fits(osp.join(folder, name))),
                                   NAMED_IN_A_HINT))
    if not others:
        return ''
    what = 'Other checkpoints' if besides else 'Checkpoints'
    return f'. {what} in {folder}, newest first: {", ".join(others)}'
