"""The model-independent training engine on a toy module: configs and recipes, accumulation and
clipping, checkpoints and exact resume after SIGKILL, torchrun/gloo parity, stages, LoRA."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from af2.train.checkpoint import latest_checkpoint, load_weights
from af2.train.config import OptimConfig, TrainConfig, load_train_config, recipe_names
from af2.train.engine import Task, train
from af2.train.lora import LoRALinear, add_lora, merge_lora
from af2.train.metrics import read_metrics
from af2.train.schedule import lr_factor
from af2.train.stages import apply_stage, train_mode
from af2.train.config import LoRAConfig

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

# A toy model whose parameter names follow AF2Model's groups, and a task it can learn.
TOY = textwrap.dedent('''
    import torch
    from torch import nn

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.xattn = nn.Linear(8, 8)
            self.decoder_layer = nn.Linear(8, 8)

        def forward(self, h):  # called as a module, so FSDP2's per-layer unshard hooks run
            return h + torch.tanh(self.decoder_layer(h) + self.xattn(h))

    class Inner(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens = nn.Embedding(4, 8)
            self.layers = nn.ModuleList([Layer(), Layer()])

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = Inner()
            self.lm_head = nn.Linear(8, 4, bias=False)
            self.lm_head.weight = self.model.embed_tokens.weight

    class Toy(nn.Module):
        def __init__(self, dropout=0.1, norm=nn.LayerNorm):
            super().__init__()
            self.audio_encoder = nn.Sequential(nn.Linear(6, 8), norm(8))
            self.audio_transformer = nn.Sequential(nn.Linear(8, 8), nn.Dropout(dropout))
            self.lm = LM()

        def forward(self, x):
            h = self.audio_transformer(torch.tanh(self.audio_encoder(x)))
            for layer in self.lm.model.layers:
                h = layer(h)
            return self.lm.lm_head(h)

    def toy_data(n=64, seed=0):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, 6, generator=g)
        y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
        return [(x[i], y[i]) for i in range(n)]

    def collate(samples):
        return {"x": torch.stack([s[0] for s in samples]), "y": torch.stack([s[1] for s in samples])}

    def loss(model, batch):
        return nn.functional.cross_entropy(model(batch["x"]), batch["y"])

    def toy_task(groups=("clap", "audio_transformer", "xattn", "embeddings"), dropout=0.1):
        from af2.train.engine import Task
        from af2.train.stages import apply_stage
        torch.manual_seed(0)
        model = Toy(dropout)
        apply_stage(model, groups)
        return Task(model=model, dataset=toy_data(), collate=collate, loss=loss)
''')
exec(compile(TOY, "toy", "exec"))  # the same toy in-process and in the subprocess scripts

TRAINABLE = ("clap", "audio_transformer", "xattn", "embeddings")


def toy_cfg(tmp_path: Path, **kw) -> TrainConfig:
    base = TrainConfig(stage="toy", trainable=TRAINABLE, batch_size=4, grad_accum=2, max_steps=10, precision="fp32",
                       optim=OptimConfig(lr=3e-2, warmup_steps=2), output_dir=str(tmp_path / "run"),
                       save_interval=3, progress=False)
    return replace(base, **kw)


def test_every_recipe_loads_and_overrides_apply():
    names = recipe_names()
    assert {"stage0_afclap", "stage1_pretrain", "stage2_finetune", "stage3_long"} <= set(names)
    cfgs = {n: load_train_config(n) for n in names}
    assert cfgs["stage1_pretrain"].windows == 3 and cfgs["stage1_pretrain"].optim.lr == 1e-4
    assert "clap" not in cfgs["stage1_pretrain"].trainable
    assert cfgs["stage2_finetune"].windows == 12 and cfgs["stage2_finetune"].optim.lr == 2e-5
    assert "clap" in cfgs["stage2_finetune"].trainable
    assert cfgs["stage3_long"].windows == 30 and "clap" not in cfgs["stage3_long"].trainable
    assert cfgs["stage0_afclap"].kind == "clap"
    cfg = load_train_config("stage1_pretrain", {"optim.lr": 3e-4, "batch_size": 2})
    assert cfg.optim.lr == 3e-4 and cfg.batch_size == 2


def test_unknown_keys_fail_with_a_suggestion(tmp_path):
    with pytest.raises(ValueError, match="did you mean 'grad_accum'"):
        load_train_config("stage1_pretrain", {"grad_acum": 4})
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  warmup_step: 3\n")
    with pytest.raises(ValueError, match=r"bad.yaml.*did you mean 'warmup_steps'"):
        load_train_config(str(bad))
    with pytest.raises(ValueError, match="precision"):
        load_train_config("stage1_pretrain", {"precision": "fp8"})


def test_schedules():
    const = OptimConfig(warmup_steps=4)
    assert [lr_factor(s, const, 10) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    cos = OptimConfig(warmup_steps=0, schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(0, cos, 10) == pytest.approx(1.0) and lr_factor(10, cos, 10) == pytest.approx(0.1)
    assert lr_factor(5, cos, 10) == pytest.approx(0.55)


def test_accumulation_equals_the_large_batch_and_clips_once(tmp_path):
    """2 micro-batches of 4 then one clip == 1 batch of 8: same losses, same weights."""
    a = train(toy_cfg(tmp_path / "a", max_steps=4, optim=OptimConfig(lr=3e-2, warmup_steps=2, clip_norm=0.05)),
              toy_task())
    b = train(toy_cfg(tmp_path / "b", max_steps=4, batch_size=8, grad_accum=1,
                      optim=OptimConfig(lr=3e-2, warmup_steps=2, clip_norm=0.05)), toy_task())
    assert a.losses == pytest.approx(b.losses, abs=1e-5)
    norms = [r["grad_norm"] for r in read_metrics(a.run_dir / "metrics.jsonl")]
    assert all(n > 0.05 for n in norms)  # the clip was active at every step


def test_training_writes_checkpoints_metrics_and_plot(tmp_path):
    result = train(toy_cfg(tmp_path, max_steps=30, save_interval=10), toy_task())
    assert result.losses[-1] < 0.5 * result.losses[0], result.losses
    ckpt = latest_checkpoint(result.run_dir)
    assert ckpt.name == "step_00000030"
    assert {p.name for p in ckpt.iterdir()} == {"model.safetensors", "trainer.pt", "config.yaml"}
    assert load_train_config(str(ckpt / "config.yaml")).max_steps == 30
    rows = read_metrics(result.run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 31))
    assert {"loss", "lr", "grad_norm", "samples_per_s"} <= set(rows[0])
    assert (result.run_dir / "loss.png").read_bytes()[:4] == b"\x89PNG"
    fresh = Toy()
    load_weights(fresh, ckpt)  # strict, tied lm_head restored from embed_tokens
    assert fresh.lm.lm_head.weight is fresh.lm.model.embed_tokens.weight
    trained = result.run_dir / "checkpoints" / "step_00000030" / "model.safetensors"
    assert trained.stat().st_size > 0 and not any(p.name.startswith(".") for p in ckpt.parent.iterdir())


SCRIPT = TOY + textwrap.dedent('''
    import os, signal, sys
    from af2.train.config import OptimConfig, TrainConfig
    from af2.train.engine import train
    out, kill_at, resume, batch = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])
    dropout = float(sys.argv[5])
    strategy = sys.argv[6] if len(sys.argv) > 6 else "ddp"
    cfg = TrainConfig(stage="toy", trainable=("clap", "audio_transformer", "xattn", "embeddings"), strategy=strategy,
                      batch_size=batch, grad_accum=2, max_steps=10, precision="fp32",
                      optim=OptimConfig(lr=3e-2, warmup_steps=2), output_dir=out, save_interval=3,
                      progress=False, resume=resume)
    def killer(step, record):
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    train(cfg, toy_task(dropout=dropout), callbacks=[killer])
''')


def _run_script(tmp_path, *args, launcher=()):
    script = tmp_path / "toy_train.py"
    script.write_text(SCRIPT)
    return subprocess.run([*launcher, str(script), *map(str, args)], env=ENV, capture_output=True, text=True,
                          timeout=120)


def test_sigkill_then_resume_logs_the_same_losses(tmp_path):
    whole = _run_script(tmp_path, tmp_path / "whole", -1, 0, 4, 0.1, launcher=(sys.executable,))
    assert whole.returncode == 0, whole.stderr
    killed = _run_script(tmp_path, tmp_path / "killed", 7, 0, 4, 0.1, launcher=(sys.executable,))
    assert killed.returncode == -signal.SIGKILL
    assert latest_checkpoint(tmp_path / "killed").name == "step_00000006"
    assert len(read_metrics(tmp_path / "killed" / "metrics.jsonl")) == 7  # step 7 logged, not checkpointed
    resumed = _run_script(tmp_path, tmp_path / "killed", -1, 1, 4, 0.1, launcher=(sys.executable,))
    assert resumed.returncode == 0, resumed.stderr
    a = read_metrics(tmp_path / "whole" / "metrics.jsonl")
    b = read_metrics(tmp_path / "killed" / "metrics.jsonl")
    assert [r["step"] for r in b] == list(range(1, 11))
    for ra, rb in zip(a, b):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-6, abs=1e-7), (ra, rb)
        assert rb["lr"] == ra["lr"]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_torchrun_two_ranks_match_one_process(tmp_path, strategy):
    """Global micro-batch 4: one process with batch 4 vs 2 gloo ranks with batch 2 each (DDP, or
    FSDP2 sharding every decoder layer and the root)."""
    single = _run_script(tmp_path, tmp_path / "one", -1, 0, 4, 0.0, launcher=(sys.executable,))
    assert single.returncode == 0, single.stderr
    torchrun = Path(sys.executable).with_name("torchrun")
    double = _run_script(tmp_path, tmp_path / "two", -1, 0, 2, 0.0, strategy,
                         launcher=(str(torchrun), "--standalone", "--nproc_per_node", "2"))
    assert double.returncode == 0, double.stderr[-3000:]
    a = read_metrics(tmp_path / "one" / "metrics.jsonl")
    b = read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert len(a) == len(b) == 10
    # Tolerance 1e-4 (absolute, losses are ~1): only the order of float reductions differs, as DDP
    # averages two half-batch gradients. Dropout is off: each rank draws its own masks.
    for ra, rb in zip(a, b):
        assert rb["loss"] == pytest.approx(ra["loss"], abs=1e-4), (ra, rb)


def test_frozen_modules_stay_in_eval_and_lora_merges():
    torch.manual_seed(0)
    model = Toy(norm=nn.BatchNorm1d)
    apply_stage(model, ("audio_transformer", "xattn"))
    train_mode(model)
    assert not model.audio_encoder.training and model.audio_transformer.training
    model.train()  # a plain train() too: the hook puts the frozen tower back in eval before it runs
    stats = model.audio_encoder[1].running_mean.clone()
    model(torch.randn(4, 6))
    assert not model.audio_encoder.training and torch.equal(stats, model.audio_encoder[1].running_mean)
    names = add_lora(model, LoRAConfig(enabled=True, rank=2, targets=("decoder_layer",)))
    assert names == ["lm.model.layers.0.decoder_layer", "lm.model.layers.1.decoder_layer"]
    trainable = apply_stage(model, ("lora",))
    assert trainable.count == 2 * (2 * 8 + 8 * 2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_b.weight.normal_()
    model.eval()
    x = torch.randn(4, 6)
    before = model(x)
    assert merge_lora(model) == 2
    assert torch.allclose(model(x), before, atol=1e-5)


def test_bf16_autocast_trains(tmp_path):
    """precision=bf16 runs the forward under bf16 autocast; the fp32 master weights still learn."""
    result = train(toy_cfg(tmp_path, precision="bf16", max_steps=10, save_interval=10), toy_task(dropout=0.0))
    assert all(torch.isfinite(torch.tensor(result.losses)))
    assert result.losses[-1] < result.losses[0]


def test_resume_with_a_trainable_tensor_that_never_gets_a_gradient(tmp_path):
    """HTSAT keeps classification heads that the forward never computes: trainable in the CLAP stage, they
    get no AdamW state. A resume restores the others and leaves those without state (it used to refuse)."""
    def task():
        t = toy_task()
        t.model.audio_encoder.register_parameter("head", nn.Parameter(torch.zeros(3)))  # trainable, never used
        return t
    first = train(toy_cfg(tmp_path, max_steps=4, save_interval=2), task())
    resumed = train(toy_cfg(tmp_path, max_steps=6, save_interval=2, resume=True), task())
    whole = train(toy_cfg(tmp_path / "whole", max_steps=6, save_interval=2), task())
    assert resumed.losses == pytest.approx(whole.losses[4:], rel=1e-6), (first.losses, resumed.losses)


def test_resume_refuses_a_checkpoint_whose_trainable_set_differs(tmp_path):
    train(toy_cfg(tmp_path, max_steps=2, save_interval=2), toy_task())
    with pytest.raises(Exception, match="trainable set changed"):
        train(toy_cfg(tmp_path, max_steps=4, save_interval=2, resume=True,
                      trainable=("audio_transformer", "xattn")), toy_task(groups=("audio_transformer", "xattn")))
