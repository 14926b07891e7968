"""Checkpoints that are safe to load and cannot be half-written.

mmengine 0.10 stores ``HistoryBuffer`` objects and numpy values in the ``message_hub`` and ``meta``
of its checkpoints. Since torch 2.6 ``torch.load`` only accepts plain types by default, so mmengine
cannot resume from its own files, and the common work-around (full unpickling) lets any
checkpoint execute code. Here we instead

- convert everything a checkpoint holds to plain types on save (:func:`to_plain`) and back on
  load (:func:`from_plain`), so every fastmim checkpoint loads with ``weights_only=True``;
- load every checkpoint weights-only (a ``.safetensors`` file, which holds tensors only, with
  safetensors' own reader), and fully unpickle a foreign file only when the user named it
  as trusted (:func:`trust_checkpoint`, ``--trust-checkpoint`` of ``tools/train.py``). This
  covers mmengine's remote schemes too (``https://``, ``torchvision://``, ``open-mmlab://``,
  ``mmcls://``, ``s3://``, ``pavi://``): their loaders call ``torch.load`` without
  ``weights_only``, and ``https://`` goes through ``torch.hub.load_state_dict_from_url``,
  whose default is full unpickling even on torch 2.14. Remote files are fetched as mmengine
  fetches them and then read as local files are;
- write local files through :class:`fastmim.fileio.AtomicLocalBackend` (temporary file in the
  same folder, then ``os.replace``), registered by :func:`install` as mmengine's local backend,
  so an interrupted save never replaces the last good checkpoint.
"""
import contextlib
import http.client
import io
import logging
import os
import os.path as osp
import pickle
import re
import tempfile
from collections import OrderedDict
from urllib.parse import urlparse

import numpy as np
import torch
import torch.hub
from mmengine.dist import get_dist_info
from mmengine.fileio import get_file_backend
from mmengine.fileio.backends import register_backend
from mmengine.logging import HistoryBuffer, print_log
from mmengine.runner import checkpoint as mmengine_checkpoint
from mmengine.runner.checkpoint import CheckpointLoader
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors_file

from fastmim.checkpoint_files import (TORCH_FILE_STARTS, cut_off_archive, first_bytes,
                                     is_safetensors_start, no_checkpoint_file,
                                     other_checkpoints)
from fastmim.errors import CheckpointError
from fastmim.fileio import AtomicLocalBackend

_HISTORY_BUFFER_TAG = '__fastmim_history_buffer__'
_TRUSTED_CHECKPOINTS = set()
# The real path of the local checkpoint the run last built resumes from; None: it resumes from
# none (:func:`mark_resumed_checkpoint`).
_RESUMED_CHECKPOINT = None


def to_plain(obj, where='checkpoint'):
    """Return ``obj`` with every value in a type that ``torch.load(weights_only=True)`` accepts.

    ``HistoryBuffer`` becomes a tagged dict (restored by :func:`from_plain`), numpy arrays become
    tensors and numpy scalars Python numbers. Anything else raises ``TypeError`` naming where it
    sits, so that an unsafe object is caught when saving rather than when loading.
    """
    if isinstance(obj, np.generic):  # before the primitives: np.float64 subclasses float
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str, bytes, torch.Tensor)):
        return obj
    if isinstance(obj, HistoryBuffer):
        log_history, count_history = obj.data
        return {_HISTORY_BUFFER_TAG: True, 'log_history': log_history.tolist(),
                'count_history': count_history.tolist(), 'max_length': obj.max_length}
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, (torch.dtype, torch.device)):
        return str(obj)
    if isinstance(obj, dict):
        plain = OrderedDict() if isinstance(obj, OrderedDict) else {}
        for key, value in obj.items():
            plain[key] = to_plain(value, f'{where}[{key!r}]')
        return plain
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [to_plain(value, f'{where}[{i}]') for i, value in enumerate(obj)]
        return tuple(items) if isinstance(obj, tuple) else items
    raise TypeError(f'{where} holds a {type(obj).__module__}.{type(obj).__qualname__}, which '
                    'cannot be stored safely in a checkpoint: convert it to plain types')


