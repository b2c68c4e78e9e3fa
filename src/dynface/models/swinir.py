"""SwinIR image restorer in DifFace's 512-px layout (the RM of the paper's setting, method.md §8 B2).

Written from the architecture's description (Liang et al., "SwinIR", 2021; DifFace's restorer
variant), so that the state dict of :class:`SwinIR` with :data:`DIFFACE_512` matches DifFace's published
``swinir_restoration512_L1.pth`` key for key and shape for shape (732 entries, 15.79 M parameters).

Layout (DifFace's ``unshuffle`` variant): pixel-unshuffle by 8 (512×512×3 → 64×64×192) → 3×3 conv to
``embed_dim`` → layer norm over tokens → 8 residual Swin groups (RSTB: 6 Swin blocks with windowed
multi-head self-attention, alternately shifted by half a window, then a 3×3 conv, plus a skip) →
layer norm → 3×3 conv + long skip → "nearest+conv" upsampler (×2 nearest + conv + LeakyReLU, three
times for ×8) → conv_hr → conv_last. Input and output are RGB in [0, 1] (``io="unit"``); with
``io="signed"`` the module takes and returns [−1, 1], clamped, as DBLM's RM does.

What a state dict cannot show was checked by reading DifFace's ``models/swinir.py`` and ``sampler.py``
(commit cdbc630): for 3 input channels the model subtracts the DIV2K mean (0.4488, 0.4371, 0.4040) times
``img_range`` (1.0) before ``conv_first`` and adds it back at the end (not a buffer, so no file carries
it); the sampler feeds it y in [0, 1], clamps its output to [0, 1] and only then maps it to [−1, 1], which is
what ``io="signed"`` does.

Loading: :func:`load_swinir` reads ``.pth`` files with ``torch.load(weights_only=True)`` only,
unwraps ``params_ema``/``params``/``state_dict``, strips a ``module.`` prefix and accepts files with or
without the buffers (``relative_position_index``, ``attn_mask``), which are recomputed here. Every
failure is one :class:`~dynface.models.io.ModelLoadError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .io import ModelLoadError, check_compatible, load_state_dict_file

BUFFER_SUFFIXES = ("relative_position_index", "attn_mask")
WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model")


@dataclass(frozen=True)
class SwinIRConfig:
    img_size: int = 64  # feature resolution the attention masks are precomputed for (after unshuffle)
    in_chans: int = 3
    embed_dim: int = 180
    depths: tuple[int, ...] = (6,) * 8
    num_heads: tuple[int, ...] = (6,) * 8
    window_size: int = 8
    mlp_ratio: float = 2.0
    upscale: int = 8  # the "nearest+conv" upsampler's factor (a power of 2)
    unshuffle_scale: int = 8  # pixel-unshuffle factor at the input (1 = none)
    num_feat: int = 64
    img_range: float = 1.0
    rgb_mean: tuple[float, float, float] = (0.4488, 0.4371, 0.4040)  # SwinIR's DIV2K mean (3-channel input)


DIFFACE_512 = SwinIRConfig()
# Same layout, 2 groups of 2 blocks, narrow: for fast tests of the wiring (not a published file)
TINY = SwinIRConfig(img_size=8, embed_dim=12, depths=(2, 2), num_heads=(2, 2), window_size=4, num_feat=8,
                    upscale=4, unshuffle_scale=4)


# ---- window helpers (pure functions) ---------------------------------------------------------------
def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) → (B·nW, ws·ws, C), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def window_reverse(win: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B·nW, ws·ws, C) → (B, H, W, C)."""
    c = win.shape[-1]
    b = win.shape[0] // ((h // ws) * (w // ws))
    x = win.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def relative_position_index(ws: int) -> torch.Tensor:
    """(ws², ws²) index into the (2ws−1)² bias table for every pair of positions in a window."""
    ys, xs = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])  # (2, N)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)  # (N, N, 2), each in [0, 2ws−2]
    return rel[..., 0] * (2 * ws - 1) + rel[..., 1]


