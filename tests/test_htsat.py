"""HTSAT (AF-CLAP audio tower): parity with the official module on the golden fixture, exact
checkpoint key layout at the real size, batching and train-mode fusion invariants."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from af2.config import HTSATConfig, tiny_config
from af2.model.htsat import HTSAT, clap_state_dict_from_official, random_longer_flags

FIXTURES = Path("/work/shared/fixtures")
GOLDEN = FIXTURES / "af2-golden-a"
MANIFEST = FIXTURES / "af2-0.5b-param-manifest.json"
SAFE_PREFIX = "clap.nvclap."
ATOL = RTOL = 1e-4  # fixture README: recommended criterion for clap_tokens/*


def _assert_close(name: str, actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape, name
    err = (actual - expected).abs()
    bound = ATOL + RTOL * expected.abs()
    print(f"{name}: max abs error {err.max().item():.3g}")
    assert bool((err <= bound).all()), f"{name}: max abs error {err.max().item():.3g}"
    return err.max().item()


@pytest.fixture(scope="module")
def safe_clap_state() -> dict[str, torch.Tensor]:
    sd = load_file(GOLDEN / "checkpoint/safe_ckpt/model_chunk_0.safetensors")
    return {k[len(SAFE_PREFIX):]: v for k, v in sd.items() if k.startswith(SAFE_PREFIX)}


@pytest.fixture(scope="module")
def expected() -> dict[str, torch.Tensor]:
    return load_file(GOLDEN / "expected.safetensors")


@pytest.fixture(scope="module")
def golden_htsat(safe_clap_state) -> HTSAT:
    model = HTSAT(tiny_config().htsat)
    result = model.load_state_dict(safe_clap_state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return model.eval()


def test_fixture_config_is_tiny_config():
    cfg = json.loads((GOLDEN / "config.json").read_text())["htsat"]
    tiny = tiny_config().htsat
    for field in dataclasses.fields(HTSATConfig):
        value = getattr(tiny, field.name)
        assert cfg[field.name] == (list(value) if isinstance(value, tuple) else value), field.name
    assert cfg["num_features"] == tiny.num_features and cfg["freq_ratio"] == tiny.freq_ratio


@pytest.mark.parametrize("case", ["short", "long", "stereo"])
def test_golden_clap_tokens(golden_htsat, expected, case):
    with torch.no_grad():
        tokens = golden_htsat(expected[f"mel/{case}"])
    _assert_close(f"clap_tokens/{case}", tokens, expected[f"clap_tokens/{case}"])


def test_golden_zero_window(golden_htsat, expected):
    silent_mel = torch.full((1, 1001, 64), -100.0)  # 10*log10(1e-10): the dB floor
    with torch.no_grad():
        tokens = golden_htsat(silent_mel)[0]
    _assert_close("clap_tokens/zero_window", tokens, expected["clap_tokens/zero_window"])


def test_constructed_buffers_equal_official(safe_clap_state):
    """Relative-position indices and shifted-window masks are built, not learned: ours must equal
    the ones the official constructor stored in the checkpoint."""
    built = HTSAT(tiny_config().htsat).state_dict()
    names = [k for k in built if k.endswith(("relative_position_index", "attn_mask"))]
    assert any(k.endswith("attn_mask") for k in names)
    for name in names:
        assert built[name].dtype == safe_clap_state[name].dtype, name
        assert torch.equal(built[name], safe_clap_state[name]), name


def test_official_clap_checkpoint_filter_and_parity(expected):
    ckpt = torch.load(GOLDEN / "checkpoint/clap_ckpt/epoch_16.pt", weights_only=True)
    state_dict, ignored = clap_state_dict_from_official(ckpt["state_dict"])
    assert ignored == sorted([
        "module.text_branch.encoder.block.0.layer.0.SelfAttention.q.weight", "module.text_branch.fake.weight",
        "module.text_projection.0.weight", "module.logit_scale_a", "module.logit_scale_t",
        "module.audio_projection.0.weight", "module.audio_projection.0.bias",
        "module.audio_projection.2.weight", "module.audio_transform.sequential.0.weight"])
    assert len(state_dict) + len(ignored) == len(ckpt["state_dict"])
    model = HTSAT(tiny_config().htsat)
    model.load_state_dict(state_dict, strict=True)
    with torch.no_grad():
        tokens = model.eval()(expected["mel/short"])
    _assert_close("clap_tokens_clapckpt_only/short", tokens, expected["clap_tokens_clapckpt_only/short"])
    # The two HTSAT draws differ, so this really tests the clap_ckpt weights.
    assert not torch.allclose(expected["clap_tokens_clapckpt_only/short"], expected["clap_tokens/short"], atol=1e-2)


def test_real_size_keys_shapes_and_parameter_count():
    manifest = json.loads(MANIFEST.read_text())
    official = {e["name"][len(SAFE_PREFIX):]: e for e in manifest["state_dict"] if e["name"].startswith(SAFE_PREFIX)}
    with torch.device("meta"):
        model = HTSAT(HTSATConfig())
    ours = model.state_dict()
    assert list(ours) == list(official)  # same keys, same order
    for name, tensor in ours.items():
        assert list(tensor.shape) == official[name]["shape"], name
        assert str(tensor.dtype).removeprefix("torch.") == official[name]["dtype"], name
    params = dict(model.named_parameters())
    assert {k for k, e in official.items() if e["kind"] == "parameter"} == set(params)
    assert sum(p.numel() for p in params.values()) == manifest["unique_parameter_count_by_submodule"]["clap"]
    assert sum(p.numel() for p in params.values()) == 278_770_007


def test_batched_equals_single(golden_htsat, expected):
    mel = torch.cat([expected["mel/long"], expected["mel/stereo"]])  # (5, 1001, 64)
    with torch.no_grad():
        batched = golden_htsat(mel)
        singles = torch.cat([golden_htsat(mel[i:i + 1]) for i in range(mel.shape[0])])
    assert (batched - singles).abs().max().item() <= 1e-6


def test_explicit_longer_only_changes_flagged_windows(golden_htsat, expected):
    mel = expected["mel/long"]
    longer = torch.tensor([False, True, False])
    with torch.no_grad():
        plain = golden_htsat(mel)
        fused = golden_htsat(mel, longer=longer)
    # Unflagged windows: same maths; 4-channel vs 1-channel kernels may round differently.
    assert torch.allclose(fused[~longer], plain[~longer], atol=1e-5, rtol=0)
    assert (fused[longer] - plain[longer]).abs().max().item() > 1e-3


def _perturb_fusion(model: HTSAT) -> None:
    with torch.no_grad():
        for p in [*model.patch_embed.mel_conv2d.parameters(), *model.patch_embed.fusion_model.parameters()]:
            p.add_(torch.randn_like(p))


def test_eval_ignores_fusion_modules(golden_htsat, expected):
    mel = expected["mel/stereo"]
    model = HTSAT(tiny_config().htsat)
    model.load_state_dict(golden_htsat.state_dict(), strict=True)
    model.eval()
    _perturb_fusion(model)
    with torch.no_grad():
        assert torch.equal(model(mel), golden_htsat(mel))


def test_random_longer_flags_one_per_sample():
    flags = random_longer_flags([3, 1, 2], generator=torch.Generator().manual_seed(0))
    assert flags.dtype == torch.bool and flags.shape == (6,)
    assert [int(flags[s].sum()) for s in (slice(0, 3), slice(3, 4), slice(4, 6))] == [1, 1, 1]
    with pytest.raises(ValueError, match="positive"):
        random_longer_flags([2, 0])


@pytest.mark.parametrize("windows_per_sample", [None, [2, 1]])
def test_train_mode_fusion_gets_gradients_and_is_seeded(expected, windows_per_sample):
    torch.manual_seed(0)
    model = HTSAT(tiny_config().htsat).train()
    mel = expected["mel/long"]  # 3 windows
    longer = None if windows_per_sample is None else random_longer_flags(
        windows_per_sample, torch.Generator().manual_seed(1))

    def run() -> torch.Tensor:
        return model(mel, longer=longer, generator=torch.Generator().manual_seed(2))

    out = run()
    assert out.shape == (3, 64, tiny_config().htsat.num_features) and torch.isfinite(out).all()
    out.square().mean().backward()
    for module in (model.patch_embed.mel_conv2d, model.patch_embed.fusion_model, model.layers[0]):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert model.spectrogram_extractor.stft.conv_real.weight.grad is None  # never computed
    with torch.no_grad():
        assert torch.equal(run(), run())  # every random draw comes from the generator
        assert not torch.allclose(run(), model(mel, longer=longer, generator=torch.Generator().manual_seed(3)))


def test_bad_input_shape_fails_loudly():
    model = HTSAT(tiny_config().htsat)
    with pytest.raises(ValueError, match="log-mel windows"):
        model(torch.zeros(1001, 64))
    with pytest.raises(ValueError, match="longer"):
        model(torch.zeros(2, 1001, 64), longer=torch.tensor([True]))