def checkpoint_bytes(obj) -> bytes:
    """The bytes of ``torch.save`` of ``obj`` converted by :func:`to_plain` (a file of them
    loads with ``weights_only=True``): what :func:`save_checkpoint_file` writes, for a tool that
    needs them first (tools/convert/publish.py names the file by their hash)."""
    buffer = io.BytesIO()
    torch.save(to_plain(obj), buffer)
    return buffer.getvalue()


def save_checkpoint_file(obj, path):
    """:func:`checkpoint_bytes` of ``obj`` written through mmengine's file backend, so a local
    ``path`` is replaced atomically (:func:`install`). For the tools that write checkpoints
    outside a Runner."""
    get_file_backend(path).put(checkpoint_bytes(obj), path)


def from_plain(obj):
    """Undo :func:`to_plain` for the values it tagged (message-hub history buffers)."""
    if isinstance(obj, dict):
        if obj.get(_HISTORY_BUFFER_TAG):
            return HistoryBuffer(obj['log_history'], obj['count_history'], obj['max_length'])
        return type(obj)((key, from_plain(value)) for key, value in obj.items())
    if isinstance(obj, list):
        return [from_plain(value) for value in obj]
    return obj


def trust_checkpoint(path):
    """Allow full unpickling of ``path``: only for files whose origin the user vouches for.

    A local file is trusted by its real path; a remote one (``https://...``,
    ``open-mmlab://...``: anything with ``://``) by the name as written, which covers the copy
    it is downloaded to. Trusting that local copy's path works too."""
    _TRUSTED_CHECKPOINTS.add(path if '://' in path else osp.realpath(osp.expanduser(path)))


def mark_resumed_checkpoint(path):
    """Make ``path`` (None: none; a remote one is never marked) the checkpoint that the run
    being built resumes from. mmengine's ``Runner.resume`` reads it through the loader that
    reads ``load_from`` (:func:`load_from_local`) and tells the loader nothing of resuming;
    marked, a file refused as it is read is named with only the checkpoints beside it that
    resume (:func:`~fastmim.checkpoint_files.checkpoints_in`), as the launch check names them,
    and never with a weights-only file that ``--resume`` refuses. Each run marks its own
    (:func:`~fastmim.engine.launch.build_runner`)."""
    global _RESUMED_CHECKPOINT
    _RESUMED_CHECKPOINT = (None if path is None or '://' in str(path)
                           else osp.realpath(osp.expanduser(path)))


def load_from_local(filename, map_location=None):
    """Load a local checkpoint weights-only, with errors that say what is wrong with the file
    and name the checkpoints beside it (those that resume, for the file the run resumes from:
    :func:`mark_resumed_checkpoint`).

    Named as the mmengine loader it replaces: mmengine's log line names the backend by the
    loader's name after ``load_from_`` (``Loads checkpoint by local backend``)."""
    path = osp.expanduser(filename)
    resuming = osp.realpath(path) == _RESUMED_CHECKPOINT
    _refuse_no_checkpoint_file(path, resuming)
    return _load_file(path, map_location, name=path, trust_as=path,
                      hint=lambda: other_checkpoints(path, resuming))


def _refuse_no_checkpoint_file(path, resuming=False):
    """Refuse a local ``path`` (``~`` expanded) that is a folder or no file
    (:func:`~fastmim.checkpoint_files.no_checkpoint_file`, whose words ``tools/early_checks.py``
    writes before the imports), or an empty file (with the newest checkpoints beside it);
    ``resuming`` (given to ``--resume``): named with those that resume."""
    problem = no_checkpoint_file(path, resuming)
    if problem:
        raise CheckpointError(problem)
    if osp.getsize(path) == 0:
        raise CheckpointError(f'{path} is not a readable checkpoint: the file is empty (0 bytes)'
                              f'{other_checkpoints(path, resuming)}')


