"""Images named in a list file, one ``relative/path [label]`` per line (mmpretrain's meta files)."""
import codecs
import io
import os.path as osp
import re
import warnings
from typing import Callable, List, Optional, Sequence, Tuple, Union

from mmengine.dataset import BaseDataset

from fastmim.registry import DATASETS

from .sample_seeds import SeededSamples
from .utils import (IMG_EXTENSIONS, DatasetListingWarning, NamedRefetchFailure, build_pipeline,
                    examples, has_extension, image_prefix)

# The end of a line of a CSV file: the label after a comma, or a semicolon where the decimal
# mark is a comma (what a spreadsheet saves); not after a digit, which is a list of labels.
CSV_LABEL = re.compile(r'(?<!\d)[,;][ \t]*\d*$')


def line_number_at(raw: bytes, offset: int) -> int:
    """The line of the list that holds byte ``offset``, line ends counted as the lines are read
    (universal newlines: ``\\r\\n``, ``\\n`` and a lone ``\\r``, old Mac OS's). Counting
    ``\\n`` only would put every line of a CR-ended list on line 1."""
    head = raw[:offset]
    return head.count(b'\n') + head.count(b'\r') - head.count(b'\r\n') + 1


def split_last_field(text: str) -> Tuple[str, Optional[str]]:
    """``(all before the last field, the last field)`` of a stripped line, split at its last
    run of spaces and tabs, inner whitespace kept; ``(text, None)`` for a single field. String
    searches, not a regular expression: ImageNet's list has 1.28 million lines."""
    end = max(text.rfind(' '), text.rfind('\t'))
    if end < 0:
        return text, None
    return text[:end].rstrip(' \t'), text[end + 1:]


def is_label(field: str) -> bool:
    """A non-negative integer in ASCII digits: ``str.isdigit`` alone also takes ``'²'`` and
    other digits that ``int`` refuses or reads unexpectedly."""
    return field.isascii() and field.isdigit()


def trailing_labels(text: str) -> List[str]:
    """The fields at the end of ``text`` that are labels, in order; never the first field,
    which is (part of) the path, so ``'1 2'`` is the file ``1`` and its label, not two labels."""
    fields = re.split(r'[ \t]+', text)[1:]
    count = 0
    while count < len(fields) and is_label(fields[-1 - count]):
        count += 1
    return fields[len(fields) - count:]


def csv_hint(text: str) -> str:
    """Why a line's path may be wrong: a list saved as CSV separates the label with a comma or
    a semicolon, which a space-separated list reads as part of the path. Empty if not so."""
    match = CSV_LABEL.search(text)
    if match is None:
        return ''
    return (f'; {text!r} ends in {match.group()!r}, as a line of a CSV file does: separate path '
            f'and label with a space or a tab')


def header_hint(line_number: int, path: str) -> str:
    """Why the first line of a labelled list may not parse: column names (``path label``,
    ``filename,label``) that a spreadsheet or pandas wrote above the images. Empty for a later
    line, or one whose path is an image's name."""
    if line_number != 1 or has_extension(path.split(',')[0].split(';')[0], IMG_EXTENSIONS):
        return ''
    return '; is line 1 a header (column names)? Remove it'


