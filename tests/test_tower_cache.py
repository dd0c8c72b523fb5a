"""The trainer's cache of a frozen audio tower gives exactly the tokens the tower computes."""

from __future__ import annotations

import torch

from af2.config import tiny_config
from af2.model.af2 import AF2Model
from af2.train.tower_cache import TowerCache


def test_cached_tokens_equal_the_tower_and_padding_stays_zero():
    torch.manual_seed(0)
    model = AF2Model(tiny_config(max_windows=3)).eval()
    S = model.cfg.audio.window_samples
    windows = torch.randn(2, 3, S) * 0.1
    windows[1, 0] = windows[0, 1]  # the same window in two rows: computed once
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    cache = TowerCache()
    with torch.no_grad():
        want = model.encode_windows(windows, mask)
    first = cache.tokens(model, windows, mask)
    assert cache.misses == 4 and cache.hits == 1  # 5 real windows, one repeated
    second = cache.tokens(model, windows, mask)
    assert cache.hits == 6
    for got in (first, second):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        assert got[1, 2 * 64:].abs().sum() == 0  # the padded window