def _load_file(path, map_location, name, trust_as, hint):
    """Load the local file ``path`` weights-only, fully only when trusted.

    ``name`` is what the errors call the checkpoint (the file, or the URL it was fetched from
    and where to), ``trust_as`` what ``--trust-checkpoint`` takes to trust it, and ``hint()``
    what an error about an unreadable file adds (other checkpoints beside it, or how to fetch
    it again)."""
    start = first_bytes(path)
    if is_safetensors_start(start):
        return _load_safetensors(path, map_location, name, hint)
    _refuse_what_torch_never_wrote(name, start, hint)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, TypeError) as error:
        # A crafted state (an OrderedDict's ``(None, {...})``) stops the weights-only unpickler
        # with TypeError rather than UnpicklingError; timm's URL source retries such a file
        # with full unpickling (install_timm_pretrained_loading).
        if _is_trusted(path, trust_as):
            return torch.load(path, map_location=map_location, weights_only=False)
        reason = _unpickler_reason(error)
        refused_global = _refused_global(reason)
        if refused_global and _runs_code(refused_global):
            raise CheckpointError(
                f'{name} would call {refused_global} when loaded: a code-execution payload, '
                'refused without running it. Do not load this file; take the checkpoint '
                'from a source you trust') from None
        if refused_global:  # named without torch's advice to allowlist it in Python
            what, reason = ('holds pickled Python objects that weights-only loading refuses',
                            f'Unsupported global {refused_global}')
        else:
            what = ('is not a readable checkpoint (corrupt, or pickled in a way weights-only '
                    'loading refuses)')
        raise CheckpointError(
            f'{name} {what} ({reason}). Loading it fully would let the file run arbitrary '
            f'code; if you trust its origin, pass --trust-checkpoint (tools/train.py takes '
            f'the file with it: --trust-checkpoint {trust_as}){_converter_hint(reason)}'
        ) from None
    except PermissionError:
        raise CheckpointError(f'{name}: no permission to read this checkpoint') from None
    except SafetensorError as error:  # torch reads any .safetensors name with safetensors
        raise CheckpointError(f'{name} is named .safetensors but is a torch file '
                              f'({str(error).rstrip(".")}): rename it to .pth{hint()}') from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError) as error:
        # torch's zip reader fails with OSError (EINVAL) on a file cut off near its end; the
        # weights-only unpickler with KeyError / IndexError on text that reads as memo opcodes.
        reason = str(error).rstrip('.')  # the hint starts a sentence of its own
        raise CheckpointError(f'{name} is not a readable checkpoint (truncated or corrupt?): '
                              f'{reason}{hint()}') from None


def _is_trusted(path, trust_as):
    """Whether the user trusted the file ``path`` (by its real path) or ``trust_as`` (the
    remote name it was fetched by)."""
    return bool({osp.realpath(path), trust_as} & _TRUSTED_CHECKPOINTS)


def load_from_http(filename, map_location=None):
    """Load a checkpoint from a URL: fetched into torch.hub's cache (where mmengine and torch
    put it, so files they fetched are reused), then read as a local file."""
    return _load_url(filename, map_location, named_as=filename)


def _load_url(url, map_location, named_as):
    """Fetch ``url`` (:func:`_fetch_to_cache`) and load the copy weights-only. Errors name
    ``named_as`` (what the user wrote: the URL, or ``torchvision://NAME``), which is also what
    ``--trust-checkpoint`` takes."""
    path = _fetch_to_cache(url, named_as)
    where = f'{named_as} (downloaded to {path})'
    if osp.getsize(path) == 0:
        raise CheckpointError(f'{where} is not a readable checkpoint: the file is empty '
                              f'(0 bytes){_fetch_again(path)}')
    return _load_file(path, map_location, name=where, trust_as=named_as,
                      hint=lambda: _fetch_again(path))


def _fetch_again(path):
    """The hint for a cached download that does not load: the cache is reused as it is."""
    return f'. Delete {path} to download it again'


def _fetch_to_cache(url, named_as):
    """The path of ``url``'s copy in torch.hub's cache (``<hub dir>/checkpoints/<file name>``,
    as ``torch.hub.load_state_dict_from_url`` names it), downloaded by torch.hub's
    ``download_url_to_file`` where it is not there yet. As mmengine's loader does, process 0
    fetches first and the others after a barrier, so that processes sharing the cache do not
    download the same file at once (where process 0 fails, torchrun stops the others)."""
    rank, world_size = get_dist_info()
    if rank == 0:
        path = _download_once(url, named_as)
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            path = _download_once(url, named_as)
    return path


