"""AF-CLAP audio tower: the HTSAT Swin transformer with AFF-2D feature fusion (spec 1.4, 2.1-2.2).

``HTSAT(cfg)(mel)`` maps log-mel windows (N, 1001, 64) to 64 dense tokens per window
(N, 64, num_features). Module and parameter names follow the official LAION-CLAP HTSAT so that
the released ``clap.nvclap.*`` checkpoint keys load 1:1 with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from af2.config import HTSATConfig
from af2.model.attention import matmul_attention, use_matmul_attention

OFFICIAL_CLAP_PREFIX = "module.audio_branch."
FUSION_CHANNELS = 4  # the "fusion" input stacks 4 mels: a global one and 3 local crops
SPEC_AUGMENT = {"time": (64, 2), "freq": (8, 2)}  # (drop width, stripes), torchlibrosa defaults
SHIFT_MASK_FILL = -100.0


def clap_state_dict_from_official(sd: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Apply the official AF-CLAP filter to the ``state_dict`` of ``clap_ckpt/epoch_16.pt``.

    Keeps keys containing "audio" that start with ``module.audio_branch.`` (prefix stripped).
    Every other key (text tower, ``module.audio_projection.*``, logit scales...) is returned in
    ``ignored_keys`` instead of being dropped silently (the official loader hides them with
    a non-strict load).
    """
    state_dict, ignored = {}, []
    for key, value in sd.items():
        if "audio" in key and key.startswith(OFFICIAL_CLAP_PREFIX):
            state_dict[key[len(OFFICIAL_CLAP_PREFIX):]] = value
        else:
            ignored.append(key)
    return state_dict, sorted(ignored)


def random_longer_flags(windows_per_sample: Sequence[int], generator: torch.Generator | None = None,
                        device: torch.device | str | None = None) -> Tensor:
    """(N,) bool with exactly one random ``longer`` window per sample: the training rule of the
    official code (it runs HTSAT once per sample and flags one window when none is longer)."""
    counts = torch.as_tensor(list(windows_per_sample), dtype=torch.long)
    if counts.numel() == 0 or bool((counts < 1).any()):
        raise ValueError(f"windows_per_sample must be positive counts, got {list(windows_per_sample)}")
    pick = (torch.rand(counts.shape, generator=generator, device=_gen_device(generator)).cpu()
            * counts).long().clamp_max(counts - 1)  # (B,) window index within each sample
    flags = torch.zeros(int(counts.sum()), dtype=torch.bool)
    flags[torch.cumsum(counts, 0) - counts + pick] = True
    return flags.to(device) if device is not None else flags


def _gen_device(generator: torch.Generator | None) -> torch.device | None:
    return generator.device if generator is not None else None


