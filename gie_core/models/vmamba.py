"""The VMamba hint encoder: visual-prompt image → ControlNet conditioning features.

It replaces ControlNet's small conv tower (diffusers ``ControlNetModel.controlnet_cond_embedding``,
ComfyUI ``cldm.ControlNet.input_hint_block``) with a VMamba module whose four-direction selective
scan lets every latent cell see the whole visual prompt (example pair and query) at once.

Default shape (:class:`HintEncoderConfig`): a stride-4 patch-embedding stem to 48 channels, a
stride-2 downsample to latent resolution and 96 channels, two VSS blocks (SS2D ``v05_noz``,
``ssm_ratio 1`` so ``d_inner = 96``, ``d_state 1``) and a zero-initialised 3×3 conv to 320 channels.
At a 512×512 grid the SS2D work therefore runs on 64×64 = 4096 tokens with ``d_inner = 96`` per
direction — the shape ``benchmarks/scan.py`` optimises (batch·4 directions, d=96, L=4096); VSS blocks
at stride 4 would scan 4× as many tokens for little gain, since the scan already spans the grid.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from gie_core.control_input import GRID_COLUMNS, TARGET_FILLS, fill_target

from .hint_cache import HintCacheControls, HintFeatureCache, parameter_fingerprint
from .ss2d import SS2D_VARIANTS, VARIANT_DEFAULTS, VSSBlock

#: The VAE factor of Stable Diffusion: the encoder maps an H×W image to H/8×W/8 features.
LATENT_FACTOR = 8
#: How the encoder reads the visual prompt (see :class:`HintEncoderConfig`).
LAYOUTS = ("grid", "cells")
#: The token mixer of the encoder's blocks.
BLOCKS = ("vss", "conv")


class HintEncoderConfigError(ValueError):
    """A hint-encoder config value or key is invalid."""


@dataclass
class HintEncoderConfig:
    """Configuration of :class:`VMambaHintEncoder`; JSON-serialisable via :meth:`to_dict`/:meth:`from_dict`.

    Attributes:
        in_channels: image channels of the visual prompt (3, RGB in 0..1).
        use_target_channel: expect one more input channel marking the target cell (1 inside it).
        out_channels: the ControlNet's first block width (320 for SD1.5).
        patch_size: stride of the patch-embedding stem (a power of 2).
        dims: channel width of each stage; stage i > 0 starts with a stride-2 downsample.
            ``patch_size · 2^(len(dims)-1)`` must equal ``latent_factor``.
        depths: VSS blocks per stage (0 allowed).
        ssm_variant: ``"v05_noz"`` (VMamba v2, default) or ``"v0"`` (original SS2D with z gate).
        d_state, ssm_ratio: SSM state size and inner-width ratio; ``None`` takes the variant's default
            (1 and 1.0 for v05_noz, 16 and 2.0 for v0) and is resolved on construction.
        dt_rank: rank of the Δ projection; ``None`` means ``ceil(width / 16)`` per stage.
        d_conv: depthwise conv kernel size in SS2D.
        mlp_ratio: hidden width of each block's MLP relative to its width (0 disables the MLP).
        scan_backend: :func:`gie_core.ops.selective_scan` backend (``"auto"``).
        target_fill: ``"blank"`` (the paper) or ``"query"``: the encoder first copies the query cell
            into the (blanked) target cell of its input (``gie_core.control_input.fill_target``),
            so callers keep passing the ordinary hint.
        latent_factor: the VAE's downscale factor (8 for SD; the tiny from-scratch stacks may use 4):
            the hint is mapped to the latent resolution ``H/latent_factor × W/latent_factor``.
        layout: how the encoder reads the visual prompt. ``"grid"`` (the paper): the whole grid as one
            image, so the example reaches the target cell only through the blocks' receptive field.
            ``"cells"``: the grid is cut into its cells and each example pair is stacked with the
            query as channels, ``[before, after, query]`` at cell resolution; the blocks run on that
            stack (once per example pair, averaged) and the features land on the target cell only
            (zeros elsewhere). The example is then next to the target by construction.
        block: ``"vss"`` (VMamba's VSS blocks, global 2-D selective scan) or ``"conv"`` (the same
            block with the scan replaced by a local depthwise convolution of ``conv_kernel``): the
            ablation that tells the scan's long range apart from the rest of the encoder.
        conv_kernel: kernel size of the ``"conv"`` blocks' depthwise convolution (odd).
    """

    in_channels: int = 3
    use_target_channel: bool = False
    out_channels: int = 320
    patch_size: int = 4
    dims: tuple[int, ...] = (48, 96)
    depths: tuple[int, ...] = (0, 2)
    ssm_variant: str = "v05_noz"
    d_state: int | None = None
    ssm_ratio: float | None = None
    dt_rank: int | None = None
    d_conv: int = 3
    mlp_ratio: float = 4.0
    scan_backend: str = "auto"
    latent_factor: int = LATENT_FACTOR
    target_fill: str = "blank"
    layout: str = "grid"
    block: str = "vss"
    conv_kernel: int = 7

    def __post_init__(self):
        self.dims = tuple(int(d) for d in self.dims)
        self.depths = tuple(int(d) for d in self.depths)
        if self.ssm_variant not in SS2D_VARIANTS:
            raise HintEncoderConfigError(
                f"HintEncoderConfig.ssm_variant must be one of {SS2D_VARIANTS}, got {self.ssm_variant!r}")
        defaults = VARIANT_DEFAULTS[self.ssm_variant]
        if self.d_state is None:
            self.d_state = defaults["d_state"]
        if self.ssm_ratio is None:
            self.ssm_ratio = defaults["ssm_ratio"]
        for name in ("in_channels", "out_channels", "patch_size", "d_state", "d_conv"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise HintEncoderConfigError(f"HintEncoderConfig.{name} must be a positive integer, got {value!r}")
        if not self.dims or len(self.dims) != len(self.depths):
            raise HintEncoderConfigError(
                f"HintEncoderConfig.dims and depths must be non-empty and of equal length, got dims={self.dims}, "
                f"depths={self.depths}")
        if min(self.dims) < 1 or min(self.depths) < 0:
            raise HintEncoderConfigError(f"HintEncoderConfig: dims must be >= 1 and depths >= 0, got dims="
                                         f"{self.dims}, depths={self.depths}")
        if self.patch_size & (self.patch_size - 1):
            raise HintEncoderConfigError(f"HintEncoderConfig.patch_size must be a power of 2, got {self.patch_size}")
        if isinstance(self.latent_factor, bool) or not isinstance(self.latent_factor, int) \
                or self.latent_factor < 1 or self.latent_factor & (self.latent_factor - 1):
            raise HintEncoderConfigError(f"HintEncoderConfig.latent_factor must be a power of 2, got "
                                         f"{self.latent_factor!r}")
        if self.target_fill not in TARGET_FILLS:
            raise HintEncoderConfigError(f"HintEncoderConfig.target_fill must be one of {TARGET_FILLS}, got "
                                         f"{self.target_fill!r}")
        if self.layout not in LAYOUTS:
            raise HintEncoderConfigError(f"HintEncoderConfig.layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.block not in BLOCKS:
            raise HintEncoderConfigError(f"HintEncoderConfig.block must be one of {BLOCKS}, got {self.block!r}")
        if isinstance(self.conv_kernel, bool) or not isinstance(self.conv_kernel, int) or self.conv_kernel < 1 \
                or self.conv_kernel % 2 == 0:
            raise HintEncoderConfigError(f"HintEncoderConfig.conv_kernel must be a positive odd integer, got "
                                         f"{self.conv_kernel!r}")
        if self.layout == "cells" and (self.use_target_channel or self.target_fill != "blank"):
            raise HintEncoderConfigError("HintEncoderConfig: the 'cells' layout gives the encoder the query and the "
                                         "target position itself; use it with use_target_channel=false and "
                                         "target_fill='blank'")
        if self.patch_size * 2 ** (len(self.dims) - 1) != self.latent_factor:
            raise HintEncoderConfigError(
                f"HintEncoderConfig: patch_size · 2^(len(dims)-1) must equal the latent factor {self.latent_factor}, got "
                f"patch_size={self.patch_size} with {len(self.dims)} stage(s)")
        if self.d_conv % 2 == 0:
            raise HintEncoderConfigError(f"HintEncoderConfig.d_conv must be odd, got {self.d_conv}")
        if not self.ssm_ratio > 0 or self.mlp_ratio < 0:
            raise HintEncoderConfigError(f"HintEncoderConfig: ssm_ratio must be > 0 and mlp_ratio >= 0, got "
                                         f"ssm_ratio={self.ssm_ratio}, mlp_ratio={self.mlp_ratio}")
        if not isinstance(self.use_target_channel, bool):
            raise HintEncoderConfigError(f"HintEncoderConfig.use_target_channel must be true or false, got "
                                         f"{self.use_target_channel!r}")
        from gie_core.ops import BACKENDS

        if self.scan_backend not in ("auto",) + tuple(BACKENDS):
            raise HintEncoderConfigError(f"HintEncoderConfig.scan_backend must be one of "
                                         f"{('auto',) + tuple(BACKENDS)}, got {self.scan_backend!r}")
        if self.dt_rank is not None and (not isinstance(self.dt_rank, int) or self.dt_rank < 1):
            raise HintEncoderConfigError(f"HintEncoderConfig.dt_rank must be None or a positive integer, "
                                         f"got {self.dt_rank!r}")

    @property
    def total_in_channels(self) -> int:
        """Channels the encoder expects: image channels plus the optional target-cell channel."""
        return self.in_channels + (1 if self.use_target_channel else 0)

    @property
    def stem_in_channels(self) -> int:
        """Channels entering the stem: the hint's, or ``[before, after, query]`` stacked (``cells``)."""
        return 3 * self.in_channels if self.layout == "cells" else self.total_in_channels

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict (tuples as lists)."""
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, data: dict) -> HintEncoderConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`HintEncoderConfigError`."""
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            raise HintEncoderConfigError(f"HintEncoderConfig.from_dict expects a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise HintEncoderConfigError(
                f"HintEncoderConfig: unknown key(s) {unknown}; valid keys are {sorted(known)}")
        return cls(**data)

    @classmethod
    def coerce(cls, value: HintEncoderConfig | dict | None, **defaults) -> HintEncoderConfig:
        """A config from a config, a dict or ``None`` (then ``defaults`` over the class defaults)."""
        if value is None:
            return cls(**defaults)
        if isinstance(value, cls):
            return value
        return cls.from_dict(dict(value))


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a channels-first ``(B, C, H, W)`` map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def make_stem(in_channels: int, dim: int, patch_size: int) -> nn.Sequential:
    """VMamba's patch embedding (v2): stride-2 3×3 convs with LayerNorm+GELU between, stride ``patch_size``."""
    n = int(math.log2(patch_size))
    layers: list[nn.Module] = []
    if n == 0:
        return nn.Sequential(nn.Conv2d(in_channels, dim, kernel_size=1), LayerNorm2d(dim))
    widths = [max(dim // 2 ** (n - 1 - i), 8) for i in range(n)]
    widths[-1] = dim
    c = in_channels
    for i, w in enumerate(widths):
        layers.append(nn.Conv2d(c, w, kernel_size=3, stride=2, padding=1))
        layers.append(LayerNorm2d(w))
        if i < n - 1:
            layers.append(nn.GELU())
        c = w
    return nn.Sequential(*layers)


class Downsample(nn.Module):
    """VMamba's downsample (v3): 3×3 stride-2 conv then LayerNorm; channels-last in and out."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.conv = nn.Conv2d(dim_in, dim_out, kernel_size=3, stride=2, padding=1)
        self.norm = nn.LayerNorm(dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.norm(x)


class LocalMixer(nn.Module):
    """SS2D's shape with a local token mixer: in_proj → depthwise k×k conv → SiLU → out_proj
    (channels-last). The ``"conv"`` ablation of the VSS block."""

    def __init__(self, dim: int, d_inner: int, kernel: int):
        super().__init__()
        self.in_proj = nn.Linear(dim, d_inner)
        self.conv = nn.Conv2d(d_inner, d_inner, kernel, padding=kernel // 2, groups=d_inner)
        self.out_proj = nn.Linear(d_inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.in_proj(x).permute(0, 3, 1, 2)
        x = torch.nn.functional.silu(self.conv(x)).permute(0, 2, 3, 1)
        return self.out_proj(x)


class VMambaStage(nn.Module):
    """Optional downsample, then ``depth`` VSS (or conv-ablation) blocks (channels-last)."""

    def __init__(self, dim_in: int, dim: int, depth: int, downsample: bool, cfg: HintEncoderConfig):
        super().__init__()
        self.downsample = Downsample(dim_in, dim) if downsample else None
        if cfg.block == "conv":
            blocks = [VSSBlock(dim, cfg.mlp_ratio, mixer=LocalMixer(dim, max(1, int(dim * cfg.ssm_ratio)), cfg.conv_kernel))
                      for _ in range(depth)]
        else:
            blocks = [VSSBlock(dim, mlp_ratio=cfg.mlp_ratio, variant=cfg.ssm_variant, d_state=cfg.d_state,
                               ssm_ratio=cfg.ssm_ratio, dt_rank=cfg.dt_rank, d_conv=cfg.d_conv,
                               scan_backend=cfg.scan_backend) for _ in range(depth)]
        self.blocks = nn.ModuleList(blocks)


class VMambaHintEncoder(HintCacheControls, nn.Module):
    """Visual prompt ``[B, 3(+1), H, W]`` in 0..1 → ``[B, out_channels, H/8, W/8]`` ControlNet features.

    The last conv is zero-initialised, so a fresh encoder outputs zeros and a fresh ControlNet is a
    no-op, exactly like ControlNet's own hint block. Under ``torch.no_grad`` the features of each
    distinct hint are cached (:class:`~gie_core.models.hint_cache.HintFeatureCache`); set
    ``caching = False`` to disable, ``clear_hint_cache()`` to free. With grad enabled nothing is cached.
    Supports diffusers' gradient checkpointing (``gradient_checkpointing`` attribute).
    """

    def __init__(self, config: HintEncoderConfig | dict | None = None):
        super().__init__()
        cfg = HintEncoderConfig.coerce(config)
        self.config = cfg
        self.stem = make_stem(cfg.stem_in_channels, cfg.dims[0], cfg.patch_size)
        self.stages = nn.ModuleList()
        prev = cfg.dims[0]
        for i, (dim, depth) in enumerate(zip(cfg.dims, cfg.depths)):
            self.stages.append(VMambaStage(prev, dim, depth, downsample=i > 0, cfg=cfg))
            prev = dim
        self.norm_out = nn.LayerNorm(prev)
        self.conv_out = nn.Conv2d(prev, cfg.out_channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.gradient_checkpointing = False
        self.hint_cache = HintFeatureCache()

    # -- forward -----------------------------------------------------------------------------------
    def check_hint(self, hint: torch.Tensor) -> None:
        """Raise a ValueError naming what is wrong with ``hint`` (rank, channels, size, dtype, finiteness)."""
        cfg = self.config
        if not isinstance(hint, torch.Tensor):
            raise ValueError(f"VMambaHintEncoder: hint must be a torch.Tensor, got {type(hint).__name__}")
        want_c = cfg.total_in_channels
        if hint.dim() != 4:
            raise ValueError(f"VMambaHintEncoder: hint must have shape [batch, {want_c}, height, width], "
                             f"got {tuple(hint.shape)}")
        if hint.shape[1] != want_c:
            what = ("RGB plus a target-cell channel" if cfg.use_target_channel else f"{cfg.in_channels} image channels")
            raise ValueError(f"VMambaHintEncoder: hint must have {want_c} channels ({what}), got "
                             f"{hint.shape[1]} in shape {tuple(hint.shape)}")
        if hint.shape[0] == 0:
            raise ValueError(f"VMambaHintEncoder: hint batch is empty, shape {tuple(hint.shape)}")
        h, w = hint.shape[-2:]
        f = cfg.latent_factor
        if h % f or w % f or h == 0 or w == 0:
            raise ValueError(f"VMambaHintEncoder: hint height and width must be positive multiples of "
                             f"{f}, got {h}×{w}")
        if cfg.layout == "cells":
            tile = w // GRID_COLUMNS
            if w % GRID_COLUMNS or tile % f or h % tile or h // tile < 2:
                raise ValueError(f"VMambaHintEncoder: the 'cells' layout needs a visual-prompt grid of square cells "
                                 f"in {GRID_COLUMNS} columns and at least 2 rows, each cell a multiple of {f} px; "
                                 f"got {h}×{w}")
        if not hint.is_floating_point():
            raise ValueError(f"VMambaHintEncoder: hint must be a floating-point tensor in 0..1, got {hint.dtype}")

    def encode(self, hint: torch.Tensor) -> torch.Tensor:
        """The uncached forward pass."""
        self.check_hint(hint)
        if not torch.isfinite(hint).all():
            raise ValueError("VMambaHintEncoder: hint contains NaN or inf values")
        hint = fill_target(hint, self.config.target_fill)
        hint = hint.to(self.conv_out.weight.dtype)
        if self.config.layout == "cells":
            return self._encode_cells(hint)
        return self._trunk(hint)

    def _encode_cells(self, hint: torch.Tensor) -> torch.Tensor:
        """``cells`` layout: ``[before_i, after_i, query]`` per example pair through the trunk,
        averaged over the pairs, placed on the target cell of an otherwise zero map."""
        b, c, h, w = hint.shape
        tile = w // GRID_COLUMNS
        rows = h // tile
        cells = hint.reshape(b, c, rows, tile, GRID_COLUMNS, tile).permute(0, 2, 4, 1, 3, 5)  # b,R,2,c,T,T
        pairs = cells[:, :-1]  # the example rows
        query = cells[:, -1:, 0:1].expand(b, rows - 1, 1, c, tile, tile)
        stack = torch.cat([pairs, query], dim=2).reshape(b * (rows - 1), 3 * c, tile, tile)
        feats = self._trunk(stack)
        feats = feats.reshape(b, rows - 1, *feats.shape[1:]).mean(1)
        f = self.config.latent_factor
        out = feats.new_zeros(b, feats.shape[1], h // f, w // f)
        out[:, :, (rows - 1) * tile // f:, tile // f:] = feats
        return out

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Stem, stages, out-norm and the zero-initialised out conv."""
        x = self.stem(x).permute(0, 2, 3, 1)  # channels-last
        checkpoint = self.gradient_checkpointing and torch.is_grad_enabled()
        for stage in self.stages:
            if stage.downsample is not None:
                x = stage.downsample(x)
            for block in stage.blocks:
                x = self._gradient_checkpointing_func(block, x) if checkpoint else block(x)
        x = self.norm_out(x).permute(0, 3, 1, 2)
        return self.conv_out(x)

    def forward(self, hint: torch.Tensor) -> torch.Tensor:
        if not self.hint_cache.active():
            return self.encode(hint)
        self.check_hint(hint)
        return self.hint_cache(hint, self.encode, parameter_fingerprint(self))

    def _gradient_checkpointing_func(self, module, *args):  # replaced by diffusers' enable_gradient_checkpointing
        return torch.utils.checkpoint.checkpoint(module, *args, use_reentrant=False)
