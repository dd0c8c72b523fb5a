"""Special tokens, prompt templates and label masking (spec section 5), settled once, vectorised.

Text layout, as in the official code (everything lower-cased, no chat template, no spaces):

    train:     <audio>{prompt}<SEP>{answer}<|endofchunk|><|endoftext|>
    inference: <audio>{prompt}<SEP>              → generate until <|endoftext|>
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from af2.config import TokensConfig
from af2.errors import CheckpointError

IGNORE_INDEX = -100


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of the tokens the data layer and the model agree on."""

    audio: int
    end_of_chunk: int
    pad: int
    sep: int
    eos: int


def add_special_tokens(tokenizer, cfg: TokensConfig = TokensConfig()) -> SpecialTokens:
    """Add AF2's tokens to a base tokenizer in the official order; return their ids.

    For Qwen2.5 this gives <audio>=151665, <|endofchunk|>=151666, <|PAD_TOKEN|>=151667 and
    <SEP>=151668, and the tokenizer grows to 151,669 entries.
    """
    vocab = tokenizer.get_vocab()
    if cfg.audio not in vocab:
        tokenizer.add_special_tokens({"additional_special_tokens": [cfg.audio, cfg.end_of_chunk, cfg.pad]})
    tokenizer.pad_token = cfg.pad
    if cfg.sep not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"sep_token": cfg.sep})
    tokenizer.sep_token = cfg.sep
    tokenizer.padding_side = "right"
    return special_token_ids(tokenizer, cfg)


