"""Audio Flamingo 2: AF-CLAP over 10-s windows → transformation layers → gated cross-attention
before the decoder layers of a frozen causal LM (spec sections 1-5). Pure: no I/O, no devices.

Shapes: B batch, W windows, S samples per window (160,000), N = W·64 audio tokens, T text tokens,
Da audio width (2048 for HTSAT-large), D LM width.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from af2.audio.features import log_mel
from af2.config import AF2Config
from af2.model.audio_transformer import AudioTransformer
from af2.model.htsat import HTSAT
from af2.model.xattn import AudioContext, GatedCrossAttentionBlock, XAttnDecoderLayer

TOKENS_PER_WINDOW = 64
# Where the base LM's parts sit in AF2Model's state dict: any Hugging Face causal LM whose decoder
# layers live at ``model.layers`` (Qwen2, Llama), under ``lm.``. A tied LM head is an alias of the embedding.
EMBEDDING_KEY = "lm.model.embed_tokens.weight"
LM_HEAD_KEY = "lm.lm_head.weight"


def build_lm(cfg: AF2Config) -> PreTrainedModel:
    """The base causal LM from its config dict, randomly initialised, vocabulary resized to AF2's.

    Qwen2 and Llama-family configs work (anything whose decoder layers live at ``model.layers``).
    """
    lm_cfg = dict(cfg.lm)
    model_type = lm_cfg.pop("model_type", None)
    if model_type is None:
        raise ValueError("AF2Config.lm needs a 'model_type' (e.g. 'qwen2' or 'llama')")
    lm_cfg.pop("architectures", None)
    hf_config = AutoConfig.for_model(model_type, **lm_cfg)
    hf_config._attn_implementation = "sdpa"
    lm = AutoModelForCausalLM.from_config(hf_config)
    lm.resize_token_embeddings(cfg.vocab_size, mean_resizing=False)
    return lm


def audio_time_features(window_mask: torch.Tensor, n: int, slots: int, window_seconds: float) -> torch.Tensor:
    """(B, W) window mask → (B, W·64, n) fixed sinusoids of where each audio token lies in time.

    A token's time is the centre of its time slot (``slots`` per window, HTSAT's chronological token
    order: token i of a window is slot i mod ``slots``). The first n/2 features are sin and cos of the clock
    in seconds over n/4 periods spaced geometrically from 2.5 s to 640 s; the last n/2 are sin and cos of
    π·k·u, k = 1..n/4, with u the token's position within the clip's real windows (0 = start, 1 = end).
    """
    B, W = window_mask.shape
    per_window = TOKENS_PER_WINDOW
    slot = torch.arange(W * per_window, device=window_mask.device) % per_window % slots
    window = torch.arange(W * per_window, device=window_mask.device) // per_window
    seconds = (window * slots + slot + 0.5).double() * (window_seconds / slots)  # (N,)
    quarter = n // 4
    periods = 2.5 * (640.0 / 2.5) ** (torch.arange(quarter, device=window_mask.device).double() / max(quarter - 1, 1))
    clock = seconds[:, None] * (2 * torch.pi / periods)  # (N, n/4)
    length = window_mask.double().sum(dim=1).clamp(min=1) * window_seconds  # (B,)
    u = (seconds[None, :] / length[:, None]).clamp(max=1.0)  # (B, N)
    k = torch.arange(1, quarter + 1, device=window_mask.device).double()
    place = u[..., None] * (torch.pi * k)  # (B, N, n/4)
    clock = clock.expand(B, -1, -1)
    return torch.cat([clock.sin(), clock.cos(), place.sin(), place.cos()], dim=-1).float()


class AF2Model(nn.Module):
    def __init__(self, cfg: AF2Config, lm: PreTrainedModel | None = None):
        super().__init__()
        self.cfg = cfg
        self.audio_encoder = HTSAT(cfg.htsat)
        self.audio_transformer = AudioTransformer(cfg.audio_dim, cfg.audio_transformer)
        self.lm = lm if lm is not None else build_lm(cfg)
        layers = self.lm.model.layers
        dim = self.lm.config.hidden_size
        for i in range(len(layers)):
            block = GatedCrossAttentionBlock(dim, cfg.audio_dim, cfg.xattn) if cfg.xattn.has_block(i) else None
            layers[i] = XAttnDecoderLayer(layers[i], block, i)
        # XAttnConfig.audio_whitening: a fixed map on the features every block reads (identity until fitted)
        self.register_buffer("audio_whitening", torch.eye(cfg.audio_dim) if cfg.xattn.audio_whitening else None)
        # XAttnConfig.audio_time_features: where each token lies in time, added to what the blocks read
        n_time = cfg.xattn.audio_time_features
        if n_time < 0 or n_time % 4:
            raise ValueError(f"xattn.audio_time_features must be 0 or a positive multiple of 4, got {n_time}")
        self.audio_time = nn.Linear(n_time, cfg.audio_dim, bias=False) if n_time else None
        if self.audio_time is not None:
            nn.init.zeros_(self.audio_time.weight)

    @property
    def decoder_layers(self) -> list[XAttnDecoderLayer]:
        return list(self.lm.model.layers)

    # ----------------------------------------------------------------------------------------
    # audio

    def encode_windows(self, windows: torch.Tensor, window_mask: torch.Tensor, chunk: int | None = None,
                       progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """windows: (B, W, S) waveforms, window_mask: (B, W) → CLAP tokens (B, W·64, Da).

        Only real windows go through the encoder, all samples' windows in one batched call (or in
        chunks of ``chunk`` windows to bound memory). Padded windows get zeros: the official code
        encodes their silence, but every consumer masks them, so the result is the same.
        ``progress(done, total)`` is called with the real windows encoded so far after each chunk.
        """
        B, W, S = windows.shape
        real = window_mask.bool().reshape(B * W)
        flat = windows.reshape(B * W, S)[real]
        if chunk is None or chunk <= 0:
            chunk = max(flat.shape[0], 1)
        dtype = self.audio_encoder.norm.weight.dtype
        # The mel is computed in fp32 (the official front end's precision), then cast to the tower's dtype.
        pieces = []
        for i in range(0, flat.shape[0], chunk):
            pieces.append(self.audio_encoder(log_mel(flat[i:i + chunk].float(), self.cfg.audio).to(dtype)))
            if progress is not None:
                progress(min(i + chunk, flat.shape[0]), flat.shape[0])
        encoded = torch.cat(pieces) if pieces else flat.new_zeros(0, TOKENS_PER_WINDOW, self.cfg.audio_dim)
        tokens = encoded.new_zeros(B * W, TOKENS_PER_WINDOW, self.cfg.audio_dim)
        tokens[real] = encoded
        return tokens.view(B, W * TOKENS_PER_WINDOW, self.cfg.audio_dim)

    def encode_audio(self, windows: torch.Tensor, window_mask: torch.Tensor, *, cache_kv: bool = False,
                     chunk: int | None = None, tokens: torch.Tensor | None = None,
                     progress: Callable[[int, int], None] | None = None) -> AudioContext:
        """(B, W, S) windows + (B, W) mask → the AudioContext every cross-attention block reads.

        With ``cache_kv`` every block's keys and values over the audio are computed here, once,
        instead of at every forward (the official code recomputes them at every decoding step).
        ``tokens``: the CLAP tokens (B, W·64, Da) when the caller already has them (a trainer's cache
        of a frozen tower); ``windows`` are then not read.
        ``progress(done, total)``: real windows through the audio encoder so far (see encode_windows).
        """
        if (window_mask.bool().sum(dim=1) == 0).any():
            raise ValueError("every batch item needs at least one real audio window (window_mask all zero)")
        mask = window_mask.bool().repeat_interleave(TOKENS_PER_WINDOW, dim=1)  # (B, N)
        if tokens is None:
            tokens = self.encode_windows(windows, window_mask, chunk, progress)
        features = self.audio_transformer(tokens, mask)
        if self.audio_whitening is not None:
            features = features @ self.audio_whitening.to(features.dtype).T
        if self.audio_time is not None:
            clock = audio_time_features(window_mask, self.audio_time.in_features, self.audio_encoder.time_slots,
                                        self.cfg.audio.window_seconds)
            features = features + self.audio_time(clock.to(self.audio_time.weight.dtype)).to(features.dtype)
        kv = None
        if cache_kv:
            # Made contiguous once here: every decoding step then streams them through attention.
            kv = tuple(None if layer.xattn is None
                       else tuple(t.contiguous() for t in layer.xattn.attn.keys_values(features))
                       for layer in self.decoder_layers)
        return AudioContext(features, mask, kv)

    # ----------------------------------------------------------------------------------------
    # language model

    def forward(self, windows: torch.Tensor | None = None, window_mask: torch.Tensor | None = None,
                input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, *, audio: AudioContext | None = None,
                audio_limit: torch.Tensor | None = None, **lm_kwargs):
        """Teacher-forced (or one decoding step's) forward → HF ``CausalLMOutputWithPast``.

        Pass either ``windows`` + ``window_mask`` or a precomputed ``audio`` context.
        ``audio_limit`` (B, T), teacher-forced only: text token t sees audio tokens [0, limit)
        (the official training code's few-shot mask, ``AudioContext.text_limit``). Extra
        keyword arguments (``cache``, ``use_cache``, ``position_ids``, ``logits_to_keep``) go to
        the LM unchanged.
        """
        if audio is None:
            if windows is None or window_mask is None:
                raise ValueError("pass windows and window_mask, or a precomputed audio context")
            audio = self.encode_audio(windows, window_mask)
        if audio_limit is not None:
            audio = dataclasses.replace(audio, text_limit=audio_limit)
        return self.lm(input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                       audio_context=audio, **lm_kwargs)