@DATASETS.register_module()
class ImageList(NamedRefetchFailure, SeededSamples, BaseDataset):
    """Images listed in ``ann_file``, paths relative to ``<data_root>/<data_prefix>``.

    Each non-blank line is ``path`` or ``path label`` (label a non-negative int), e.g.
    ImageNet's ``n01440764/n01440764_10026.JPEG 0``. Labels are read when ``with_label=True``
    (then every line needs one) and validated but not used otherwise, so the labelled list of a
    fine-tuning set also serves unlabelled pre-training. The file is UTF-8; a BOM and Windows or
    old Mac line ends are accepted.

    Paths may contain spaces (web-scraped and hand-named files), read as mmpretrain's
    ``CustomDataset`` reads them (``line.strip().rsplit(' ', 1)``): whitespace around the line
    is dropped, the label is the last field, and the path is everything before it, inner spaces
    and tabs kept exactly (``my photos/img 1.jpg 3`` is ``'my photos/img 1.jpg'``, label 3).
    The path and label may be separated by any run of spaces and tabs, as a spreadsheet saves
    them (mmpretrain takes one space only and would keep the others at the end of the path), so
    a path cannot begin or end with whitespace. With ``with_label=False`` the last field is a
    label only when it is all ASCII digits (``my photos/img 1.jpg`` is a path); it is refused as
    a bad label when the text before it ends in an image extension and it does not
    (``img.jpg cat``, ``img.jpg -1``). Ambiguous, and read as path and label: an extensionless
    file whose name ends in a space and digits (``scan 12``). A line that ends in two or more
    integers (``img.jpg 1 2``) is refused in both modes as a multi-label line, not read as the
    path ``img.jpg 1``.

    The list is checked line by line at construction (errors name the file and line), and the
    first listed image must exist, which catches a wrong ``data_root`` before training starts.
    With labels, ``metainfo['max_label']`` is the largest one; class names given in
    ``metainfo=dict(classes=...)`` are kept, and a label with no name among them raises, naming
    its line. Lines that repeat an image are kept (oversampling) and named once in a
    ``DatasetListingWarning``.
    Other missing or unreadable images are skipped with a warning when loaded, or raise a
    ``ValueError`` naming them with ``test_mode=True`` (an evaluation set).

    Args:
        ann_file: the list file; relative paths are taken from ``data_root``.
        data_root: root directory for ``ann_file`` and the images.
        with_label: give samples ``gt_label`` from the last field of each line.
        pipeline: transforms (config dicts or callables).
        data_prefix: sub-folder of ``data_root`` that the listed paths are relative to
            (``'train'`` for mmpretrain's ImageNet layout), or ``dict(img_path='train')``.
        **kwargs: other ``BaseDataset`` arguments.
    """

    def __init__(self,
                 ann_file: str,
                 data_root: str = '',
                 with_label: bool = False,
                 pipeline: Sequence[Union[dict, Callable]] = (),
                 data_prefix: Union[str, dict] = '',
                 **kwargs):
        self.with_label = with_label
        super().__init__(
            ann_file=ann_file,
            # '~/data', as a shell expands it
            data_root=osp.expanduser(data_root) if isinstance(data_root, str) else data_root,
            data_prefix=image_prefix(data_prefix),
            pipeline=build_pipeline(pipeline),
            **kwargs)

    def load_data_list(self) -> List[dict]:
        name = type(self).__name__
        if not self.ann_file:
            raise ValueError(f"{name}: ann_file is empty; {name} reads a list file. For a folder "
                             f"of images with no list (mmpretrain's CustomDataset with "
                             f"ann_file='') use dict(type='ImageFolder', data_root=..., "
                             f"data_prefix=...)")
        if osp.isdir(self.ann_file):
            raise IsADirectoryError(f'{name}: ann_file {self.ann_file!r} is a folder, not a list '
                                    f'file; for a folder of images use ImageFolder')
        if not osp.isfile(self.ann_file):
            raise FileNotFoundError(f'{type(self).__name__}: list file {self.ann_file!r} does '
                                    f'not exist (data_root={self.data_root!r})')
        image_root = self.data_prefix['img_path']
        data_list, listed = [], []
        for line_number, line in enumerate(self._read_lines(), start=1):
            if not line.strip():
                continue
            path, label = self._parse_line(line, line_number)
            info = dict(img_path=osp.join(image_root, path))
            if self.with_label:
                info['gt_label'] = label
            data_list.append(info)
            listed.append((line_number, path, label))
        if not data_list:
            raise ValueError(f'{type(self).__name__}: list file {self.ann_file!r} names no '
                             f'images')
        self._warn_repeats(listed)
        if self.with_label:
            self._check_named_labels(listed)
            # A list names no classes unless metainfo gives them: the largest label lets
            # DatasetClassesCheckHook compare the model's num_classes before training, not at
            # the batch that holds it.
            self._metainfo['max_label'] = max(info['gt_label'] for info in data_list)
        first = data_list[0]['img_path']
        if not osp.isfile(first):
            raise FileNotFoundError(f'{name}: the first image of {self.ann_file!r}, {first!r}, '
                                    f'{self._first_image_problem(data_list, listed)}')
        return data_list

    def _check_named_labels(self, listed: List[Tuple[int, str, Optional[int]]]) -> None:
        """With ``metainfo=dict(classes=...)`` (mmpretrain's ``CustomDataset(ann_file,
        classes=...)``) every label must name one of the classes: a larger one has no name,
        and the model's ``num_classes`` (checked against the largest label) may be larger
        than the classes, so nothing else would notice. Names the first such line."""
        classes = self._metainfo.get('classes')
        if not classes:
            return
        for line_number, _, label in listed:
            if label >= len(classes):
                raise ValueError(
                    f"{type(self).__name__}: {self.ann_file}, line {line_number}: label "
                    f"{label}, but metainfo['classes'] names {len(classes)} classes (labels "
                    f'0-{len(classes) - 1}); give a name to every class of the list')

    def _warn_repeats(self, listed: List[Tuple[int, str, Optional[int]]]) -> None:
        """A line naming an image listed before makes it count twice (drawn twice as often in
        training, weighed twice in an evaluation), which a list joined from two overlapping
        ones does without a word. Repeats may be meant (oversampling a rare class), so this
        warns, once, naming the first repeated lines, and keeps them."""
        first, repeats = {}, []
        for line_number, path, label in listed:
            key = osp.normpath(path)  # 'a//b.jpg' and './a/b.jpg' are 'a/b.jpg'
            if key not in first:
                first[key] = line_number, label
                continue
            first_line, first_label = first[key]
            other = '' if label == first_label else f' with label {label}, not {first_label}'
            repeats.append(f'line {line_number} repeats line {first_line} ({path!r}{other})')
        if repeats:
            warnings.warn(f'{type(self).__name__}: {self.ann_file}: {len(repeats)} line(s) name '
                          f'an image listed on an earlier line, so it counts more than once; '
                          f'remove them unless the repeats are meant (oversampling): '
                          f'{examples(repeats)}', DatasetListingWarning)

    def _first_image_problem(self, data_list: List[dict],
                             listed: List[Tuple[int, str, Optional[int]]]) -> str:
        """What is wrong with a first image that is no file, and what to check, where the list
        shows more than a wrong root: a folder listed instead of its images; a header line
        (column names, as pandas' ``to_csv`` writes by default) or a comment before images that
        exist; a list written on Windows, whose backslashes are part of the file name on Linux,
        not folder separators; quotes around a path (from a CSV export), or a label after a
        comma, both read as part of the path."""
        path, listed_path = data_list[0]['img_path'], listed[0][1]
        if osp.isdir(path):
            return ('is a folder, not an image file: list the images in it (a folder of class '
                    'folders needs no list: use ImageFolder)')
        if len(data_list) > 1 and osp.isfile(data_list[1]['img_path']):
            if has_extension(listed_path, IMG_EXTENSIONS):  # an image's name: no header
                return (f'does not exist, though the image on line {listed[1][0]} does: moved '
                        f'or deleted? Remove line {listed[0][0]} or put the image back')
            return (f'does not exist, though the image on line {listed[1][0]} does: is line '
                    f'{listed[0][0]} a header or a comment? Remove it')
        if '\\' in listed_path:
            return "does not exist; its path has Windows separators ('\\'); write them as '/'"
        if len(listed_path) > 1 and listed_path[0] in '"\'' and listed_path[-1] == listed_path[0]:
            return (f'does not exist; its path is in quotes ({listed_path[0]}): write it bare, '
                    f'spaces and all')
        hint = csv_hint(listed_path)
        if hint:
            return 'does not exist' + hint
        after = csv_hint(listed[1][1]) if len(listed) > 1 else ''
        if after:  # a CSV export with its header row (column names)
            return (f'does not exist: is line {listed[0][0]} a header? The line after it: '
                    + after.removeprefix('; '))
        return (f"does not exist; check data_root ({self.data_root!r}) and data_prefix "
                f"({self.data_prefix['img_path']!r})")

    def _read_lines(self) -> io.StringIO:
        """The list file's lines (any line ends), as UTF-8 without the BOM Windows editors write.

        Decoded whole, not line by line, so that bytes that are no UTF-8 (a list saved as
        cp1252) are named by line: the streaming decoder's error names neither.
        """
        with open(self.ann_file, 'rb') as f:
            raw = f.read().removeprefix(codecs.BOM_UTF8)  # utf-8-sig's offsets would skip it
        try:
            return io.StringIO(raw.decode('utf-8'), newline=None)
        except UnicodeDecodeError as error:
            line_number = line_number_at(raw, error.start)
            raise ValueError(f'{type(self).__name__}: {self.ann_file}, line {line_number}: not '
                             f'UTF-8 (byte {raw[error.start]:#04x}); save the list as UTF-8'
                             ) from None

    def _parse_line(self, line: str, line_number: int) -> Tuple[str, Optional[int]]:
        """``(path, label)`` of a non-blank line, the label ``None`` where it has none; the
        rules are the class docstring's."""
        text = line.strip()
        path, last = split_last_field(text)
        if last is None:
            if self.with_label:
                raise self._line_error(line_number, f"expected '<path> <label>', got {text!r}"
                                                    f'{csv_hint(text)}'
                                                    f'{header_hint(line_number, text)}')
            return text, None
        if not is_label(last):
            bad_label = self.with_label or (has_extension(path, IMG_EXTENSIONS)
                                            and not has_extension(last, IMG_EXTENSIONS))
            if not bad_label:
                return text, None  # a path with spaces
            hint = (f'; {text!r} has no label' if has_extension(last, IMG_EXTENSIONS) else
                    csv_hint(text) + header_hint(line_number, path))
            raise self._line_error(line_number, f'the label after {path!r} must be a '
                                                f'non-negative integer, got {last!r}{hint}')
        # path[-1] first: most paths end in an extension, and ImageNet's list is long.
        if path[-1].isdigit() and is_label(split_last_field(path)[1] or ''):
            labels = trailing_labels(text)
            raise self._line_error(
                line_number, f"{text!r} ends in {len(labels)} integers ({' '.join(labels)}): a "
                f'multi-label line? {type(self).__name__} takes one label per line, after the '
                f'path (so a path cannot end in a space and digits)')
        return path, int(last)

    def _line_error(self, line_number: int, message: str) -> ValueError:
        """The error for a bad line, naming file and line; built only when raised, as
        formatting the place of each of ImageNet's 1.28 million lines would take time."""
        return ValueError(f'{type(self).__name__}: {self.ann_file}, line {line_number}: '
                          f'{message}')
