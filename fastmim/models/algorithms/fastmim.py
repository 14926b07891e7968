"""FastMIM pre-training: mask blocks in pixel space, encode every token, predict the target
(HOG by default) of the masked cells.

The steps are short named methods, read top to bottom in :meth:`FastMIM.reconstruct`:
``generate_mask`` -> ``mask_image`` -> ``encode`` -> ``decode`` -> ``fold_tokens``, and the
target comes from the clean image. Because the mask is applied to pixels before the patch
embedding, the backbone is an ordinary backbone with no MIM code.
"""
import copy

import torch
from mmengine.model import BaseModel
from torch import nn
from torch.nn.init import trunc_normal_

from fastmim.constants import IMAGENET_PREPROCESSOR
from fastmim.registry import MODELS
from ..utils import BlockMaskGenerator, expand_block_mask
from ..utils.block_mask import INPUT_SIZE_SETTING
from ..utils.checkpoint_meta import recorded_input_size


def _divide_exactly(size, cell_size, what):
    if size % cell_size:
        raise ValueError(f"{what} {size} is not a multiple of the target's cell_size "
                         f'{cell_size} (model.target_generator: cell_size of HOGGenerator, '
                         f'patch_size of PixelTarget)')
    return size // cell_size


LINEAR_INITS = ('xavier', 'own')


def xavier_init_linears(*modules):
    """Xavier-uniform weights and zero biases for every ``nn.Linear`` inside ``modules``: what
    the reference release's pre-training wrappers (ViT, Swin, PVTv2, CMT alike) do to encoder and
    decoder once both are built. Convolutions, LayerNorms, tokens and relative-position tables
    keep the initialisation their module gave them."""
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)


def _check_mask_ratio(mask_ratio):
    """FastMIM needs a number with ``0 < mask_ratio < 1``: at 0 no block is masked, the loss
    over the masked cells is 0 and nothing trains; at 1 every block is masked and the input
    holds nothing to predict the targets from (the mask generator itself accepts both)."""
    if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, (int, float)):
        raise ValueError(f'FastMIM: mask_ratio must be a number in (0, 1), got {mask_ratio!r}')
    if not 0 < mask_ratio < 1:
        why = ('0 masks no block: the masked loss is 0 and nothing trains' if mask_ratio <= 0
               else '1 masks every block: the input keeps nothing to predict the targets from')
        if mask_ratio > 1:
            why += '; the ratio is a fraction, not a percentage'
        raise ValueError(f'FastMIM: mask_ratio must be in (0, 1), got {mask_ratio} ({why})')


