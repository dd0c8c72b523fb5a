import numpy as np
import pytest

from af2.data.blend import blend_counts, blend_epoch, epoch_indices, pass_order
from af2.errors import ConfigError


def _reference(name, n, weight, global_weight, epoch):
    """Spelled out the slow way: keys shuffled with the name's seed, reshuffled on each wrap."""
    w = global_weight * weight
    out = []
    for pos in range(int(epoch * n * w), int((epoch + 1) * n * w)):
        k = pos // n
        seed = sum(ord(c) for c in (name if k == 0 else f"{name}-epoch-{k}"))
        order = list(range(n))
        np.random.default_rng(seed=seed).shuffle(order)
        out.append(order[pos % n])
    return out


@pytest.mark.parametrize("n, weight, gw, epoch", [(10, 1.0, 0.2, 0), (10, 1.0, 0.2, 3), (7, 3.0, 0.5, 1),
                                                  (100, 2.5, 0.005, 57), (5, 0.5, 1.0, 4)])
def test_matches_the_spelled_out_rule(n, weight, gw, epoch):
    got = epoch_indices("Clotho-AQA-AQA/train", n, weight, gw, epoch).tolist()
    assert got == _reference("Clotho-AQA-AQA/train", n, weight, gw, epoch)


def test_weight_is_number_of_passes():
    name, n, gw = "A/train", 40, 0.1
    seen = np.concatenate([epoch_indices(name, n, 2.0, gw, e) for e in range(10)])  # 1/gw epochs
    assert len(seen) == 2 * n
    assert np.array_equal(np.bincount(seen, minlength=n), np.full(n, 2))  # each item exactly twice


def test_first_pass_uses_the_name_seed_and_the_wrap_reshuffles():
    n = 50
    assert np.array_equal(pass_order("X", n, 0), np.random.default_rng(sum(map(ord, "X"))).permutation(n))
    assert not np.array_equal(pass_order("X", n, 0), pass_order("X", n, 1))
    assert np.array_equal(pass_order("X", n, 2), np.random.default_rng(sum(map(ord, "X-epoch-2"))).permutation(n))


def test_blend_epoch_and_counts():
    sizes, weights = {"a": 10, "b": 20}, {"a": 1.0, "b": 0.5}
    pairs = blend_epoch(sizes, weights, 0.5, 0)
    assert [p for p in pairs if p[0] == "a"] == [("a", int(i)) for i in epoch_indices("a", 10, 1.0, 0.5, 0)]
    assert blend_counts(sizes, weights, 0.5, [0, 1]) == {"a": 10, "b": 10}
    with pytest.raises(ConfigError, match="no weight"):
        blend_epoch({"c": 3}, weights, 0.5, 0)