def shifted_window_mask(h: int, w: int, ws: int, shift: int) -> torch.Tensor:
    """(nW, ws², ws²) additive mask (0 or −100) that keeps a cyclically shifted window's attention
    inside the regions that were contiguous before the shift."""
    region = torch.zeros(1, h, w, 1)
    cuts = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    label = 0
    for hs in cuts:
        for wsl in cuts:
            region[:, hs, wsl, :] = label
            label += 1
    win = window_partition(region, ws).squeeze(-1)  # (nW, N)
    diff = win[:, None, :] - win[:, :, None]
    return torch.where(diff != 0, torch.tensor(-100.0), torch.tensor(0.0))


# ---- modules -----------------------------------------------------------------------------------------
class WindowAttention(nn.Module):
    def __init__(self, dim: int, ws: int, heads: int):
        super().__init__()
        self.ws, self.heads = ws, heads
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_position_index(ws))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bw, n, c = x.shape
        q, k, v = self.qkv(x).view(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, self.heads).permute(2, 0, 1)  # (heads, N, N)
        if mask is not None:  # (nW, N, N): windows repeat with period nW along the batch axis
            nw = mask.shape[0]
            bias = (bias[None] + mask[:, None].to(bias.dtype)).repeat(bw // nw, 1, 1, 1)  # (B·nW, heads, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    def __init__(self, dim: int, resolution: int, heads: int, ws: int, shift: int, mlp_ratio: float):
        super().__init__()
        if resolution <= ws:  # one window covers the whole map: no shift, window = map
            ws, shift = resolution, 0
        self.ws, self.shift, self.resolution = ws, shift, resolution
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, ws, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        if shift > 0:
            self.register_buffer("attn_mask", shifted_window_mask(resolution, resolution, ws, shift))
        else:
            self.attn_mask = None

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        h, w = hw
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), dims=(1, 2))
            mask = self.attn_mask if hw == (self.resolution, self.resolution) else \
                shifted_window_mask(h, w, self.ws, self.shift).to(x.device)
        else:
            mask = None
        y = window_reverse(self.attn(window_partition(y, self.ws), mask), self.ws, h, w)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), dims=(1, 2))
        x = x + y.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class _Group(nn.Module):
    def __init__(self, blocks: list[SwinBlock]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)