@MODELS.register_module()
class FastMIM(BaseModel):
    """Masked image modeling at low resolution with dense targets, for any backbone.

    Args:
        backbone (dict): Config of a backbone that returns a tuple of NCHW maps and has
            ``out_channels``, ``out_strides`` and ``geometry()``; the last map is decoded.
        neck (dict): Config of the decoder, e.g. ``dict(type='MIMDecoder', depth=1)``.
            ``in_channels`` defaults to ``backbone.out_channels[-1]`` and ``out_channels`` to
            ``target.channels * (stride // target.cell_size) ** 2``.
        target_generator (dict): Config of a target with ``channels`` and ``cell_size`` that maps
            normalised images ``(B, 3, H, W)`` to ``(B, channels, H / cell, W / cell)``.
        loss (dict): Config of the loss ``(prediction, target, cell_mask) -> scalar``.
        mask_ratio (float): Fraction of blocks masked per image.
        block_size (int): Side of a mask block in pixels; a multiple of the target cell size,
            but coarser or finer than the token grid as you like.
        data_preprocessor (dict, optional): Defaults to mmengine's ``ImgDataPreprocessor`` with
            the ImageNet mean/std on the 0-255 scale (inputs are already RGB).
        linear_init (str): ``'xavier'`` (default): once backbone and decoder are built, every
            ``nn.Linear`` in them gets Xavier-uniform weights and zero biases
            (:func:`xavier_init_linears`), as the reference release pre-trains every backbone;
            other layers keep their module's init. A backbone with ``keeps_own_linear_init``
            keeps its linear layers too: weights it loaded as it was built (timm's published
            ones), EVA-02's depth-scaled projections. ``'own'``: each module keeps its own
            initialisation (timm's and :class:`MIMDecoder`'s trunc-normal std 0.02), the
            ablation. Done at construction; ``init_weights()`` keeps it, and loaded weights
            (``load_from``, resume, ``init_cfg``) replace it.
        init_cfg (dict, optional): mmengine init config.
    """

    def __init__(self, backbone, neck, target_generator, loss=dict(type='MaskedMSELoss'),
                 mask_ratio=0.75, block_size=32, data_preprocessor=None, linear_init='xavier',
                 init_cfg=None):
        if linear_init not in LINEAR_INITS:
            raise ValueError(f"FastMIM: linear_init must be 'xavier' (Xavier-uniform linear "
                             f"layers, as the reference release) or 'own' (each module's own "
                             f'init), got {linear_init!r}')
        if data_preprocessor is None:
            data_preprocessor = copy.deepcopy(IMAGENET_PREPROCESSOR)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        self.target_generator = MODELS.build(target_generator)
        _check_mask_ratio(mask_ratio)
        self.mask_generator = BlockMaskGenerator(mask_ratio=mask_ratio, block_size=block_size)

        stride = self.backbone.out_strides[-1]
        cell_size = self.target_generator.cell_size
        self.cells_per_token = _divide_exactly(stride, cell_size, 'the backbone output stride')
        self.cells_per_block = _divide_exactly(block_size, cell_size, 'model.block_size')
        self.neck = MODELS.build(self._complete_neck_config(neck))
        self.criterion = MODELS.build(loss)

        # One learnable RGB colour that replaces every masked pixel.
        self.mask_token = nn.Parameter(torch.zeros(1, 3, 1, 1))
        trunc_normal_(self.mask_token, std=0.02)
        self._last_input_size = None
        if linear_init == 'xavier':
            keeps_own = getattr(self.backbone, 'keeps_own_linear_init', False)
            xavier_init_linears(*([self.neck] if keeps_own else [self.backbone, self.neck]))

    def _complete_neck_config(self, neck):
        neck = copy.deepcopy(neck)
        values_per_token = self.target_generator.channels * self.cells_per_token ** 2
        neck.setdefault('in_channels', self.backbone.out_channels[-1])
        neck.setdefault('out_channels', values_per_token)
        if neck['out_channels'] != values_per_token:
            raise ValueError(
                f"neck out_channels {neck['out_channels']} != {values_per_token} values per "
                f'token (target channels {self.target_generator.channels} x '
                f'{self.cells_per_token}x{self.cells_per_token} cells per token)')
        return neck

    def check_input_size(self, height, width, size_setting=INPUT_SIZE_SETTING):
        """Refuse an input size this model cannot pre-train at, naming the setting to change:
        the mask blocks must tile it (:meth:`BlockMaskGenerator.grid_size`) and the backbone's
        output stride must divide it, or the prediction grid misses rows of the target's (a
        144-px crop for a stride-32 backbone with 16-px blocks). Reads only the size, so
        ``ProgressiveResolutionHook`` checks every stage's size before training starts.
        ``size_setting`` is what the error tells to change (``get_flops.py``: its --shape)."""
        self.mask_generator.grid_size(height, width, size_setting)
        stride = self.backbone.out_strides[-1]
        if height % stride or width % stride:
            raise ValueError(f'input {height}x{width} is not a multiple of the backbone output '
                             f'stride {stride}; make the input size ({size_setting}) a '
                             f'multiple of {stride}')

    # --- the steps ---------------------------------------------------------------------------
    def generate_mask(self, inputs):
        """Block mask ``(B, H / block, W / block)``, True = masked, drawn on the inputs' device."""
        batch_size, _, height, width = inputs.shape
        return self.mask_generator(batch_size, height, width, device=inputs.device)

    def pixel_mask(self, block_mask):
        """The block mask at pixel resolution ``(B, H, W)``, True = masked."""
        return expand_block_mask(block_mask, self.mask_generator.block_size)

    def cell_mask(self, block_mask):
        """The block mask on the target's cell grid ``(B, H / cell, W / cell)``, True = masked:
        the cells the loss compares."""
        return expand_block_mask(block_mask, self.cells_per_block)

    def mask_image(self, inputs, pixel_mask):
        """Replaces the masked pixels by the mask token (exactly, via ``where``)."""
        return torch.where(pixel_mask.unsqueeze(1), self.mask_token.to(inputs.dtype), inputs)

    def encode(self, images):
        """The backbone's last feature map ``(B, C, h, w)``."""
        return self.backbone(images)[-1]

    def decode(self, features):
        """One prediction vector per token: ``(B, h * w, k * k * channels)``."""
        return self.neck(features)

    def fold_tokens(self, tokens, grid_size):
        """``(B, h * w, k * k * channels)`` laid out ``(ky, kx, channel)`` -> ``(B, channels,
        h * k, w * k)``, the target's cell grid."""
        grid_h, grid_w = grid_size
        k = self.cells_per_token
        batch_size, num_tokens, values = tokens.shape
        if num_tokens != grid_h * grid_w or values % (k * k):
            raise ValueError(f'cannot fold tokens of shape {tuple(tokens.shape)} onto a '
                             f'{grid_h}x{grid_w} grid with {k}x{k} cells per token')
        channels = values // (k * k)
        cells = tokens.reshape(batch_size, grid_h, grid_w, k, k, channels)
        return cells.permute(0, 5, 1, 3, 2, 4).reshape(batch_size, channels, grid_h * k,
                                                       grid_w * k)

    def predict_cells(self, masked_image):
        """Encoder + decoder on a masked image -> prediction map on the target's cell grid."""
        features = self.encode(masked_image)
        return self.fold_tokens(self.decode(features), features.shape[-2:])

    # --- what the runner and the visualiser call ---------------------------------------------
    def reconstruct(self, inputs):
        """Masks, predicts and computes the target for one batch of normalised images.

        Returns a dict of batched tensors: ``mask_pixels`` (B, 1, H, W) float, 1 = masked;
        ``masked_image`` (B, 3, H, W) what the encoder saw; ``target`` and ``prediction``
        (B, channels, H / cell, W / cell); ``mask`` (B, H / cell, W / cell) bool at cell level.
        The target is computed from the clean ``inputs``, never from the masked image.
        """
        block_mask = self.generate_mask(inputs)
        pixel_mask = self.pixel_mask(block_mask)
        masked_image = self.mask_image(inputs, pixel_mask)
        return dict(
            mask_pixels=pixel_mask.unsqueeze(1).to(inputs.dtype),
            masked_image=masked_image,
            target=self.target_generator(inputs),
            prediction=self.predict_cells(masked_image),
            mask=self.cell_mask(block_mask))

    def loss(self, inputs, data_samples=None):
        """Masked reconstruction loss of one batch: ``dict(loss=...)``. Labels are unused."""
        outputs = self.reconstruct(inputs)
        return dict(loss=self.criterion(outputs['prediction'], outputs['target'], outputs['mask']))

    def forward(self, inputs, data_samples=None, mode='tensor'):
        """mmengine's three modes.

        - ``'loss'``: ``dict(loss=...)`` for ``train_step``.
        - ``'tensor'``: the prediction map ``(B, channels, H / cell, W / cell)`` of a freshly
          masked batch.
        - ``'predict'``: a list with one dict per image, holding that image's slices of
          :meth:`reconstruct` (what ``val_step`` hands to evaluators and visualisers).
        """
        if inputs.dim() != 4 or inputs.shape[1] != 3:
            raise ValueError(f'FastMIM expects RGB images (B, 3, H, W), got shape '
                             f'{tuple(inputs.shape)}')
        self.check_input_size(*inputs.shape[-2:])
        self._last_input_size = list(inputs.shape[-2:])
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'tensor':
            pixel_mask = self.pixel_mask(self.generate_mask(inputs))
            return self.predict_cells(self.mask_image(inputs, pixel_mask))
        if mode == 'predict':
            outputs = self.reconstruct(inputs)
            return [dict(zip(outputs, sample)) for sample in zip(*outputs.values())]
        raise ValueError(f"mode must be 'loss', 'tensor' or 'predict', got {mode!r}")

    def no_weight_decay_names(self):
        """The parameters of this algorithm's own that weight decay leaves alone: the mask
        token, one colour for every masked pixel, which decay would pull towards the mean
        colour for no reason (docs/pretrain.md, section 3). The backbone declares its own
        (``no_weight_decay_names()`` of the backbone contract); the decoder's norms and biases
        are exempt as 1-D parameters."""
        return {'mask_token'}

    def geometry(self):
        """Plain-type description of the pre-training setup, stored in checkpoint meta."""
        backbone_geometry = self.backbone.geometry()
        return dict(
            backbone=backbone_geometry,
            input_size=recorded_input_size(self._last_input_size, backbone_geometry),
            block_size=self.mask_generator.block_size,
            mask_ratio=self.mask_generator.mask_ratio,
            target=type(self.target_generator).__name__,
            cell_size=self.target_generator.cell_size)
