"""The contract every fastmim backbone keeps.

Central code (checkpoint loading, layer-wise lr decay, FastMIM pre-training, the mmdet / mmseg
adapters) talks to a backbone only through :class:`BackboneContract`, never by its type or by
the names of its tensors. So everything about one architecture lives in its own file, and the
contract lives here, with the central code that asks it: ``models/utils`` imports no backbone,
while every backbone imports this module (and the helpers they share,
:mod:`fastmim.models.backbones.base`):

=========================  ================================================================
``out_channels``           channels of each returned map (necks and heads size themselves)
``out_strides``            stride of each returned map (FastMIM's mask blocks, dense heads)
``geometry()``             plain-type description saved in checkpoints (``meta['geometry']``):
                           what the resolution-dependent tensors were built for. Two entries
                           are shared, which central code reads: ``type`` (first), the
                           registered class name; ``img_size``, the input size the
                           resolution-dependent tensors were built for (an int or ``[h, w]``),
                           where the backbone has such tensors (PVTv2 has none, ``TimmBackbone``
                           only when built with one): readers handle its absence
``rename_foreign_keys()``  classmethod: other layouts of the architecture (the original
                           release, the FastMIM reference release) -> this backbone's names.
                           Central code never calls it: it is a step of the backbone's own
                           ``adapt_state_dict()`` and ``from_reference_encoder()``
``adapt_state_dict()``     a foreign state dict -> this backbone's names and shapes: renames,
                           resizes (position embeddings, bias tables), drops what the backbone
                           rebuilds; timm's ``checkpoint_filter_fn`` shape. It also runs as a
                           load-state-dict pre-hook, so ``load_state_dict`` and mmengine's
                           ``load_from`` resize too
``published_archs``        class attribute: the published sizes, ``{name: settings}``
``size_keys``              class attribute: the ``geometry()`` / arch entries that set the size
                           (widths, depths, heads, a timm model name): a file that differs in
                           one is another size, which no resize rule transfers
``input_multiple(settings)``  classmethod: ``(source, n)`` where the input's height and
                           width must be multiples of ``n``, and ``source`` says what sets it
                           (``'model.backbone.patch_size'``), read from the entry's settings
                           without building it, so that a config's crops are checked at load;
                           a backbone that states one refuses an ``img_size`` off it when
                           built (:func:`~fastmim.models.backbones.base.check_img_size`), and
                           the load refuses that ``img_size`` too; default: None (any size, or
                           the backbone names its own size error)
``output_stride(settings)``  classmethod: ``out_strides[-1]`` of the backbone the config entry
                           builds, read without building it (FastMIM's prediction grid: the
                           load refuses a pre-training size it does not divide); default: None
                           (not known before the backbone is built)
``timm_sizes(model)``      classmethod: the ``size_keys`` entries of a timm model of the
                           family, to name the sizes a file differs in from ``--arch``'s
                           model (``tools/convert/to_timm.py``); default: None
``layer_id(name)``         layer-decay id of a parameter (0 = input embedding, then blocks in
``num_layer_ids``          the order the input meets them, ``num_layer_ids - 1`` = the rest)
``num_stages``             how many stages ``frozen_stages`` counts (a plain ViT's blocks)
``stage_of(name)``         stage of a parameter or module: 0 the stem (patch / position
                           embedding, class token, the dropout after them), ``s`` stage ``s``
                           (1-based), ``num_stages`` what only freezing every stage freezes (the
                           final norm); None for a module spanning stages. The contract freezes
                           from it (:meth:`BackboneContract.freeze_stages`): each backbone passes
                           its ``frozen_stages`` argument on at the end of ``__init__``
``no_weight_decay_names()``  parameters besides biases and 1-D ones that weight decay leaves
                           alone (position embeddings, class tokens, relative-position tables)
``fixed_parameter_names()``  parameters kept fixed by design (a ViT's sin-cos table), left out
                           of the optimiser without a warning; default: none
``explain_missing_keys()``  why a file lacks some of the backbone's tensors and which of its
                           settings loads the file, where the backbone recognises the file's
                           layout (a fine-tuned ViT's, without the final norm); default: None
``checkpoint_optional_names()``  parameters a checkpoint of the architecture from another
                           setting may lack: layers added for dense prediction (Swin's
                           ``out_norms``) and options pre-training and classification leave
                           off (ViT's BEiT tables and layer scales); loading keeps them
                           initialised and logs them. Default: none
``keeps_own_linear_init``  True where FastMIM's Xavier redraw of linear layers must leave the
                           backbone's alone (weights loaded when built, EVA-02's depth scaling)
``timm_classifier``        class attributes: where timm's model of the family keeps its
``timm_pooled_norm``       classifier, and the norm after pooling (or None: no such norm)
``timm_classifier_prefixes()``  the top-level names of that classifier in a timm state dict
``timm_model(geometry)``   classmethod: the timm model the weights convert to, when the class
                           is no timm model itself (``TimmBackbone`` wraps one)
``timm_state_dict()``      classmethod: the weights in that timm model's names, and the keys it
                           has no place for (``tools/convert/to_timm.py``)
``reference_layout``       class attribute: how the FastMIM reference release stores the
                           architecture (``ReferenceLayout``), or None when it has none; then
``from_reference_``        classmethods ``..._encoder`` and ``..._classifier``: the backbone
                           that a reference file's weights describe, read from their shapes,
                           and those weights in its names (``tools/convert/from_reference.py``)
=========================  ================================================================

A new backbone subclasses :class:`BackboneContract` first (before timm's class or mmengine's
``BaseModule``), implements the members above and calls :meth:`BackboneContract.
enable_state_dict_adaptation` at the end of ``__init__``; see docs/architecture.md.
"""
from typing import Dict, List, Optional, Sequence, Set, Tuple

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModule

