"""A minimal MAE pre-training forward on fastmim's ViT, the third method of the speed benchmark.

MAE (He et al., 2022) drops 75% of the patch tokens before the encoder and reconstructs the
pixels of the dropped ones with a separate 8-block, 512-wide decoder that sees every position
(kept tokens plus a shared mask token). Only the parts that set its cost are reproduced here:
the random keep, the encoder on the kept tokens (the fastmim ViT's own patch embedding, position
table, timm blocks and norm), the decoder and a per-patch pixel loss on the dropped tokens.
It exists to time MAE against FastMIM on the same backbone code, not to pre-train with.
"""
import torch
from timm.models.vision_transformer import Block
from torch import nn
from torch.nn.init import trunc_normal_

from fastmim.models.backbones.vit import VisionTransformer, sincos_2d_pos_embed
from fastmim.models.targets import PixelTarget


def check_decoder(decoder_dim, decoder_depth, decoder_heads, mlp_ratio) -> None:
    """Refuse a decoder the layers below cannot build, naming the value: a width of 0 would be a
    ZeroDivisionError in the sin-cos table, heads that do not divide the width timm's bare
    AssertionError."""
    for name, value, minimum in (('decoder_dim', decoder_dim, 1),
                                 ('decoder_depth', decoder_depth, 0),
                                 ('decoder_heads', decoder_heads, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f'MAEStandIn: {name} must be an int >= {minimum}, got {value!r}')
    if decoder_dim % 4:
        raise ValueError(f'MAEStandIn: decoder_dim must be a multiple of 4 (its sin-cos position '
                         f'table), got {decoder_dim}')
    if decoder_dim % decoder_heads:
        raise ValueError(f'MAEStandIn: decoder_dim {decoder_dim} is not divisible by '
                         f'decoder_heads {decoder_heads}')
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or mlp_ratio <= 0:
        raise ValueError(f'MAEStandIn: mlp_ratio must be a number > 0, got {mlp_ratio!r}')


class MAEStandIn(nn.Module):
    """MAE's masking, encoder, decoder and loss around a :class:`VisionTransformer`.

    Args:
        encoder: a fastmim ViT built at the input size MAE trains at (224 px); its position
            table must cover that grid, as MAE's does.
        mask_ratio: fraction of the patch tokens dropped per image (MAE: 0.75).
        decoder_dim, decoder_depth, decoder_heads, mlp_ratio: MAE's decoder (512, 8, 16, 4).
        norm_pix: standardise each target patch, as MAE's ``norm_pix_loss``.
    """

    def __init__(self, encoder: VisionTransformer, mask_ratio: float = 0.75,
                 decoder_dim: int = 512, decoder_depth: int = 8, decoder_heads: int = 16,
                 mlp_ratio: float = 4., norm_pix: bool = True):
        super().__init__()
        if not isinstance(encoder, VisionTransformer):
            raise TypeError(f'MAEStandIn needs a fastmim VisionTransformer (MAE drops tokens, '
                            f'which only an isotropic ViT allows), got {type(encoder).__name__}')
        if encoder.rel_pos_bias:
            raise ValueError('MAEStandIn: the encoder has a relative position bias '
                             '(rel_pos_bias=True), which needs every token of the grid; MAE '
                             'drops tokens and its ViT has no such bias')
        if not 0 < mask_ratio < 1:
            raise ValueError(f'MAEStandIn: mask_ratio must be in (0, 1), got {mask_ratio}')
        check_decoder(decoder_dim, decoder_depth, decoder_heads, mlp_ratio)
        self.encoder = encoder
        self.grid_size = tuple(encoder.patch_embed.grid_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.num_keep = int(self.num_patches * (1 - mask_ratio))

        self.decoder_embed = nn.Linear(encoder.embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        trunc_normal_(self.mask_token, std=0.02)
        # MAE's decoder position table is the fixed sin-cos one, class-token row included.
        self.register_buffer('decoder_pos_embed',
                             sincos_2d_pos_embed(decoder_dim, self.grid_size).float().unsqueeze(0),
                             persistent=False)
        self.decoder_blocks = nn.Sequential(*[
            Block(decoder_dim, decoder_heads, mlp_ratio=mlp_ratio, qkv_bias=True)
            for _ in range(decoder_depth)
        ])
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.target = PixelTarget(encoder.patch_size, norm_pix=norm_pix)
        self.decoder_pred = nn.Linear(decoder_dim, self.target.channels)

    def random_keep(self, batch_size: int, device: torch.device):
        """Per image, a uniformly random set of ``num_keep`` patch indices (MAE's argsort of
        noise). Returns ``keep`` (B, num_keep), ``restore`` (B, N) that undoes the shuffle, and
        ``mask`` (B, N) float, 1 = dropped."""
        shuffle = torch.rand(batch_size, self.num_patches, device=device).argsort(dim=1)
        restore = shuffle.argsort(dim=1)
        mask = torch.ones(batch_size, self.num_patches, device=device)
        mask[:, :self.num_keep] = 0
        return shuffle[:, :self.num_keep], restore, torch.gather(mask, 1, restore)

    def encode(self, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Class token + the kept patch tokens through every encoder block: (B, 1 + keep, C).

        The ViT embeds (:meth:`~VisionTransformer.embed_tokens`) and runs its blocks and final
        norm (:meth:`~VisionTransformer.encode_tokens`) as its own forward does; only the keep
        is MAE's. ``encode_tokens`` also runs the ViT's ``pos_drop`` and ``norm_pre``, which
        MAE's encoder does not have: in the benchmark's ViT they are identities (drop rate 0,
        no pre-norm), so the numbers are MAE's."""
        patches, prefix, grid = self.encoder.embed_tokens(images)
        if grid != self.grid_size:
            raise ValueError(f'MAEStandIn: input {tuple(images.shape[-2:])} gives a {grid} patch '
                             f'grid; the encoder was built for {self.grid_size}')
        kept = torch.gather(patches, 1, keep.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
        return self.encoder.encode_tokens(torch.cat([prefix, kept], dim=1), grid)[-1]

    def decode(self, latent: torch.Tensor, restore: torch.Tensor) -> torch.Tensor:
        """Kept tokens + mask tokens back in image order through the decoder:
        (B, N, values per patch)."""
        tokens = self.decoder_embed(latent)
        batch_size, _, dim = tokens.shape
        mask_tokens = self.mask_token.expand(batch_size, self.num_patches - self.num_keep, -1)
        shuffled = torch.cat([tokens[:, 1:], mask_tokens], dim=1)
        patches = torch.gather(shuffled, 1, restore.unsqueeze(-1).expand(-1, -1, dim))
        tokens = torch.cat([tokens[:, :1], patches], dim=1) + self.decoder_pos_embed
        tokens = self.decoder_norm(self.decoder_blocks(tokens))
        return self.decoder_pred(tokens[:, 1:])

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Encoder and decoder of one freshly masked batch (what the FLOP count traces)."""
        keep, restore, _ = self.random_keep(images.shape[0], images.device)
        return self.decode(self.encode(images, keep), restore)

    def loss(self, images: torch.Tensor) -> torch.Tensor:
        """Mean squared error of the dropped patches' (normalised) pixels."""
        keep, restore, mask = self.random_keep(images.shape[0], images.device)
        prediction = self.decode(self.encode(images, keep), restore)
        # PixelTarget's (dy, dx, rgb) layout per patch is the decoder's output layout.
        target = self.target(images).flatten(2).transpose(1, 2)
        patch_error = (prediction.float() - target).pow(2).mean(dim=-1)
        return (patch_error * mask).sum() / mask.sum()