def _rand(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Uniform [0, 1) drawn on the generator's device, then placed next to ``like``."""
    device = _gen_device(generator) or like.device
    return torch.rand(shape, generator=generator, device=device).to(like.device)


def drop_stripes(x: Tensor, dim: int, width: int, stripes: int, generator: torch.Generator | None) -> Tensor:
    """SpecAugment on x (N, C, T, F): per window, zero ``stripes`` bands of random width in
    [0, width) along ``dim`` (2 = time, 3 = frequency), the same for every channel."""
    n, size = x.shape[0], x.shape[dim]
    dist = (_rand((n, stripes), x, generator) * width).long()  # (N, S)
    start = (_rand((n, stripes), x, generator) * (size - dist)).long()  # (N, S)
    pos = torch.arange(size, device=x.device)
    drop = ((pos >= start[..., None]) & (pos < (start + dist)[..., None])).any(1)  # (N, size)
    shape = [n, 1, 1, 1]
    shape[dim] = size
    return x.masked_fill(drop.view(shape), 0.0)


def drop_path(x: Tensor, rate: float, training: bool, generator: torch.Generator | None) -> Tensor:
    """Stochastic depth on a residual branch x (N, ...): drop whole windows, rescale the rest."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = (_rand((x.shape[0],) + (1,) * (x.ndim - 1), x, generator) < keep).to(x.dtype)
    return x * mask / keep


def window_partition(x: Tensor, w: int) -> Tensor:
    """(B, H, W, C) -> (B, nW, w*w, C), windows in row-major order."""
    b, h, wd, c = x.shape
    x = x.view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // w) * (wd // w), w * w, c)


def window_reverse(x: Tensor, w: int, h: int, wd: int) -> Tensor:
    """(B, nW, w*w, C) -> (B, H, W, C), inverse of ``window_partition``."""
    b, c = x.shape[0], x.shape[-1]
    x = x.view(b, h // w, wd // w, w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, wd, c)


def relative_position_index(w: int) -> Tensor:
    """(w*w, w*w) index into the ((2w-1)^2, heads) bias table, built the standard Swin way."""
    coords = torch.stack(torch.meshgrid(torch.arange(w), torch.arange(w), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (w - 1)  # (w², w², 2)
    return rel[..., 0] * (2 * w - 1) + rel[..., 1]


def shifted_window_mask(h: int, wd: int, w: int, shift: int) -> Tensor:
    """(nW, w*w, w*w) additive mask: -100 between tokens that come from different regions of
    the cyclically shifted image, 0 within a region."""
    def region(n: int) -> Tensor:  # 0 | 1 | 2 for the bands [0, n-w), [n-w, n-shift), [n-shift, n)
        idx = torch.arange(n)
        return (idx >= n - w).long() + (idx >= n - shift).long()
    labels = (region(h)[:, None] * 3 + region(wd)[None, :]).float()  # (H, W)
    windows = window_partition(labels[None, :, :, None], w)[0, :, :, 0]  # (nW, w*w)
    diff = windows[:, None, :] - windows[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, SHIFT_MASK_FILL)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside w×w windows with a learned relative-position bias."""

    def __init__(self, dim: int, window: int, heads: int, qkv_bias: bool):
        super().__init__()
        self.heads = heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        # x: (B, nW, L, C) with L = w*w tokens per window; mask: (nW, L, L) or None
        b, nw, seq, c = x.shape
        q, k, v = self.qkv(x).view(b, nw, seq, 3, self.heads, c // self.heads).permute(3, 0, 1, 4, 2, 5)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(seq, seq, self.heads).permute(2, 0, 1)  # (heads, L, L)
        if mask is not None:
            bias = bias + mask[:, None]  # (nW, heads, L, L)
        # scaled_dot_product_attention scales q·k by head_dim^-0.5 like the official code. In bf16 on
        # CPUs its kernel is slow for 64-token windows (measured, one thread: 29% of nano's encoder,
        # 10% of HTSAT-large's): there, the same attention as two matmuls (af2.model.attention).
        if use_matmul_attention(q):
            out = matmul_attention(q, k, v, bias.to(q.dtype))
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))  # (B, nW, heads, L, d)
        return self.proj(out.transpose(2, 3).reshape(b, nw, seq, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinTransformerBlock(nn.Module):
    """(Shifted-)window attention + MLP, both pre-LN residual, over an H×W token grid."""

    def __init__(self, dim: int, resolution: int, heads: int, window: int, shift: int, mlp_ratio: float,
                 qkv_bias: bool, drop_path_rate: float, eps: float):
        super().__init__()
        if resolution <= window:  # one window covers the grid: nothing to shift
            window, shift = resolution, 0
        self.resolution, self.window, self.shift, self.drop_path_rate = resolution, window, shift, drop_path_rate
        # Registered only on shifted blocks: the official checkpoints store it there alone.
        self.register_buffer("attn_mask", shifted_window_mask(resolution, resolution, window, shift)
                             if shift > 0 else None)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = WindowAttention(dim, window, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        n, _, c = x.shape  # (N, H*W, C)
        h = w = self.resolution
        y = self.norm1(x).view(n, h, w, c)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(window_partition(y, self.window), self.attn_mask)
        y = window_reverse(y, self.window, h, w)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + drop_path(y.reshape(n, h * w, c), self.drop_path_rate, self.training, generator)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path_rate, self.training, generator)


class PatchMerging(nn.Module):
    """2×2 neighbouring tokens -> one token of twice the width (halves the grid)."""

    def __init__(self, dim: int, resolution: int, eps: float):
        super().__init__()
        self.resolution = resolution
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        n, _, c = x.shape
        x = x.view(n, self.resolution, self.resolution, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(n, -1, 4 * c)))


class BasicLayer(nn.Module):
    """One Swin stage: blocks alternating plain and shifted windows, then optional merging."""

    def __init__(self, cfg: HTSATConfig, stage: int, resolution: int, drop_path_rates: list[float]):
        super().__init__()
        dim = cfg.embed_dim * 2 ** stage
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(dim, resolution, cfg.num_heads[stage], cfg.window_size,
                                 0 if i % 2 == 0 else cfg.window_size // 2, cfg.mlp_ratio, cfg.qkv_bias,
                                 drop_path_rates[i], cfg.layernorm_eps)
            for i in range(cfg.depths[stage]))
        last = stage == len(cfg.depths) - 1
        self.downsample = None if last else PatchMerging(dim, resolution, cfg.layernorm_eps)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        for block in self.blocks:
            x = block(x, generator)
        return x if self.downsample is None else self.downsample(x)


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel_size=1), nn.BatchNorm2d(cout)]


