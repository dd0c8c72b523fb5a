"""Label masking against a literal transcription of the official loop; templates; configs."""

from __future__ import annotations

import pytest
import torch

from af2.config import AF2Config, apply_overrides, config_from_dict, config_to_dict, parse_cli_overrides
from af2.tokens import IGNORE_INDEX, SpecialTokens, clean_answer, inference_prompt, make_labels, training_text

IDS = SpecialTokens(audio=512, end_of_chunk=513, pad=514, sep=515, eos=500)


def official_labels(input_ids: torch.Tensor) -> torch.Tensor:
    """The official element-wise loop (train_utils.py), as the oracle for the vectorised version."""
    labels = input_ids.clone()
    labels[labels == IDS.pad] = IGNORE_INDEX
    labels[:, 0] = IGNORE_INDEX
    labels[labels == IDS.audio] = IGNORE_INDEX
    for i in range(labels.shape[0]):
        mask = True
        for j in range(labels.shape[1]):
            tok = input_ids[i, j].item()
            if mask and labels[i, j] != IDS.eos:
                labels[i, j] = IGNORE_INDEX
            if tok == IDS.sep:
                mask = False
            elif tok == IDS.end_of_chunk:
                mask = True
        last = labels[i, -1].item()
        if last not in (IGNORE_INDEX, IDS.eos, IDS.pad, IDS.end_of_chunk):
            j = labels.shape[1] - 1
            while j >= 0 and labels[i, j].item() not in (IGNORE_INDEX, IDS.eos, IDS.end_of_chunk):
                labels[i, j] = IGNORE_INDEX
                j -= 1
    return labels


def test_labels_match_official_loop_on_handmade_rows():
    rows = torch.tensor([
        [512, 1, 2, 515, 7, 8, 513, 500, 514, 514],   # normal, right padded
        [512, 1, 500, 2, 515, 7, 8, 9, 513, 500],     # EOS inside the prompt is kept
        [512, 1, 2, 3, 4, 515, 7, 8, 9, 10],          # answer cut by the length limit
        [512, 1, 515, 7, 513, 500, 3, 515, 9, 513],   # two turns
    ])
    got = make_labels(rows, IDS)
    assert torch.equal(got, official_labels(rows))
    assert got[0].tolist() == [-100, -100, -100, -100, 7, 8, 513, 500, -100, -100]
    assert got[2].tolist() == [-100] * 10


def test_labels_match_official_loop_on_random_rows():
    g = torch.Generator().manual_seed(0)
    vocab = torch.tensor([1, 2, 3, 500, 512, 513, 514, 515])
    rows = vocab[torch.randint(0, len(vocab), (200, 12), generator=g)]
    assert torch.equal(make_labels(rows, IDS), official_labels(rows))


def test_templates_and_cleaning():
    assert inference_prompt("  What Is This? ") == "<audio>what is this?<SEP>"
    assert training_text("Q?", " A Dog. ") == "<audio>q?<SEP>a dog.<|endofchunk|><|endoftext|>"
    assert clean_answer("<audio>q<SEP>a dog barks<|endofchunk|><|endoftext|><|PAD_TOKEN|>") == "a dog barks"


def test_special_tokens_get_official_ids(official_model):
    _, tokenizer, special = official_model
    assert (special.audio, special.end_of_chunk, special.pad, special.sep, special.eos) == (512, 513, 514, 515, 500)
    assert len(tokenizer) == 516


def test_config_round_trip_and_overrides():
    cfg = AF2Config()
    assert config_from_dict(AF2Config, config_to_dict(cfg)) == cfg
    cfg2 = apply_overrides(cfg, parse_cli_overrides(["audio.max_windows=12", "htsat.depths=[1,1,1,1]"]))
    assert cfg2.audio.max_windows == 12 and cfg2.htsat.depths == (1, 1, 1, 1)
    with pytest.raises(ValueError, match="did you mean 'max_windows'"):
        apply_overrides(cfg, {"audio.max_window": 3})
    with pytest.raises(ValueError, match="expected int"):
        apply_overrides(cfg, {"audio.max_windows": "many"})
