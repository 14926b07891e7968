"""What a checkpoint file is, told from its first bytes and its zip archive's end record, and
the hint that names the checkpoints beside one (a leaf module, importing only the standard
library).

The checkpoint loader (:mod:`fastmim.engine.checkpoint`) refuses a file by these tests, in
these words. ``tools/early_checks.py`` loads this file on its own, before the tools import
fastmim and torch, so that a checkpoint cut short or not there reads the same before the
imports as after them; it imports nothing of the package.
"""
import os
import os.path as osp
import zipfile

# How every file torch.save writes starts: a zip archive (torch >= 1.6), or a pickle of
# protocol 2 or later (the legacy format).
TORCH_FILE_STARTS = (b'PK', b'\x80')
# The longest JSON header safetensors reads (its own limit).
SAFETENSORS_MAX_HEADER = 100_000_000


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


def cut_off_archive(path):
    """Why ``path`` does not load when it starts as a torch zip archive without the end record
    that ``zipfile`` finds in its last bytes (all it reads): a save or copy cut short, whose
    ``b'PK'`` start passes for a torch file. '' otherwise, also for a file that is no archive
    at all or does not open (the loader's other checks name it)."""
    try:
        start = first_bytes(path)
    except OSError:
        return ''
    if is_safetensors_start(start) or not start.startswith(b'PK') or zipfile.is_zipfile(path):
        return ''
    return (f'{path} is truncated or not a torch checkpoint: its zip archive has no end record '
            '(a save or copy cut short?). Load or resume from the checkpoint before it (--resume '
            f'with its path; last_checkpoint may name this one){other_checkpoints(path)}')


def other_checkpoints(path):
    """A hint naming the newest other checkpoints beside ``path``, to resume or load from."""
    return checkpoints_in(osp.dirname(osp.abspath(path)), besides=osp.basename(path))


def checkpoints_in(folder, besides=None):
    """A hint naming the newest ``.pth`` checkpoints of ``folder`` other than ``besides``: the
    files that start as a checkpoint the loader reads (:func:`looks_loadable`)."""
    if not osp.isdir(folder):
        return ''
    others = sorted((name for name in os.listdir(folder)
                     if name.endswith('.pth') and name != besides
                     and osp.isfile(osp.join(folder, name))
                     and looks_loadable(osp.join(folder, name))),
                    key=lambda name: osp.getmtime(osp.join(folder, name)), reverse=True)
    if not others:
        return ''
    what = 'Other checkpoints' if besides else 'Checkpoints'
    return f'. {what} in {folder}, newest first: {", ".join(others[:3])}'