def _download_once(url, named_as):
    """Download ``url`` into torch.hub's cache unless a copy is there; return the copy's path.
    torch.hub writes to a temporary file and renames it, so an interrupted download leaves no
    copy."""
    file_name = osp.basename(urlparse(url).path)
    if not file_name:
        raise CheckpointError(f'{named_as}: the URL {url} names no file to download')
    folder = osp.join(torch.hub.get_dir(), 'checkpoints')
    path = osp.join(folder, file_name)
    if osp.isfile(path):
        return path
    print_log(f'Downloading {url} to {path}', logger='current')
    try:
        os.makedirs(folder, exist_ok=True)
        # A progress bar only on a terminal (mmengine's choice), not in log files.
        torch.hub.download_url_to_file(url, path, progress=os.isatty(0))
    except (OSError, ValueError, http.client.HTTPException) as error:
        # URLError / HTTPError are OSErrors; a connection cut mid-file is an IncompleteRead.
        raise CheckpointError(f'could not download {named_as}: {error}') from None
    return path


def _remote_model_url(table, filename):
    """The URL (or path) that ``filename`` (``SCHEME://NAME``) names in mmengine's model
    table ``table``, or an error naming the scheme (mmengine's lookup raises a bare
    KeyError)."""
    scheme, name = filename.split('://', 1)
    if name not in table:
        raise CheckpointError(f'{filename}: no model named {name!r} among the {scheme}:// '
                              f'models mmengine knows')
    return table[name]


def load_from_torchvision(filename, map_location=None):
    """``torchvision://NAME``: the URL of torchvision's weights NAME, loaded as a URL."""
    url = _remote_model_url(mmengine_checkpoint.get_torchvision_models(), filename)
    return _load_url(url, map_location, named_as=filename)


def load_from_openmmlab(filename, map_location=None):
    """``open-mmlab://NAME``: OpenMMLab's weights NAME (a deprecated name is replaced by its
    successor, as mmengine does), a URL or a file under mmengine's home."""
    scheme, name = filename.split('://', 1)
    successor = mmengine_checkpoint.get_deprecated_model_names().get(name)
    if successor:
        print_log(f'{filename} is deprecated in favor of {scheme}://{successor}',
                  logger='current', level=logging.WARNING)
        name = successor
    target = _remote_model_url(mmengine_checkpoint.get_external_models(), f'{scheme}://{name}')
    if target.startswith(('http://', 'https://')):
        return _load_url(target, map_location, named_as=filename)
    return load_from_local(osp.join(mmengine_checkpoint._get_mmengine_home(), target),
                           map_location)


def load_from_mmcls(filename, map_location=None):
    """``mmcls://NAME``: mmcls's weights NAME, loaded as a URL, with mmengine's renaming of
    its keys."""
    url = _remote_model_url(mmengine_checkpoint.get_mmcls_models(), filename)
    checkpoint = _load_url(url, map_location, named_as=filename)
    return mmengine_checkpoint._process_mmcls_checkpoint(checkpoint)


def load_from_ceph(filename, map_location=None, backend='petrel'):
    """``s3://`` and ``petrel://`` (mmengine's petrel backend): the bytes are read as mmengine
    reads them and loaded as a local file (:func:`_load_fetched`)."""
    data = get_file_backend(filename, backend_args={'backend': backend}).get(filename)
    return _load_fetched(filename, osp.basename(filename) or 'checkpoint',
                         lambda path: _write_bytes(path, data), map_location)


def load_from_pavi(filename, map_location=None):
    """``pavi://`` (SenseTime's model cloud, through the ``pavi`` package, as mmengine does):
    downloaded and loaded as a local file (:func:`_load_fetched`)."""
    try:
        from pavi import modelcloud
    except ImportError:
        raise CheckpointError(f'{filename}: loading from pavi:// needs the pavi package') \
            from None
    model = modelcloud.get(filename[len('pavi://'):])
    return _load_fetched(filename, model.name, model.download, map_location)


