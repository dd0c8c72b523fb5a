"""Continuous batching's step-level decode and per-row sampling, without HTTP."""

from __future__ import annotations

import pytest
import torch

import af2
from af2.audio import load_audio, make_windows, pad_windows
from af2.parity import fixture_config
from af2.serve.batch import DecodeBatch
from af2.serve.inputs import prompt_ids
from af2.serve.sampling import RowOptions, SamplingTensors, choose, gumbel_noise

QUESTIONS = ["w379 w366 w250 w360 w455 w15", "w20 w196 w68", "w189 w486 w363 w128"]
CLIPS = ["short.wav", "long.wav", "stereo.wav"]


@pytest.fixture(scope="module")
def api(fixture_dir):
    return af2.load(fixture_dir / "checkpoint", config=fixture_config(fixture_dir), max_audio_seconds=120)


def _audio(api, fixture_dir, rows):
    windows = [make_windows(load_audio(fixture_dir / "audio" / CLIPS[i], max_seconds=120).samples, api.audio_cfg)
               for i in rows]
    w, m = pad_windows(windows, api.audio_cfg.max_windows)
    with torch.inference_mode():
        return api.model.encode_audio(w, m, cache_kv=True)


def test_rows_joining_and_leaving_mid_decode_answer_as_alone(api, fixture_dir):
    n = 10
    alone = [list(api.ask(fixture_dir / "audio" / c, q, max_new_tokens=n).token_ids) for c, q in zip(CLIPS, QUESTIONS)]
    batch = DecodeBatch(api.model, api.special.pad)
    out: dict[int, list[int]] = {0: [], 1: [], 2: []}
    rows: list[int] = []

    def join(new: list[int]) -> None:
        opts = SamplingTensors.of([RowOptions()] * len(new), api.device)
        first = batch.join(_audio(api, fixture_dir, new), [prompt_ids(api, QUESTIONS[i]) for i in new], opts)
        rows.extend(new)
        for i, t in zip(new, first.tolist()):
            out[i].append(t)

    join([1])  # 27-s clip, 3 windows, decodes alone for three steps
    for _ in range(3):
        for i, t in zip(rows, batch.step().tolist()):
            out[i].append(t)
    join([0, 2])  # two arrivals join together: shorter audio, other prompt lengths
    assert batch.size == 3
    while rows:
        for i, t in zip(rows, batch.step().tolist()):
            out[i].append(t)
        keep = [k for k, i in enumerate(rows) if len(out[i]) < n]  # finished rows leave at once
        rows[:] = [rows[k] for k in keep]
        batch.keep(keep)
        if rows:
            assert batch.mask.any(dim=0).all()  # no column only padding is left behind
    assert [out[i] for i in range(3)] == alone
    assert batch.size == 0 and batch.cache is None


def test_seeded_sampling_does_not_depend_on_the_batch():
    torch.manual_seed(0)
    logits = torch.randn(4, 50)
    opts = SamplingTensors.of([RowOptions(0.8, 0.9, 0, 7), RowOptions(), RowOptions(1.0, 1.0, 5, 9),
                               RowOptions(1.3, 0.5, 0, 7)], torch.device("cpu"))
    steps = torch.tensor([0, 3, 5, 0])
    together = choose(logits, opts, steps)
    for row in range(4):
        index = torch.tensor([row])
        assert choose(logits[index], opts.select(index), steps[index]).item() == together[row].item()
    assert together[1].item() == logits[1].argmax().item()  # the greedy row
    top1 = SamplingTensors.of([RowOptions(1.0, 1.0, 1, s) for s in range(4)], torch.device("cpu"))
    assert torch.equal(choose(logits, top1, steps), logits.argmax(dim=-1))  # top_k=1 is greedy


def test_gumbel_sampling_follows_the_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    seeds = torch.arange(20_000)
    noise = gumbel_noise(seeds, torch.zeros_like(seeds), 4)  # one draw per seed
    picks = (logits + noise).argmax(dim=-1)
    freq = torch.bincount(picks, minlength=4).float() / len(seeds)
    assert torch.allclose(freq, logits.softmax(dim=-1)[0], atol=0.015)
    assert torch.equal(noise, gumbel_noise(seeds, torch.zeros_like(seeds), 4))  # a pure function
