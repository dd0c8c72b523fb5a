"""Stage 0: AF-CLAP, contrastive training of the HTSAT audio tower (spec 2.3-2.4).

Audio: HTSAT's 64 dense tokens per 10-s window, mean-pooled, → MLP → 512. Text: any Hugging Face
encoder (Flan-T5-large in AF2), mask-weighted mean of its last hidden states → MLP → 512. Each clip
brings M paraphrased captions, all positives, and up to N caption-derived hard negatives
(``af2.train.negatives``) that enter only its own softmax denominator, beside the in-batch captions.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel

from af2.audio import log_mel
from af2.config import AudioConfig, HTSATConfig
from af2.errors import ConfigError
from af2.model.htsat import HTSAT
from af2.train.checkpoint import save_weights
from af2.train.config import ClapConfig
from af2.train.data import Sample
from af2.train.negatives import hard_negatives


def _mlp(d_in: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_out), nn.ReLU(), nn.Linear(d_out, d_out))


def text_encoder_dir(name: str) -> str:
    """``all-minilm-l6-v2`` names the sentence encoder shipped in a PyPI package; anything else is a folder."""
    if name.lower() == "all-minilm-l6-v2":
        from af2.eval.similarity import encoder_dir

        return str(encoder_dir())
    return name


def build_text_encoder(cfg: ClapConfig) -> nn.Module:
    """The encoder of ``cfg.text_encoder`` (a local folder), or a random one from ``text_encoder_config``."""
    if cfg.text_encoder:
        model = AutoModel.from_pretrained(text_encoder_dir(cfg.text_encoder))
    elif cfg.text_encoder_config:
        conf = dict(cfg.text_encoder_config)
        model = AutoModel.from_config(AutoConfig.for_model(conf.pop("model_type"), **conf))
    else:
        raise ConfigError("clap.text_encoder (a local Hugging Face encoder folder, e.g. flan-t5-large) or "
                         "clap.text_encoder_config is required for stage 0")
    return model.get_encoder() if getattr(model.config, "is_encoder_decoder", False) else model


class AFClap(nn.Module):
    def __init__(self, htsat: HTSATConfig, audio: AudioConfig, cfg: ClapConfig, text_encoder: nn.Module):
        super().__init__()
        self.audio_cfg = audio
        self.audio_encoder = HTSAT(htsat)
        self.text_encoder = text_encoder
        self.audio_projection = _mlp(htsat.num_features, cfg.embed_dim)
        self.text_projection = _mlp(text_encoder.config.hidden_size, cfg.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(cfg.logit_scale_init))
        self._text_cache: dict[tuple[int, ...], torch.Tensor] = {}

    def embed_audio(self, windows: torch.Tensor) -> torch.Tensor:
        """(B, S) 10-s windows → (B, E) unit vectors."""
        tokens = self.audio_encoder(log_mel(windows, self.audio_cfg))  # (B, 64, Da)
        return F.normalize(self.audio_projection(tokens.mean(dim=1)), dim=-1)

    def embed_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(K, T) captions → (K, E) unit vectors. A frozen text tower's pooled outputs are cached per
        caption (the same few thousand captions come back every epoch)."""
        if any(p.requires_grad for p in self.text_encoder.parameters()):
            pooled = self._pool(input_ids, attention_mask)
        else:
            pooled = self._pool_cached(input_ids, attention_mask)
        return F.normalize(self.text_projection(pooled), dim=-1)

    def _pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weight = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weight).sum(1) / weight.sum(1).clamp(min=1)

    @torch.no_grad()
    def _pool_cached(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        keys = [tuple(row[m.bool()].tolist()) for row, m in zip(input_ids, attention_mask)]
        todo = sorted({i for i, k in enumerate(keys) if k not in self._text_cache})
        if todo:
            idx = torch.tensor(todo, device=input_ids.device)
            for i, vec in zip(todo, self._pool(input_ids[idx], attention_mask[idx]).float()):
                self._text_cache[keys[i]] = vec
        return torch.stack([self._text_cache[k] for k in keys])

    def forward(self, windows, pos_ids, pos_mask, neg_ids, neg_mask, neg_valid) -> torch.Tensor:
        """windows (B, S); positives (B·M, T) grouped by clip; negatives (B·N, T'); neg_valid (B, N)."""
        B, N = neg_valid.shape
        audio = self.embed_audio(windows)
        texts = self.embed_text(torch.cat([pos_ids, _pad_to(neg_ids, pos_ids.shape[1])]) if N else pos_ids,
                                torch.cat([pos_mask, _pad_to(neg_mask, pos_mask.shape[1])]) if N else pos_mask)
        pos, neg = texts[:pos_ids.shape[0]], texts[pos_ids.shape[0]:]
        return contrastive_loss(audio, pos, neg.view(B, N, -1), neg_valid, self.logit_scale.exp().clamp(max=100))


def _pad_to(x: torch.Tensor, t: int) -> torch.Tensor:
    return F.pad(x, (0, t - x.shape[1])) if x.shape[1] < t else x[:, :t]


def contrastive_loss(audio: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, neg_valid: torch.Tensor,
                     scale: torch.Tensor) -> torch.Tensor:
    """audio (B, E); pos (B·M, E), clip i owning rows i·M..i·M+M-1; neg (B, N, E); neg_valid (B, N).

    audio→text: each positive is scored against every other clip's captions and the clip's own
    hard negatives (its other paraphrases are neither in the numerator nor the denominator).
    text→audio: each caption picks its clip among the batch's audio. The loss is their mean."""
    B, M = audio.shape[0], pos.shape[0] // audio.shape[0]
    owner = torch.arange(B, device=audio.device).repeat_interleave(M)  # (B·M,)
    logits = scale * audio @ pos.T  # (B, B·M)
    own = owner[None, :] == torch.arange(B, device=audio.device)[:, None]
    positives = logits[own].view(B, M)
    hard = (scale * torch.einsum("be,bne->bn", audio, neg)).masked_fill(~neg_valid, float("-inf"))
    others = torch.cat([logits.masked_fill(own, float("-inf")), hard], dim=1)  # (B, B·M + N)
    denom = torch.logaddexp(torch.logsumexp(others, dim=1, keepdim=True), positives)  # (B, M)
    audio_to_text = (denom - positives).mean()
    text_to_audio = F.cross_entropy(logits.T, owner)
    return (audio_to_text + text_to_audio) / 2


class ClapCollator:
    """Samples → the first window of each clip, M positives and N hard negatives, tokenised."""

    def __init__(self, tokenizer, cfg: ClapConfig):
        self.tokenizer, self.cfg = tokenizer, cfg

    def _tokens(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if not texts:
            return torch.zeros(0, 1, dtype=torch.long), torch.zeros(0, 1, dtype=torch.long)
        enc = self.tokenizer(texts, max_length=self.cfg.max_text_tokens, truncation=True, padding="longest",
                             return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    def __call__(self, samples: list[Sample]) -> dict[str, torch.Tensor]:
        M, N = self.cfg.positives, self.cfg.hard_negatives
        positives = [s.captions[k % len(s.captions)] for s in samples for k in range(M)]
        negatives, valid = [], torch.zeros(len(samples), N, dtype=torch.bool)
        for i, s in enumerate(samples):
            found = hard_negatives(s.captions[0], N)
            valid[i, :len(found)] = True
            negatives.extend(found + [s.captions[0]] * (N - len(found)))  # placeholders, masked out
        pos_ids, pos_mask = self._tokens(positives)
        neg_ids, neg_mask = self._tokens(negatives)
        return {"windows": torch.stack([s.windows[0] for s in samples]), "pos_ids": pos_ids, "pos_mask": pos_mask,
                "neg_ids": neg_ids, "neg_mask": neg_mask, "neg_valid": valid}


def clap_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch)


def export_audio_tower(state: dict[str, torch.Tensor], ckpt_dir: Path) -> None:
    """``audio_tower.safetensors``: the HTSAT weights alone, keys as in ``AF2Model.audio_encoder``."""
    tower = {k[len("audio_encoder."):]: v for k, v in state.items() if k.startswith("audio_encoder.")}
    save_weights(tower, ckpt_dir / "audio_tower.safetensors")