class RSTB(nn.Module):
    """Residual Swin Transformer block: Swin blocks → 3×3 conv on the feature map → + input."""

    def __init__(self, dim: int, resolution: int, depth: int, heads: int, ws: int, mlp_ratio: float):
        super().__init__()
        self.residual_group = _Group([
            SwinBlock(dim, resolution, heads, ws, 0 if i % 2 == 0 else ws // 2, mlp_ratio) for i in range(depth)
        ])
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        y = x
        for blk in self.residual_group.blocks:
            y = blk(y, hw)
        b, _, c = y.shape
        y = self.conv(y.transpose(1, 2).reshape(b, c, *hw))
        return x + y.flatten(2).transpose(1, 2)


class _PatchEmbed(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)


class SwinIR(nn.Module):
    """SwinIR (``nearest+conv`` upsampler, ``1conv`` residual connection, optional pixel-unshuffle input)."""

    def __init__(self, cfg: SwinIRConfig = DIFFACE_512, io: str = "unit"):
        super().__init__()
        if io not in ("unit", "signed"):
            raise ValueError(f"io must be 'unit' ([0,1]) or 'signed' ([-1,1]), got {io!r}")
        if cfg.upscale & (cfg.upscale - 1) or cfg.upscale < 2:
            raise ValueError(f"upscale must be a power of 2 (≥ 2), got {cfg.upscale}")
        self.cfg, self.io = cfg, io
        dim, s = cfg.embed_dim, cfg.unshuffle_scale
        self.conv_first = nn.Sequential(nn.PixelUnshuffle(s), nn.Conv2d(cfg.in_chans * s * s, dim, 3, padding=1))
        self.patch_embed = _PatchEmbed(dim)
        self.layers = nn.ModuleList([
            RSTB(dim, cfg.img_size, d, h, cfg.window_size, cfg.mlp_ratio) for d, h in zip(cfg.depths, cfg.num_heads, strict=True)
        ])
        self.norm = nn.LayerNorm(dim)
        self.conv_after_body = nn.Conv2d(dim, dim, 3, padding=1)
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(dim, cfg.num_feat, 3, padding=1), nn.LeakyReLU(inplace=True))
        self.n_up = cfg.upscale.bit_length() - 1
        for i in range(1, self.n_up + 1):
            self.add_module(f"conv_up{i}", nn.Conv2d(cfg.num_feat, cfg.num_feat, 3, padding=1))
        self.conv_hr = nn.Conv2d(cfg.num_feat, cfg.num_feat, 3, padding=1)
        self.conv_last = nn.Conv2d(cfg.num_feat, cfg.in_chans, 3, padding=1)
        self.register_buffer("mean", torch.tensor(cfg.rgb_mean).view(1, 3, 1, 1), persistent=False)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @property
    def multiple(self) -> int:
        """Input sides are padded (reflect) to a multiple of this."""
        return self.cfg.window_size * self.cfg.unshuffle_scale

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.patch_embed.norm(x.flatten(2).transpose(1, 2))
        for layer in self.layers:
            t = layer(t, (h, w))
        return self.norm(t).transpose(1, 2).reshape(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.io == "signed":
            x = (x + 1) / 2
        h, w = x.shape[-2:]
        m = self.multiple
        x = F.pad(x, (0, -w % m, 0, -h % m), mode="reflect") if (h % m or w % m) else x
        mean = self.mean.to(x.dtype) if self.cfg.in_chans == 3 else 0.0
        x = (x - mean) * self.cfg.img_range
        f = self.conv_first(x)
        f = self.conv_after_body(self.forward_features(f)) + f
        f = self.conv_before_upsample(f)
        for i in range(1, self.n_up + 1):
            f = F.leaky_relu(getattr(self, f"conv_up{i}")(F.interpolate(f, scale_factor=2, mode="nearest")), 0.2)
        out = self.conv_last(F.leaky_relu(self.conv_hr(f), 0.2)) / self.cfg.img_range + mean
        scale = self.cfg.upscale / self.cfg.unshuffle_scale
        out = out[..., : round(h * scale), : round(w * scale)]
        return out.clamp(0, 1) * 2 - 1 if self.io == "signed" else out


def state_dict_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Key → shape of a module's state dict (the manifest the published files are checked against)."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def load_swinir(path: str | Path, cfg: SwinIRConfig = DIFFACE_512, io: str = "unit") -> SwinIR:
    """A :class:`SwinIR` in eval mode with the weights of ``path`` (.pth or .safetensors).

    The file's buffers, when present, must have the model's shapes and are otherwise ignored (they are
    functions of the configuration); missing buffers are fine. Anything else missing, extra or of another
    shape raises :class:`ModelLoadError`.
    """
    path = Path(path)
    sd = load_state_dict_file(path, wrappers=WRAPPER_KEYS, levels=2)[0]  # e.g. {"state_dict": {"params_ema": …}}
    if not sd:
        raise ModelLoadError(f"{path}: does not contain a state dict of tensors")
    model = SwinIR(cfg, io=io)
    own = model.state_dict()
    for k in [k for k in own if k.endswith(BUFFER_SUFFIXES)]:
        if k in sd and tuple(sd[k].shape) != tuple(own[k].shape):
            raise ModelLoadError(f"{path}: SwinIR weights do not match the network architecture ({k}: file "
                                 f"{tuple(sd[k].shape)} vs model {tuple(own[k].shape)}) (expected DifFace's "
                                 "swinir_restoration512_L1.pth layout)")
        sd[k] = own[k]
    try:
        check_compatible(model, sd, name=f"{path}: SwinIR weights")
    except ModelLoadError as e:
        raise ModelLoadError(f"{e} (expected DifFace's swinir_restoration512_L1.pth layout)") from None
    model.load_state_dict(sd)
    return model.eval()