def _load_fetched(filename, file_name, fetch, map_location):
    """Load the remote checkpoint ``filename`` as a local file: ``fetch(path)`` writes it to
    ``path``, a file ``file_name`` in a temporary folder of this process alone (no other reader
    sees it half written), which is removed after the load, failed or not. Errors and
    ``--trust-checkpoint`` name ``filename``, as the user wrote it."""
    with tempfile.TemporaryDirectory() as folder:
        path = osp.join(folder, file_name)
        fetch(path)
        return _load_file(path, map_location, name=filename, trust_as=filename,
                          hint=lambda: '')


def _write_bytes(path, data):
    """``data`` written to ``path`` in one plain write: the fetch step of
    :func:`load_from_ceph`, into :func:`_load_fetched`'s temporary folder, which no other
    process reads, so no atomic write is needed."""
    with open(path, 'wb') as file:
        file.write(data)


def _converter_hint(reason):
    """For the reference release's files (``{'model', 'args': argparse.Namespace}``, MAE's
    layout), whose weights load only once converted: trusting the file alone only leads to a
    second refusal."""
    if 'argparse.Namespace' not in reason:
        return ''
    return ('. An argparse.Namespace under args is how an MAE-style file of the reference '
            'release stores its arguments: tools/convert/from_reference.py converts it (with '
            '--trust-checkpoint) into a checkpoint that fastmim loads')


def pretrained_inits(node, name='model'):
    """``(config key, owner, init dict)`` of each ``init_cfg`` entry under the model config
    ``node`` that loads a checkpoint (``Pretrained``, ``FastMIMPretrained``, ...: any with a
    ``checkpoint``); ``owner`` is the config dict whose ``init_cfg`` holds it."""
    if not isinstance(node, dict):
        return
    init_cfg = node.get('init_cfg')
    inits = init_cfg if isinstance(init_cfg, list) else [init_cfg]
    for index, init in enumerate(inits):
        if isinstance(init, dict) and init.get('checkpoint'):
            suffix = f'.{index}' if isinstance(init_cfg, list) else ''
            yield f'{name}.init_cfg{suffix}', node, init
    for key, value in node.items():
        if key != 'init_cfg':
            yield from pretrained_inits(value, f'{name}.{key}')


def check_start_checkpoints(cfg, training=True):
    """Refuse a local ``load_from``, or (``training``) a pre-trained ``init_cfg`` checkpoint,
    that is no file or no checkpoint at all (:func:`check_checkpoint_file`), with the loader's
    own message prefixed by the config key. mmengine reads them only after it has written the
    work dir's log folder and config copy (the pre-trained one inside ``init_weights``), so a
    wrong path would leave a work dir behind. Testing does not initialise weights, so there
    only ``load_from`` is read. Remote paths (``://``) are left to
    their loaders."""
    named = [(f'{key}.checkpoint', init['checkpoint'])
             for key, _, init in (pretrained_inits(cfg.get('model')) if training else ())]
    if cfg.get('load_from'):  # --resume CKPT sets it, with resume
        named.append(('--resume' if cfg.get('resume') else 'load_from', cfg.load_from))
    for key, path in named:
        if isinstance(path, str) and '://' not in path:
            try:
                check_checkpoint_file(path, resuming=key == '--resume')
            except CheckpointError as error:
                from fastmim.engine.config_loading import missing_checkpoint_hint
                raise CheckpointError(
                    f'{key}: {error}{missing_checkpoint_hint(cfg, key, path)}') from None


def check_checkpoint_file(path, resuming=False):
    """Refuse a local ``path`` that the checkpoint loader would refuse without unpickling it,
    in the loader's words, before anything is read or written: no file or an empty one (a
    folder is named with the checkpoints it holds, a missing file with the newest ones beside
    it), or a file that starts as neither a torch file nor a safetensors file (a text file or
    a log saved as .pth), or a zip archive without its end record (a save or copy cut short,
    :func:`~fastmim.checkpoint_files.cut_off_archive`, which ``tools/early_checks.py`` also
    asks before the imports). The loader itself meets them only once the Runner is built,
    after some 300 lines of start-up, the dataset listed and a log folder left in the work
    dir. The rest of the file is left to the loader: reading it all here would read every
    checkpoint twice. ``resuming``: ``path`` was given to ``--resume``, and the hints name only
    the checkpoints that resume (:func:`~fastmim.checkpoint_files.checkpoints_in`)."""
    local = osp.expanduser(path)  # '~' expanded, as the loader does
    _refuse_no_checkpoint_file(local, resuming)
    start = first_bytes(local)
    if not is_safetensors_start(start):
        _refuse_what_torch_never_wrote(local, start, lambda: other_checkpoints(local, resuming))
    cut_off = cut_off_archive(local, resuming)
    if cut_off:
        raise CheckpointError(cut_off)


