"""The light-weight FastMIM decoder: every token of the encoder's last map -> its target values."""
from functools import partial

from mmengine.model import BaseModule
from timm.models.vision_transformer import Block
from torch import nn
from torch.nn.init import trunc_normal_

from fastmim.registry import MODELS

# Channels per attention head when the config names no head count (the reference release's
# decoders: width / 32).
HEAD_CHANNELS = 32


@MODELS.register_module()
class MIMDecoder(BaseModule):
    """Linear(C -> embed_dim), ``depth`` Transformer blocks, LayerNorm, Linear(-> out_channels).

    All ``h * w`` tokens are decoded (the encoder saw every token, masked ones included) and no
    position embedding is added: the encoder features already carry position. ``depth=0`` leaves
    a LayerNorm between two linear layers (the depth ablation). ``in_norm_eps`` puts a LayerNorm
    over the C input channels first.

    Initialisation: linear weights trunc-normal std 0.02 with zero biases, LayerNorm ones/zeros,
    done at construction (the ``_init_weights`` of timm's ViT). Inside :class:`FastMIM` this is
    what ``linear_init='own'`` keeps; its default, ``'xavier'``, then redraws every linear layer
    of backbone and decoder Xavier-uniform with zero biases, as MAE and the FastMIM reference
    release initialise their pre-training models.

    Args:
        in_channels (int): Channels of the encoder's last feature map.
        out_channels (int): Values predicted per token (``channels * k * k`` of the target).
        embed_dim (int): Decoder width.
        depth (int): Number of Transformer blocks (0 allowed).
        num_heads (int, optional): Attention heads per block. None (default): one per 32
            channels, ``embed_dim // 32``, the reference release's rule (8 for the published
            256-wide decoder), so that a width ablation keeps the heads' size.
        mlp_ratio (float): MLP hidden width / ``embed_dim``.
        eps (float): eps of every LayerNorm (the blocks' and the final one). The reference
            release gives its ViT decoder the encoder's 1e-6 (set in the FastMIM ViT and EVA-02
            configs) and its Swin, PVTv2 and CMT decoders PyTorch's 1e-5, the default.
        in_norm_eps (float, optional): with a value, a LayerNorm of that eps over the encoder's
            channels normalises every token before the input projection (``in_norm``); None
            (default): none. The reference release's CMT encoder ends with such a norm (eps
            1e-6) that its decoder reads, while fastmim's CMT backbone has none (neither has the
            release's fine-tuned CMT): the CMT FastMIM config sets 1e-6. ViT, Swin and PVTv2
            backbones end with their own norm.
        init_cfg (dict, optional): mmengine init config; overrides the default init when given.
    """

    def __init__(self, in_channels, out_channels, embed_dim=256, depth=1, num_heads=None,
                 mlp_ratio=4., eps=1e-5, in_norm_eps=None, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if depth < 0:
            raise ValueError(f'depth must be >= 0, got {depth}')
        if num_heads is None:
            num_heads = max(1, embed_dim // HEAD_CHANNELS)
        if embed_dim % num_heads:
            raise ValueError(f'embed_dim {embed_dim} is not divisible by num_heads {num_heads}; '
                             f'set num_heads')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.in_norm = (nn.Identity() if in_norm_eps is None else
                        nn.LayerNorm(in_channels, eps=in_norm_eps))
        self.embed = nn.Linear(in_channels, embed_dim)
        self.blocks = nn.Sequential(*[
            Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True,
                  norm_layer=partial(nn.LayerNorm, eps=eps)) for _ in range(depth)
        ])
        self.norm = nn.LayerNorm(embed_dim, eps=eps)
        self.predict = nn.Linear(embed_dim, out_channels)
        self.apply(self._init_module)

    @staticmethod
    def _init_module(module):
        if isinstance(module, nn.Linear):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, features):
        """``(B, C, h, w)`` -> ``(B, h * w, out_channels)``, tokens in row-major order."""
        if features.dim() != 4 or features.shape[1] != self.in_channels:
            raise ValueError(f'MIMDecoder expects (B, {self.in_channels}, h, w) features, got '
                             f'shape {tuple(features.shape)}')
        tokens = features.flatten(2).transpose(1, 2)
        tokens = self.blocks(self.embed(self.in_norm(tokens)))
        return self.predict(self.norm(tokens))
