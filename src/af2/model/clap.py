"""AF-CLAP (spec 2.3-2.4): the contrastive audio-text model of stage 0 and its loss.

Audio: HTSAT's 64 dense tokens per 10-s window, mean-pooled, → MLP → embed_dim. Text: any Hugging
Face encoder (Flan-T5-large in AF2), mask-weighted mean of its last hidden states → MLP → embed_dim.
Each clip brings M paraphrased captions, all positives, and up to N hard negatives that enter only
its own softmax denominator, beside the in-batch captions. With ``teacher_dim`` > 0 the pooled audio also
feeds a head that regresses a pretrained tagger's per-window class logits (``teacher`` targets, mean
squared error; af2.train.teacher), an af2-nano addition. Training code: ``af2.train.clap``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from af2.audio.features import log_mel
from af2.config import AudioConfig, HTSATConfig
from af2.model.htsat import HTSAT


def _mlp(d_in: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_out), nn.ReLU(), nn.Linear(d_out, d_out))


class AFClap(nn.Module):
    """The HTSAT audio tower and a text encoder, each with a projection head into one ``embed_dim`` space."""

    def __init__(self, htsat: HTSATConfig, audio: AudioConfig, text_encoder: nn.Module, *, embed_dim: int,
                 logit_scale_init: float, teacher_dim: int = 0, teacher_weight: float = 1.0):
        super().__init__()
        self.audio_cfg = audio
        self.audio_encoder = HTSAT(htsat)
        self.text_encoder = text_encoder
        self.audio_projection = _mlp(htsat.num_features, embed_dim)
        self.text_projection = _mlp(text_encoder.config.hidden_size, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(logit_scale_init))
        self.teacher_head = _mlp(htsat.num_features, teacher_dim) if teacher_dim else None
        self.teacher_weight = teacher_weight
        self._text_cache: dict[tuple[int, ...], torch.Tensor] = {}

    def pool_audio(self, windows: torch.Tensor) -> torch.Tensor:
        """(B, S) 10-s windows → (B, Da): the mean of HTSAT's 64 tokens per window."""
        return self.audio_encoder(log_mel(windows, self.audio_cfg)).mean(dim=1)

    def embed_audio(self, windows: torch.Tensor) -> torch.Tensor:
        """(B, S) 10-s windows → (B, E) unit vectors."""
        return F.normalize(self.audio_projection(self.pool_audio(windows)), dim=-1)

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

    def forward(self, windows, pos_ids, pos_mask, neg_ids, neg_mask, neg_valid, teacher=None) -> torch.Tensor:
        """windows (B, S); positives (B·M, T) grouped by clip; negatives (B·N, T'); neg_valid (B, N);
        teacher (B, teacher_dim) targets when the model has a teacher head."""
        B, N = neg_valid.shape
        if (teacher is None) != (self.teacher_head is None):
            raise ValueError("teacher targets are needed exactly when the model has a teacher head "
                             f"(head: {self.teacher_head is not None}, targets: {teacher is not None})")
        pooled = self.pool_audio(windows)
        audio = F.normalize(self.audio_projection(pooled), dim=-1)
        texts = self.embed_text(torch.cat([pos_ids, _pad_to(neg_ids, pos_ids.shape[1])]) if N else pos_ids,
                                torch.cat([pos_mask, _pad_to(neg_mask, pos_mask.shape[1])]) if N else pos_mask)
        pos, neg = texts[:pos_ids.shape[0]], texts[pos_ids.shape[0]:]
        loss = contrastive_loss(audio, pos, neg.view(B, N, -1), neg_valid, self.logit_scale.exp().clamp(max=100))
        if self.teacher_head is not None:
            logits = self.teacher_head(pooled).float()  # the head's predictions of the teacher's logits
            loss = loss + self.teacher_weight * F.mse_loss(logits, teacher.to(logits.dtype))
        return loss


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