def _load_safetensors(path, map_location, name, hint):
    """The ``{name: tensor}`` of a safetensors file (timm's format, ``to_timm.py
    --safetensors``): what ``torch.load`` returns for a timm state dict saved as .pth. The
    format holds tensors and a header of strings only, so no trust is needed. It keeps no
    devices: the tensors go to ``map_location`` where that names one, else to the CPU."""
    device = str(map_location) if isinstance(map_location, (str, torch.device)) else 'cpu'
    try:
        return load_safetensors_file(path, device=device)
    except SafetensorError as error:
        raise CheckpointError(f'{name} is not a readable .safetensors file (truncated or '
                              f'corrupt?): {error}{hint()}') from None


def _refuse_what_torch_never_wrote(name, start, hint):
    """A file that starts (``start``: its first bytes) as no torch file does (a text file,
    an image, a log saved as .pth, a web page saved by a download) is refused here, by its
    first bytes: the unpickler would fail on it with a bare number (text read as pickle
    opcodes) or with the advice to trust the file, which would only fail again. ``name`` and
    ``hint()`` as in :func:`_load_file`."""
    if not start.startswith(TORCH_FILE_STARTS):
        raise CheckpointError(f"{name} is not a readable checkpoint (truncated or corrupt?): no "
                              f"torch file, which starts with b'PK' (a zip archive) or b'\\x80' "
                              f'(a pickle); it starts with {start!r}{hint()}')