class AFF(nn.Module):
    """Attentional feature fusion (2-D): a sigmoid gate from local + global channel attention
    mixes the global patch embedding x with the local-crop embedding."""

    def __init__(self, channels: int, r: int = 4):
        super().__init__()
        inner = channels // r
        self.local_att = nn.Sequential(*_conv_bn(channels, inner), nn.ReLU(), *_conv_bn(inner, channels))
        self.global_att = nn.Sequential(nn.AdaptiveAvgPool2d(1), *_conv_bn(channels, inner), nn.ReLU(),
                                        *_conv_bn(inner, channels))

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        xa = x + residual  # (K, C, H, W)
        single = xa.shape[0] == 1
        if single:  # the official code duplicates a lone sample so that BatchNorm can train on it
            xa = torch.cat([xa, xa])
        weight = torch.sigmoid(self.local_att(xa) + self.global_att(xa))
        if single:
            weight = weight[:1]
        return 2 * x * weight + 2 * residual * (1 - weight)


class PatchEmbed(nn.Module):
    """4×4 patches of the 256×256 image -> (N, 64*64, E) tokens; AFF fusion for ``longer`` windows."""

    def __init__(self, cfg: HTSATConfig):
        super().__init__()
        p, (sh, sw) = cfg.patch_size, cfg.patch_stride
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, kernel_size=p, stride=(sh, sw),
                              padding=((p - sh) // 2, (p - sw) // 2))
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.layernorm_eps)
        self.mel_conv2d = nn.Conv2d(cfg.in_chans, cfg.embed_dim, kernel_size=(p, 3 * p), stride=(sh, 3 * sw))
        self.fusion_model = AFF(cfg.embed_dim)

    def forward(self, img: Tensor, longer: Tensor | None) -> Tensor:
        # img: (N, 4, S, S) (or (N, 1, S, S) when longer is None); longer: (N,) bool or None
        x = self.proj(img[:, :1])  # (N, E, G, G), G = S / stride
        idx = torch.nonzero(longer).flatten() if longer is not None else None
        if idx is not None and idx.numel():
            crops = img[idx, 1:]  # (K, 3, S, S)
            k, three, s1, s2 = crops.shape
            local = self.mel_conv2d(crops.reshape(k * three, 1, s1, s2))  # (3K, E, G, w)
            local = local.view(k, three, *local.shape[1:]).permute(0, 2, 3, 1, 4).flatten(3)  # (K, E, G, 3w)
            width = x.shape[-1]
            local = F.pad(local, (0, width - local.shape[-1])) if local.shape[-1] < width else local[..., :width]
            x = x.index_copy(0, idx, self.fusion_model(x[idx], local))
        return self.norm(x.flatten(2).transpose(1, 2))  # (N, G*G, E)