def special_token_ids(tokenizer, cfg: TokensConfig = TokensConfig()) -> SpecialTokens:
    """Ids of AF2's special tokens in a tokenizer that already has them; fails loudly otherwise."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in (cfg.audio, cfg.end_of_chunk, cfg.pad, cfg.sep, cfg.eos) if t not in vocab]
    if missing:
        raise CheckpointError(f"tokenizer lacks AF2 special tokens {missing}; call af2.tokens.add_special_tokens first")
    return SpecialTokens(audio=vocab[cfg.audio], end_of_chunk=vocab[cfg.end_of_chunk], pad=vocab[cfg.pad],
                         sep=vocab[cfg.sep], eos=vocab[cfg.eos])


def inference_prompt(question: str, cfg: TokensConfig = TokensConfig()) -> str:
    return f"{cfg.audio}{question.lower().strip()}{cfg.sep}"


def prompt_ids(tokenizer, question: str, special: SpecialTokens) -> list[int]:
    """Ids of ``inference_prompt(question)``: ``<audio>`` + the question + ``<SEP>``.

    The question is user text: it is tokenised with special-token matching off, so a question that
    contains ``<audio>``, ``<|endofchunk|>`` or ``<|endoftext|>`` is read as those characters and
    can never add an audio slot or end the prompt. Added tokens split the text before the BPE runs,
    so for ordinary questions this equals tokenising the whole prompt string.
    """
    body = tokenizer(question.lower().strip(), add_special_tokens=False, split_special_tokens=True)["input_ids"]
    # A vocabulary that also holds a special token as an ordinary word (word-level tokenizers do) could
    # still map the text to it: such ids are dropped, so the prompt's structure never depends on the text.
    banned = {special.audio, special.end_of_chunk, special.pad, special.sep, special.eos,
              *getattr(tokenizer, "all_special_ids", ())}
    return [special.audio, *(i for i in body if i not in banned), special.sep]


def training_text(prompt: str, answer: str, cfg: TokensConfig = TokensConfig()) -> str:
    return f"{cfg.audio}{prompt.lower().strip()}{cfg.sep}{answer.lower().strip()}{cfg.end_of_chunk}{cfg.eos}"


def clean_answer(text: str, cfg: TokensConfig = TokensConfig(), strip: bool = True) -> str:
    """Official post-processing: keep what follows the last <SEP>, drop the end markers (and
    surrounding whitespace unless ``strip=False``, for pieces of an answer)."""
    text = text.split(cfg.sep)[-1]
    for marker in (cfg.eos, cfg.pad, cfg.end_of_chunk):
        text = text.replace(marker, "")
    return text.strip() if strip else text


def encode_training_batch(tokenizer, prompts: list[str], answers: list[str],
                          cfg: TokensConfig = TokensConfig()) -> dict[str, torch.Tensor]:
    """Tokenise (prompt, answer) pairs with the training template, right-padded and right-truncated
    to ``cfg.max_tokens``; return ``input_ids``, ``attention_mask`` and ``labels`` (B, T)."""
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    ids = special_token_ids(tokenizer, cfg)
    texts = [training_text(p, a, cfg) for p, a in zip(prompts, answers)]
    enc = tokenizer(texts, max_length=cfg.max_tokens, truncation=True, padding="longest",
                    return_tensors="pt", add_special_tokens=False)
    input_ids = enc["input_ids"]
    return {"input_ids": input_ids, "attention_mask": enc["attention_mask"], "labels": make_labels(input_ids, ids)}


def make_labels(input_ids: torch.Tensor, ids: SpecialTokens) -> torch.Tensor:
    """Official label masking (train_utils.py), vectorised over (B, T).

    Targets are the answer tokens, <|endofchunk|> and <|endoftext|>: a token is ignored while the
    most recent <SEP>/<|endofchunk|> *before* it is not a <SEP> (so <SEP> itself is ignored and
    <|endofchunk|> is kept), except EOS, which is kept everywhere. Pads, position 0 and <audio>
    are ignored. If the last label is still a live answer token, the answer was cut by the length
    limit and its tail (back to the last ignored/EOS/EOC label) is dropped from the loss.
    """
    B, T = input_ids.shape
    pos = torch.arange(T, device=input_ids.device).expand(B, T)
    none = torch.full_like(input_ids, -1)
    # Index of the last SEP / EOC at or before t, then shifted so it is strictly before t.
    last_sep = torch.where(input_ids == ids.sep, pos, none).cummax(dim=1).values
    last_eoc = torch.where(input_ids == ids.end_of_chunk, pos, none).cummax(dim=1).values
    last_sep = torch.cat([none[:, :1], last_sep[:, :-1]], dim=1)
    last_eoc = torch.cat([none[:, :1], last_eoc[:, :-1]], dim=1)
    in_prompt = last_sep <= last_eoc  # True also before any marker (both -1)

    labels = input_ids.clone()
    labels[(in_prompt & (input_ids != ids.eos)) | (input_ids == ids.pad) | (input_ids == ids.audio)] = IGNORE_INDEX
    labels[:, 0] = IGNORE_INDEX

    last = labels[:, -1]
    cut = (last != IGNORE_INDEX) & (last != ids.eos) & (last != ids.pad) & (last != ids.end_of_chunk)
    if cut.any():
        stop = (labels == IGNORE_INDEX) | (labels == ids.eos) | (labels == ids.end_of_chunk)
        last_stop = torch.where(stop, pos, none).max(dim=1).values  # (B,)
        drop = cut[:, None] & (pos > last_stop[:, None])
        labels[drop] = IGNORE_INDEX
    return labels


def fewshot_audio_limit(input_ids: torch.Tensor, audio_id: int, tokens_per_audio: int) -> torch.Tensor:
    """The official training code's "few-shot" cross-attention mask (spec 4.4) as a (B, T) limit:
    text token t sees audio tokens [0, max(c, 1) * tokens_per_audio), c = number of <audio> tokens
    at or before t. With one <audio> and the shipped ``max_window_per_audio`` of 1, text sees only
    audio token 0; ``tokens_per_audio`` counts audio tokens, not windows, despite the official name."""
    if tokens_per_audio < 1:
        raise ValueError(f"tokens_per_audio must be >= 1, got {tokens_per_audio}")
    count = (input_ids == audio_id).long().cumsum(dim=1)
    return count.clamp_min(1) * tokens_per_audio