def _unpickler_reason(error):
    """The line of torch's long weights-only message that names the refused object (a
    global) or opcode (a file that is no pickle at all fails on its first bytes).

    torch words a global of a module it blocks outright (os, posix, nt, sys) in lower case
    ('Trying to load unsupported GLOBAL posix.system whose module posix is blocked'), any
    other as 'Unsupported global: GLOBAL numpy.dtype was not an allowed global'."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return next((line for line in lines if 'unsupported' in line.lower()),
                lines[0] if lines else type(error).__name__)


def _refused_global(reason):
    """The global (``module.name``; a builtin by its bare name) that ``reason`` names, or
    ``None`` where the unpickler stopped on something else."""
    found = re.search(r'\bGLOBAL (\S+)', reason)
    return found.group(1) if found else None


# Modules whose functions run commands or code, or reach what does (a file that names one as
# a global calls it while unpickling), and the builtins that do the same. ``commands`` is
# Python 2's name for ``subprocess``, which pickle's protocol 2 writes for some functions.
_CODE_RUNNING_MODULES = frozenset((
    'os', 'posix', 'nt', 'sys', 'subprocess', 'commands', '_posixsubprocess', 'shutil',
    'importlib', 'runpy', 'pty', 'socket', 'code', 'codeop', 'ctypes', 'multiprocessing',
    'pickle', '_pickle', 'marshal', 'types', 'webbrowser', 'pdb', 'timeit', 'platform',
    'asyncio', 'cProfile', 'profile', 'trace'))
_CODE_RUNNING_BUILTINS = frozenset((
    'eval', 'exec', 'compile', '__import__', 'getattr', 'setattr', 'delattr', 'open',
    'breakpoint', 'globals', 'vars', 'input'))


def _runs_code(refused_global):
    """Whether loading a file that names ``refused_global`` would run commands or code."""
    module, _, attr = refused_global.rpartition('.')
    if module in ('', 'builtins', '__builtin__'):
        return attr in _CODE_RUNNING_BUILTINS
    return module.split('.')[0] in _CODE_RUNNING_MODULES


# mmengine's prefixes (mmengine/runner/checkpoint.py) and the weights-only loader of each.
CHECKPOINT_LOADERS = (
    ('', load_from_local),
    (('http://', 'https://'), load_from_http),
    (('modelzoo://', 'torchvision://'), load_from_torchvision),
    (('open-mmlab://', 'openmmlab://'), load_from_openmmlab),
    ('mmcls://', load_from_mmcls),
    ((r'(\S+\:)?s3://', r'(\S+\:)?petrel://'), load_from_ceph),
    ('pavi://', load_from_pavi),
)


def install():
    """Make mmengine's local I/O atomic and its checkpoint loading weights-only.

    Uses mmengine's own extension points (the file-backend registry and the checkpoint-loader
    scheme registry), replacing the handlers for plain local paths and the checkpoint loaders
    of every scheme mmengine knows. The loaders are registered under mmengine's own prefixes,
    so they take the same places in its longest-prefix-first order. timm's own loading is
    guarded where fastmim's models load (:func:`install_timm_pretrained_loading`).
    """
    register_backend('local', AtomicLocalBackend, force=True, prefixes='')
    for prefixes, loader in CHECKPOINT_LOADERS:
        CheckpointLoader.register_scheme(prefixes, loader, force=True)
    CheckpointLoader.load_checkpoint = classmethod(_load_checkpoint_then_log)


def _load_checkpoint_then_log(cls, filename, map_location=None, logger='current'):
    """mmengine's ``CheckpointLoader.load_checkpoint``, with its line ``Loads checkpoint by
    local backend from path: FILE`` written once the file has loaded: written before, it would
    stand just above the error of a file that fails to load (``checkpoint not found: FILE``),
    as if the file had been read."""
    loader = cls._get_checkpoint_loader(filename)
    checkpoint = loader(filename, map_location)
    print_log(f'Loads checkpoint by {loader.__name__[10:]} backend from path: {filename}',
              logger=logger)
    return checkpoint


def install_timm_pretrained_loading():
    """Make timm read the weights of ``pretrained=True`` (``TimmBackbone(pretrained=True)``,
    and its ``checkpoint_path``) as fastmim reads checkpoints: weights-only, fully only when
    trusted (``--trust-checkpoint`` with the file's path), with the same one-line errors.

    timm 1.0 asks torch for ``weights_only=True`` for every source of weights, but its URL
    source (the models without a Hugging Face copy, and every model under
    ``TIMM_USE_OLD_CACHE=1``) retries with torch.hub's default, full unpickling, when the
    weights-only load raises ``TypeError``: a crafted file makes it raise one, then runs its
    code. Every source passes through timm's ``load_pretrained``, so while it runs
    ``torch.load`` is :func:`_load_file`; safetensors files are read by safetensors, as timm
    does. Should timm rename ``load_pretrained``, this install fails with an AttributeError
    instead of leaving the loading unguarded. Importing ``fastmim.models`` installs it, before
    any ``TimmBackbone`` can be built: importing timm (and torchvision with it) takes over a
    second, which ``import fastmim`` does not pay for the tools that build no model."""
    from timm.models import _builder  # the module whose build_model_with_cfg calls it
    timm_load_pretrained = _builder.load_pretrained
    if getattr(timm_load_pretrained, 'reads_weights_only', False):
        return

    def load_pretrained(model, *args, **kwargs):
        architecture = ((getattr(model, 'pretrained_cfg', None) or {}).get('architecture')
                        or type(model).__name__)
        with _torch_load_weights_only(f"timm's pretrained weights of {architecture}"):
            return timm_load_pretrained(model, *args, **kwargs)

    load_pretrained.reads_weights_only = True
    _builder.load_pretrained = load_pretrained


@contextlib.contextmanager
def _torch_load_weights_only(what):
    """While the block runs, ``torch.load(path, ...)`` is :func:`_load_file` of ``path``,
    whatever ``weights_only`` its caller asks for; the errors say it holds ``what``. Its
    refusals are :class:`CheckpointError`, never the ``TypeError`` that timm's URL source
    answers with full unpickling."""
    torch_load = torch.load

    def load(path, map_location=None, **_):
        path = os.fspath(path)
        name = f'{path} ({what})'
        torch.load = torch_load  # the torch.load that _load_file calls
        try:
            return _load_file(path, map_location, name=name, trust_as=path, hint=lambda: '')
        finally:
            torch.load = load

    torch.load = load
    try:
        yield
    finally:
        torch.load = torch_load