class _UnusedSTFT(nn.Module):
    """torchlibrosa STFT kernels: in the checkpoint, never computed on the fusion path."""

    def __init__(self, n_fft: int):
        super().__init__()
        self.conv_real = nn.Conv1d(1, n_fft // 2 + 1, n_fft, bias=False)
        self.conv_imag = nn.Conv1d(1, n_fft // 2 + 1, n_fft, bias=False)


class _UnusedSpectrogram(nn.Module):
    def __init__(self, n_fft: int):
        super().__init__()
        self.stft = _UnusedSTFT(n_fft)


class _UnusedLogmel(nn.Module):
    def __init__(self, n_fft: int, n_mels: int):
        super().__init__()
        self.melW = nn.Parameter(torch.zeros(n_fft // 2 + 1, n_mels))


class HTSAT(nn.Module):
    """HTSAT-"large" with AFF-2D fusion: log-mel windows -> 64 dense tokens per window."""

    def __init__(self, cfg: HTSATConfig):
        super().__init__()
        if not cfg.enable_fusion or cfg.fusion_type != "aff_2d":
            raise ValueError(f"HTSATConfig.enable_fusion={cfg.enable_fusion}, fusion_type={cfg.fusion_type!r}: "
                             "only the AF2 variant (enable_fusion=True, fusion_type='aff_2d') is implemented")
        if cfg.patch_stride[0] != cfg.patch_stride[1]:
            raise ValueError(f"HTSATConfig.patch_stride={cfg.patch_stride}: only square strides are supported")
        self.cfg = cfg
        self.grid = cfg.spec_size // cfg.patch_stride[0]  # tokens per side after patch embedding
        self.spectrogram_extractor = _UnusedSpectrogram(cfg.unused_stft_n_fft)
        self.logmel_extractor = _UnusedLogmel(cfg.unused_stft_n_fft, cfg.mel_bins)
        self.bn0 = nn.BatchNorm2d(cfg.mel_bins, eps=cfg.bn0_eps)
        self.patch_embed = PatchEmbed(cfg)
        rates = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths), device="cpu").tolist()  # python floats
        starts = [sum(cfg.depths[:i]) for i in range(len(cfg.depths))]
        self.layers = nn.ModuleList(
            BasicLayer(cfg, i, self.grid // 2 ** i, rates[starts[i]:starts[i] + d]) for i, d in enumerate(cfg.depths))
        self.norm = nn.LayerNorm(cfg.num_features, eps=cfg.layernorm_eps)
        # Classification heads of the original HTSAT: kept for checkpoint parity, never computed.
        head_rows = self.grid // 2 ** (len(cfg.depths) - 1) // cfg.freq_ratio
        self.tscam_conv = nn.Conv2d(cfg.num_features, cfg.num_classes, kernel_size=(head_rows, 3), padding=(0, 1))
        self.head = nn.Linear(cfg.num_classes, cfg.num_classes)
        self.apply(_init_weights)

    def forward(self, mel: Tensor, longer: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        """mel: (N, T, M) log-mel windows (T = 1001, M = 64); longer: optional (N,) bool marking
        windows that take the AFF fusion path. In training, when no window is flagged, one random
        window of the call is (the official rule; use ``random_longer_flags`` for one per sample).
        generator drives every train-mode random draw. Returns (N, 64, num_features)."""
        cfg = self.cfg
        if mel.ndim != 3 or mel.shape[-1] != cfg.mel_bins:
            raise ValueError(f"HTSAT expects log-mel windows (N, T, {cfg.mel_bins}), got {tuple(mel.shape)}")
        n = mel.shape[0]
        if longer is not None and (longer.shape != (n,) or longer.dtype != torch.bool):
            raise ValueError(f"longer must be a ({n},) bool tensor, got {longer.dtype} {tuple(longer.shape)}")
        if self.training and (longer is None or not bool(longer.any())):
            longer = random_longer_flags([n], generator, mel.device)
        # Without a `longer` window only channel 0 is ever used: skip the 3 identical copies.
        channels = 1 if longer is None else FUSION_CHANNELS
        x = mel[:, None].expand(n, channels, *mel.shape[1:])  # (N, 4, T, M): short-window stack
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # normalise each mel bin
        if self.training:
            x = drop_stripes(x, 2, *SPEC_AUGMENT["time"], generator)
            x = drop_stripes(x, 3, *SPEC_AUGMENT["freq"], generator)
        x = self.patch_embed(self.to_image(x), longer)  # (N, G*G, E)
        for layer in self.layers:
            x = layer(x, generator)
        x = self.norm(x)  # (N, g*g, C), g = final grid side
        return self.regroup_tokens(x)

    def to_image(self, x: Tensor) -> Tensor:
        """(N, 4, T, M) -> (N, 4, S, S): stretch time to S*r, cut it into r chunks and stack them
        along frequency, so row = chunk*M + mel and column = time within the chunk."""
        cfg = self.cfg
        n, c, t, m = x.shape
        r, target_t = cfg.freq_ratio, cfg.spec_size * cfg.freq_ratio
        if t > target_t or m != cfg.spec_size // r:
            raise ValueError(f"HTSAT: {t} frames x {m} mels do not fit a {cfg.spec_size}² image "
                             f"(need frames <= {target_t} and {cfg.spec_size // r} mels)")
        if t < target_t:
            x = F.interpolate(x, (target_t, m), mode="bicubic", align_corners=True)
        x = x.transpose(2, 3).reshape(n, c, m, r, cfg.spec_size)  # (N, 4, M, chunk, S)
        return x.permute(0, 1, 3, 2, 4).reshape(n, c, r * m, cfg.spec_size)

    @property
    def time_slots(self) -> int:
        """How many chronological time slots a window's tokens cover (regroup_tokens: token i is slot
        i mod time_slots)."""
        return self.cfg.freq_ratio * self.grid // 2 ** (len(self.cfg.depths) - 1)

    def regroup_tokens(self, x: Tensor) -> Tensor:
        """(N, g*g, C) on a grid of F = g rows (r time chunks × g/r mel bands) and T = g columns
        -> (N, bands*r*g, C) with token index = band*(r*g) + chunk*g + column (chronological)."""
        n, _, c = x.shape
        g, r = self.grid // 2 ** (len(self.cfg.depths) - 1), self.cfg.freq_ratio
        x = x.transpose(1, 2).reshape(n, c, r, g // r, g)  # (N, C, chunk, band, col)
        return x.permute(0, 1, 3, 2, 4).reshape(n, c, -1).transpose(1, 2)  # (N, 64, C)


def _init_weights(m: nn.Module) -> None:
    """The official initialisation: truncated-normal(0.02) linears and bias tables, unit LayerNorms."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, WindowAttention):
        nn.init.trunc_normal_(m.relative_position_bias_table, std=0.02)