from .reference import ReferenceClassifier, ReferenceEncoder, ReferenceLayout

StateDict = Dict[str, torch.Tensor]


class BackboneContract:
    """Mixin that declares what fastmim asks of a backbone (see the module docstring)."""

    out_channels: List[int]
    out_strides: List[int]
    published_archs: Dict[str, dict] = {}
    # Entries of geometry() and of the arch settings that set the size, in the order messages
    # list them. Checkpoint loading names those that differ between a file and the model (a
    # ViT-S file given to a ViT-B config), and the reference converter compares them to pick a
    # published size; only the backbone knows which of its entries they are. The default names
    # none: no such line, and every published size is tried.
    size_keys: Tuple[str, ...] = ()
    reference_layout: Optional[ReferenceLayout] = None
    # True for a backbone whose linear layers keep what they got when it was built, under
    # FastMIM's Xavier redraw (linear_init='xavier', the release's for its four backbones):
    # weights it loaded then (TimmBackbone with timm's published or a local checkpoint), or an
    # initialisation that belongs to the architecture (EVA-02 divides each block's output
    # projections by its depth).
    keeps_own_linear_init: bool = False
    # Where timm's model of this family keeps its classifier (its pretrained_cfg 'classifier'):
    # the name tools/convert/to_timm.py gives a fine-tuned head without --arch.
    timm_classifier: str = 'head'
    # Where timm's model of this family keeps the norm of its pooled features (ViT's and
    # EVA-02's ``fc_norm``, after average pooling), or None where it has none: a fine-tuned
    # head's norm goes there in tools/convert/to_timm.py, and has nowhere to go without one.
    timm_pooled_norm: Optional[str] = None

    @classmethod
    def rename_foreign_keys(cls, state: StateDict) -> StateDict:
        """``state`` with the keys of other layouts of this architecture renamed to this
        backbone's, and their stale buffers left out. A backbone with other layouts calls it
        from its own :meth:`adapt_state_dict` and, where it has one, its
        ``from_reference_encoder``: a classmethod needs no instance, so that one renames a file
        before it reads the size from the renamed shapes. Central code asks
        :meth:`adapt_state_dict` and never calls this. The default renames nothing."""
        return dict(state)

    def timm_classifier_prefixes(self) -> Tuple[str, ...]:
        """The top-level names (with their dot) of the classifier in this backbone's timm
        state dicts: a timm file's keys there are no weights of the backbone, and the loader
        leaves them outside it (``head.`` for ViT and Swin, ``fc.`` for a ResNet). The default
        reads :attr:`timm_classifier` and :attr:`timm_pooled_norm`."""
        names = (self.timm_classifier, self.timm_pooled_norm)
        return tuple(sorted({name.split('.')[0] + '.' for name in names if name}))

    @classmethod
    def input_multiple(cls, settings: dict) -> Optional[Tuple[str, int]]:
        """``(source, n)``: the input's height and width must be multiples of ``n``, read from
        the config entry ``settings`` of this backbone (``model.backbone``) without building
        it. ``source`` says what sets ``n``, naming the entry's keys (``model.backbone.
        patch_size``), for the message that refuses a size. The default (None) asks
        nothing."""
        return None

    @classmethod
    def output_stride(cls, settings: dict) -> Optional[int]:
        """The stride of the last map (``out_strides[-1]``) that the config entry ``settings``
        (``model.backbone``, its ``out_indices`` included) builds, read without building it:
        FastMIM predicts its target on that map's grid, so a config's pre-training sizes are
        checked against it at load, where the model would refuse them only at the first
        iteration. The default (None) states nothing: the model checks."""
        return None

    @classmethod
    def timm_sizes(cls, model: torch.nn.Module) -> Optional[dict]:
        """The :attr:`size_keys` entries of ``model``, a timm model of this backbone's family,
        read from timm's attributes: the converter names the sizes in which a file differs
        from the timm model ``--arch`` names (another width, depth or heads), where a list of
        every tensor's two shapes leaves the user to work them out. The default (None) does not
        say."""
        return None

    @classmethod
    def timm_model(cls, geometry: dict) -> Optional[torch.nn.Module]:
        """The timm model (on the meta device: names, shapes, class) that a checkpoint of
        ``geometry`` converts to, when it is not this class's own timm parent; None (the
        default) for a backbone that subclasses its timm model."""
        return None

    @classmethod
    def timm_state_dict(cls, state: StateDict, geometry: dict,
                        path: str) -> Tuple[StateDict, List[str]]:
        """This backbone's weights ``state`` (of the checkpoint ``path`` with ``geometry``) in
        the names of its timm model, and the keys timm's model has no place for, which the
        converter leaves out and reports. Weights no timm model can compute with raise
        :class:`~fastmim.errors.CheckpointError`. The default: a timm subclass's names are
        timm's already, and nothing is left out."""
        return dict(state), []

    @classmethod
    def from_reference_encoder(cls, state: StateDict, path: str, img_size: Optional[int] = None,
                               num_heads: Optional[Sequence[int]] = None) -> ReferenceEncoder:
        """The backbone (on the meta device) that the encoder weights ``state`` of a reference
        file describe, those weights in its names, and the keys it has no place for.
        ``img_size`` and ``num_heads`` are the user's, for what the weights do not determine;
        a given value the weights contradict is an error. Needed with a ``reference_layout``."""
        raise NotImplementedError(f'{cls.__name__} declares no reference layout')

    @classmethod
    def from_reference_classifier(cls, encoder: StateDict, parts: StateDict, path: str,
                                  img_size: Optional[int] = None,
                                  num_heads: Optional[Sequence[int]] = None
                                  ) -> Optional[ReferenceClassifier]:
        """For a fine-tuned reference file: its encoder ``encoder`` and its classifier parts
        besides ``head.*`` (``parts``) as this backbone and the fastmim head they fit (its
        config, whose linear ``fc`` takes ``head``); None when no fastmim head takes that
        classifier, and the encoder alone converts (the default)."""
        return None

    def geometry(self) -> Dict:
        """Plain-type description (``type`` first) saved with every pre-training checkpoint;
        with ``img_size`` where resolution-dependent tensors were built for an input size
        (central code reads that entry: the default input size of ``fastmim.apis``, the size
        recorded in checkpoint meta)."""
        raise NotImplementedError(f'{type(self).__name__} must implement geometry()')

    def adapt_state_dict(self, state: StateDict,
                         source_geometry: Optional[dict] = None) -> StateDict:
        """``state`` (keys relative to this backbone) in this backbone's names and shapes.

        ``source_geometry`` is the ``geometry()`` the weights were saved with, when the file
        says; without it, sizes are inferred from the shapes (square grids and windows). Keys
        the backbone rebuilds itself are left out, and tensors no rule can transfer are returned
        as they are, so the caller reports them with every other problem at once. The default
        changes nothing: a backbone without resolution-dependent tensors needs no rule.

        A backbone that subclasses a timm model should read only timm's attributes here and
        call its rename rule through its class name: ``tools/convert/to_timm.py --arch`` applies
        this method to a plain timm model of the same family to fit weights to it.
        """
        return dict(state)

    def layer_id(self, name: str) -> int:
        """Layer-decay id of parameter ``name`` (relative to this backbone)."""
        raise NotImplementedError(f'{type(self).__name__} must implement layer_id(name)')

    @property
    def num_layer_ids(self) -> int:
        """Ids run from 0 to ``num_layer_ids - 1``; the last one is shared with the head."""
        raise NotImplementedError(f'{type(self).__name__} must implement num_layer_ids')

    @property
    def num_stages(self) -> int:
        """How many stages ``frozen_stages`` counts: its values run from -1 to this."""
        raise NotImplementedError(f'{type(self).__name__} must implement num_stages')

    def stage_of(self, name: str) -> Optional[int]:
        """Stage of the parameter or module ``name`` (relative to this backbone) for
        ``frozen_stages``: 0 the stem, ``s`` stage ``s`` (1-based, in the order the input meets
        them), ``num_stages`` for what only freezing every stage freezes (a final norm, as
        mmpretrain's ViT); None for a module that spans stages (a list of blocks, the backbone
        itself), whose parts are asked one by one. Only the backbone knows what its stem and
        stages are; central code never reads its names."""
        raise NotImplementedError(f'{type(self).__name__} must implement stage_of(name)')

    def freeze_stages(self, frozen_stages: int) -> None:
        """Freeze the stem and the first ``frozen_stages`` stages (-1: nothing), as mmdet's and
        mmpretrain's backbones do: their parameters get ``requires_grad=False`` (so no optimiser
        updates them, weight decay included) and their modules stay in eval mode through every
        later :meth:`train` (dropout, drop path and BatchNorm statistics off). A training choice,
        so no part of :meth:`geometry`. A value outside -1 ... ``num_stages`` is refused."""
        if (not isinstance(frozen_stages, int) or isinstance(frozen_stages, bool)
                or not -1 <= frozen_stages <= self.num_stages):
            raise ValueError(
                f'{type(self).__name__}: frozen_stages {frozen_stages!r} is out of range; give '
                f'an int in -1 ... {self.num_stages} (-1 freezes nothing, 0 the stem, n the stem '
                f'and the first n of its {self.num_stages} stages)')
        self.frozen_stages = frozen_stages
        self._keep_frozen_stages_frozen()
        if frozen_stages >= 0:
            self._log_frozen_share(frozen_stages)

    def _log_frozen_share(self, frozen_stages: int) -> None:
        """One line in the run's log that freezing took effect, and on how much: a setting
        given through ``--cfg-options`` otherwise leaves no trace until the optimiser's
        summary, which counts every module's frozen parameters together."""
        sizes = [(param.numel(), self._in_frozen_stage(name, frozen_stages))
                 for name, param in self.named_parameters()]
        frozen = sum(numel for numel, in_frozen_stage in sizes if in_frozen_stage)
        total = sum(numel for numel, _ in sizes)
        print_log(f'{type(self).__name__}: frozen_stages={frozen_stages} (of '
                  f'{self.num_stages} stages) freezes {frozen:,} of {total:,} parameter '
                  f'elements', logger='current')

    def train(self, mode: bool = True):
        """``nn.Module.train``, then the frozen stages back in eval mode."""
        super().train(mode)
        self._keep_frozen_stages_frozen()
        return self

    def _keep_frozen_stages_frozen(self) -> None:
        """Parameters of the frozen stages without gradient, their modules in eval mode."""
        frozen = getattr(self, 'frozen_stages', -1)
        if frozen < 0:
            return
        for name, param in self.named_parameters():
            if self._in_frozen_stage(name, frozen):
                param.requires_grad_(False)
        for name, module in self.named_modules():
            if name and self._in_frozen_stage(name, frozen):
                module.eval()

    def _in_frozen_stage(self, name: str, frozen_stages: int) -> bool:
        stage = self.stage_of(name)
        return stage is not None and stage <= frozen_stages

    def no_weight_decay_names(self) -> Set[str]:
        """Names (relative to this backbone) of the parameters weight decay must leave alone
        although they are neither biases nor 1-D: tables a pull towards zero gives no sensible
        prior, such as position embeddings, class tokens and relative-position biases, and
        whatever else the architecture's authors exempt (Swin-V2's logit scales). The default
        is the set of timm's ``no_weight_decay()`` where the class has it, as timm's optimiser
        factory reads it, limited to the parameters this backbone has; else none."""
        timm_names = getattr(self, 'no_weight_decay', None)
        if not callable(timm_names):
            return set()
        return set(timm_names()) & {name for name, _ in self.named_parameters()}

    def fixed_parameter_names(self) -> Set[str]:
        """Names (relative to this backbone) of the parameters it keeps fixed by design
        (``requires_grad=False``: a ViT's sin-cos position table), so that an optimiser
        constructor leaves them out without warning of a frozen parameter. The default is
        none."""
        return set()

    def checkpoint_optional_names(self) -> Set[str]:
        """Names (relative to this backbone) of the parameters and buffers that a checkpoint of
        this architecture trained in another setting may lack: layers the backbone adds for
        dense prediction (extra output norms) and options that pre-training and classification
        leave off (relative-position tables, layer scales). ``load_pretrained`` keeps them
        initialised when a file lacks them, and names them in its summary; a file that has them
        loads them. The backbone declares them, so that no config has to list its tensor names
        (``allow_missing`` stays for the user's own new layers). The default is none: every
        tensor must come from the file."""
        return set()

    def explain_missing_keys(self, missing: Set[str], file_keys: Sequence[str]) -> Optional[str]:
        """Why a checkpoint whose keys are ``file_keys`` (all of them, as the file names them)
        lacks ``missing`` (this backbone's names), and which setting of this backbone loads it,
        where the backbone recognises the file's layout; the loader then says that instead of
        listing the keys, which named the symptom (``norm.weight``) but not the file nor the
        fix. Only the backbone knows its key layouts and the settings that change them. The
        default recognises none (None): the loader lists the keys."""
        return None

    def init_weights(self, *args, **kwargs) -> None:
        """Two callers share this name. mmengine's runner calls it without arguments on every
        sub-module: that applies ``init_cfg`` only, because a backbone initialises its weights
        when it is built and re-running its scheme would re-randomise a model that a parent has
        just loaded. timm's constructors call their own ``init_weights`` with arguments
        (``needs_reset``, a mode): those calls go on to timm's scheme."""
        if args or kwargs:
            super().init_weights(*args, **kwargs)
        else:
            BaseModule.init_weights(self)

    def enable_state_dict_adaptation(self) -> None:
        """Run :meth:`adapt_state_dict` whenever a state dict is loaded into this backbone,
        alone or as part of a model, through any path that reaches ``_load_from_state_dict``
        (``load_state_dict``, mmengine's ``load_checkpoint`` / ``load_from``)."""
        self.register_load_state_dict_pre_hook(_adapt_on_load)


def _adapt_on_load(module: BackboneContract, state_dict: StateDict, prefix: str,
                   *unused) -> None:
    """Load-state-dict pre-hook: adapt the keys under ``prefix`` in place. Keys the backbone
    rebuilds itself are given its own current values, so that strict loading still finds them."""
    own = {key[len(prefix):]: state_dict.pop(key) for key in list(state_dict)
           if key.startswith(prefix)}
    adapted = module.adapt_state_dict(own)
    dropped = own.keys() - adapted.keys()
    if dropped:  # (state_dict() only then: this hook runs on every load)
        current = module.state_dict()
        adapted.update({key: current[key] for key in dropped if key in current})
    state_dict.update({prefix + key: value for key, value in adapted.items()})
