"""Stage 0 → 1 → 2 → 3 on CPU with a tiny AF2 on generated audio: each stage loads the previous
checkpoint, its trainable set is asserted, and a toy task (which of two tones comes first) is
learnt well above chance on held-out clips."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from af2.audio import make_windows, pad_windows
from af2.tokens import inference_prompt, special_token_ids
from af2.train.checkpoint import resolve_weights
from af2.model.clap import contrastive_loss
from af2.train.config import OptimConfig, TrainConfig, load_train_config
from af2.train.engine import train
from af2.train.negatives import hard_negatives
from af2.train.run import build_alm_task, build_clap_task
from af2.train.stages import GROUP_PATTERNS

SR = 16_000
TONES = {"low": 300.0, "high": 2000.0}
PROMPT = "Which tone comes first?"
# 2-s windows, 16 mel bins and a 64² HTSAT "image": every code path of AF2, ~0.06 s per step.
MICRO = {"audio": {"window_seconds": 2.0, "n_mels": 16},
         "htsat": {"spec_size": 64, "mel_bins": 16, "embed_dim": 32, "depths": [1, 1], "num_heads": [1, 2],
                   "num_classes": 4, "unused_stft_n_fft": 64},
         "audio_transformer": {"n_layers": 1, "n_head": 1, "d_inner": 64}}
BERT = {"model_type": "bert", "vocab_size": 512, "hidden_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128}


def char_tokenizer(path: Path) -> Path:
    """A 512-entry character-level base tokenizer (AF2's 4 specials then make 516 = tiny_config)."""
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789 .,?!'-")
    vocab = {t: i for i, t in enumerate(["[UNK]", "[PAD]", *chars])}
    vocab.update({f"[unused{i}]": i for i in range(len(vocab), 500)})
    vocab["<|endoftext|>"] = 500
    vocab.update({f"[unused{i}]": i for i in range(501, 512)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   eos_token="<|endoftext|>")
    fast.save_pretrained(str(path))
    return path


def tone_clip(first: str, second: str, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(SR) / SR
    halves = [rng.uniform(0.3, 0.8) * np.sin(2 * np.pi * TONES[k] * rng.uniform(0.95, 1.05) * t + rng.uniform(0, 6))
              for k in (first, second)]
    return (np.concatenate(halves) + 0.01 * rng.standard_normal(2 * SR)).astype(np.float32)


def write_split(root: Path, split: str, n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    (root / "audio" / split).mkdir(parents=True, exist_ok=True)
    data, answers = {}, []
    for i in range(n):
        first = ("low", "high")[i % 2]
        second = "high" if first == "low" else "low"
        sf.write(root / "audio" / split / f"{i}.wav", tone_clip(first, second, rng), SR)
        data[str(i)] = {"name": f"{i}.wav", "prompt": PROMPT, "output": first, "duration": 2.0,
                        "captions": [f"a {first} tone then a {second} tone",
                                     f"a {first} tone followed by a {second} tone"]}
        answers.append(first)
    (root / "tones").mkdir(exist_ok=True)
    (root / "tones" / f"{split}.json").write_text(json.dumps(
        {"split": split, "split_path": f"audio/{split}", "flamingo_task": "tones-AQA", "total_num": n, "data": data}))
    return answers


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("curriculum")
    write_split(root, "train", 64, seed=1)
    write_split(root, "test", 40, seed=2)
    return root, char_tokenizer(root / "tokenizer")


def stage_cfg(root: Path, tok: Path, recipe: str, **kw) -> TrainConfig:
    cfg = load_train_config(recipe, {"model": "tiny", "model_overrides": MICRO, "tokenizer": str(tok),
                                     "precision": "fp32", "progress": False, "batch_size": 8, "grad_accum": 1,
                                     "output_dir": str(root / recipe), "data.dataset_file_root": str(root),
                                     "data.data_root": str(root), "data.blend": {"tones/train": 1.0},
                                     "data.global_weight": 1.0, "audio_tower_checkpoint": "",
                                     "init_checkpoint": "", "base_lm": "",
                                     # The official 0.1 attention dropout slows this 120-step toy
                                     # (stage 1 held-out 0.70 instead of 0.925).
                                     "audio_attn_dropout": 0.0})
    return replace(cfg, **kw)


def expected_trainable(model, groups) -> tuple[set[str], int]:
    names = {n for n, _ in model.named_parameters() if any(GROUP_PATTERNS[g](n) for g in groups)}
    return names, sum(p.numel() for n, p in model.named_parameters() if n in names)


def held_out_accuracy(model, root: Path, tok_dir: Path) -> float:
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tok_dir))
    from af2.tokens import add_special_tokens
    add_special_tokens(tokenizer)
    cfg = model.cfg.audio
    answers = [json.loads((root / "tones" / "test.json").read_text())["data"][str(i)]["output"] for i in range(40)]
    windows, mask = pad_windows([make_windows(sf.read(root / "audio" / "test" / f"{i}.wav")[0], cfg)
                                 for i in range(40)], cfg.max_windows)
    ids = tokenizer([inference_prompt(PROMPT)] * 40, return_tensors="pt", add_special_tokens=False)["input_ids"]
    choice = torch.tensor([tokenizer.convert_tokens_to_ids("l"), tokenizer.convert_tokens_to_ids("h")])
    model.eval()
    with torch.no_grad():
        logits = model(windows, mask, ids).logits[:, -1, choice]  # first answer character: l(ow) or h(igh)
    predicted = ["low" if i == 0 else "high" for i in logits.argmax(-1).tolist()]
    return float(np.mean([p == a for p, a in zip(predicted, answers)]))


def test_hard_negatives_and_multi_positive_loss():
    assert hard_negatives("A dog barks then a car passes", 1) == ["A car passes then a dog barks"]
    assert "a quiet dog and a loud cat" in hard_negatives("a loud dog and a quiet cat", 4)
    assert "three beeps" in hard_negatives("two beeps", 4) and hard_negatives("silence", 4) == []
    audio = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    pos = audio.repeat_interleave(2, dim=0)  # both paraphrases identical to the audio
    neg = torch.nn.functional.normalize(torch.randn(3, 2, 8), dim=-1)
    valid = torch.tensor([[True, False]] * 3)
    good = contrastive_loss(audio, pos, neg, valid, torch.tensor(10.0))
    # A hard negative equal to the positive must raise the loss: it enters the denominator.
    worse = contrastive_loss(audio, pos, audio[:, None].expand(3, 2, 8), valid, torch.tensor(10.0))
    assert worse > good + 0.3


def test_collator_applies_template_and_masking(workspace):
    root, tok = workspace
    cfg = stage_cfg(root, tok, "stage1_pretrain")
    task = build_alm_task(cfg)
    batch = task.collate([task.dataset[0], task.dataset[1]])
    assert batch["windows"].shape == (2, 1, 32_000) and batch["window_mask"].tolist() == [[1.0], [1.0]]
    ids = special_token_ids(task.collate.tokenizer)
    text = task.collate.tokenizer.decode(batch["input_ids"][0])
    assert text.replace(" ", "") == "<audio>whichtonecomesfirst?<SEP>low<|endofchunk|><|endoftext|>".replace(" ", "")
    kept = batch["labels"][0][batch["labels"][0] != -100].tolist()
    assert kept[-2:] == [ids.end_of_chunk, ids.eos] and len(kept) == len("low") + 2


def test_broken_sample_policy(workspace, tmp_path):
    root, tok = workspace
    cfg = stage_cfg(root, tok, "stage1_pretrain", max_steps=2, output_dir=str(tmp_path / "run"))
    task = build_alm_task(cfg)
    broken = replace(task.dataset.items[3], name="missing.wav")
    task.dataset.items = [broken, *task.dataset.items[1:]]
    with pytest.raises(RuntimeError, match="sample 0 is broken"):
        train(replace(cfg, max_steps=8), task)
    skip = replace(cfg, max_steps=8, data=replace(cfg.data, broken_samples="skip"), output_dir=str(tmp_path / "skip"))
    result = train(skip, task)
    assert result.skipped == 1  # counted, and no other sample stood in for it
    assert json.loads((tmp_path / "skip" / "metrics.jsonl").read_text().splitlines()[-1])["skipped"] == 1


def test_curriculum_stage0_to_stage3(workspace):
    root, tok = workspace
    stages = {}
    # Stage 0: AF-CLAP. Hard negatives of "a low tone then a high tone" are the swapped order.
    cfg0 = stage_cfg(root, tok, "stage0_afclap", max_steps=12, save_interval=12,
                     clap=replace(load_train_config("stage0_afclap").clap, text_encoder_config=BERT, tokenizer=str(tok),
                                  embed_dim=32, hard_negatives=2),
                     optim=OptimConfig(lr=1e-3, warmup_steps=2, schedule="cosine"))
    task0 = build_clap_task(cfg0)
    names0, count0 = expected_trainable(task0.model, ("clap", "text_tower", "projections"))
    assert {n for n, p in task0.model.named_parameters() if p.requires_grad} == names0
    result0 = train(cfg0, task0)
    assert result0.losses[-1] < result0.losses[0]
    tower = load_file(str(result0.checkpoint / "audio_tower.safetensors"))

    # Stages 1-3. Stage 1's LR is raised from the official 1e-4 so the toy converges in a few dozen steps;
    # stages 2 and 3 use the official 2e-5.
    plan = [("stage1_pretrain", 120, 3e-3, ("audio_transformer", "xattn", "embeddings"), 3),
            ("stage2_finetune", 6, 2e-5, ("clap", "audio_transformer", "xattn", "embeddings"), 12),
            ("stage3_long", 6, 2e-5, ("audio_transformer", "xattn", "embeddings"), 30)]
    previous = {"audio_tower_checkpoint": str(root / "stage0_afclap")}
    accuracy = {}
    for recipe, steps, lr, groups, windows in plan:
        cfg = stage_cfg(root, tok, recipe, max_steps=steps, save_interval=steps, **previous,
                        optim=OptimConfig(lr=lr, warmup_steps=5, weight_decay=0.0))
        assert cfg.trainable == groups and cfg.windows == windows
        task = build_alm_task(cfg)
        model = task.model
        names, count = expected_trainable(model, groups)
        trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
        assert set(trainable) == names and sum(trainable.values()) == count
        assert not any(n.startswith("lm.") and ".xattn." not in n and n != "lm.model.embed_tokens.weight"
                       for n in trainable)  # the LM itself stays frozen
        stages[recipe] = count
        if recipe == "stage1_pretrain":  # stage 0's audio tower was loaded
            assert all(torch.equal(model.audio_encoder.state_dict()[k], v) for k, v in tower.items())
        else:  # the previous stage's weights were loaded
            prev = load_file(str(resolve_weights(previous["init_checkpoint"])))
            assert torch.equal(model.lm.model.embed_tokens.weight, prev["lm.model.embed_tokens.weight"])
        before = {k: v.clone() for k, v in model.audio_encoder.state_dict().items()}
        result = train(cfg, task)
        assert result.losses[-1] < result.losses[0] or recipe != "stage1_pretrain"
        encoder_changed = any(not torch.equal(before[k], v) for k, v in model.audio_encoder.state_dict().items())
        assert encoder_changed == ("clap" in groups)  # frozen CLAP: no update, not even BatchNorm statistics
        accuracy[recipe] = held_out_accuracy(model, root, tok)
        previous = {"init_checkpoint": str(root / recipe)}

    n_clap = sum(p.numel() for n, p in task0.model.named_parameters() if n.startswith("audio_encoder."))
    assert stages["stage2_finetune"] == stages["stage1_pretrain"] + n_clap
    assert stages["stage3_long"] == stages["stage1_pretrain"]
    print(f"held-out accuracy (chance 0.50): {accuracy}; trainable: {stages}, stage 0: {count0}")
    # Chance is 0.5 (two balanced answers, 40 held-out clips; 30/40 has p < 0.001 under chance).
    # Seen here: stage 1 0.925, stage 2 0.825, stage 3 0.80 (stage 2 re-estimates the trainable
    # CLAP's BatchNorm statistics, which costs a little on this toy).
    assert accuracy["stage1_pretrain"] >= 0.85, accuracy
    assert accuracy["stage2_finetune"] >= 0.75 and accuracy["stage3_long"] >= 0.75, accuracy


def test_af2_train_cli_with_pretrained_base_lm_and_lora(workspace, tmp_path, capsys):
    """`af2 train` end to end: the base LM's pretrained weights become the frozen LM, LoRA adapters
    train and are saved separately, metrics and checkpoints are written."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from af2.cli import main
    from af2.config import tiny_config

    root, tok = workspace
    lm_cfg = dict(tiny_config().lm)
    base_dir = tmp_path / "base-lm"
    torch.manual_seed(5)
    base = AutoModelForCausalLM.from_config(AutoConfig.for_model(lm_cfg.pop("model_type"), **lm_cfg))
    base.save_pretrained(str(base_dir))
    PreTrainedTokenizerFast.from_pretrained(str(tok)).save_pretrained(str(base_dir))
    out = tmp_path / "run"
    rc = main(["train", "--config", "stage1_pretrain", "model=tiny", f"model_overrides={json.dumps(MICRO)}",
               f"base_lm={base_dir}", "lora.enabled=true",
               "trainable=[audio_transformer,xattn,embeddings,lora]", "max_steps=3", "save_interval=3",
               "batch_size=4", "grad_accum=1", "precision=fp32", "progress=false", f"output_dir={out}",
               f"data.dataset_file_root={root}", f"data.data_root={root}", "data.blend={tones/train: 1.0}",
               "data.global_weight=1.0", "audio_tower_checkpoint=\"\""])
    assert rc == 0, capsys.readouterr().err
    ckpt = resolve_weights(out).parent
    weights = load_file(str(ckpt / "model.safetensors"))
    adapters = load_file(str(ckpt / "lora.safetensors"))
    assert adapters and all("lora" in k for k in adapters)
    # The checkpoint is a model folder that names its base LM and leaves the frozen LM out ...
    config = json.loads((ckpt / "config.json").read_text())
    assert config["base_lm"]["name"] == str(base_dir)
    assert not any(k.startswith("lm.model.layers.") and ".decoder_layer." in k for k in weights)
    assert "lm.model.embed_tokens.weight" in weights  # embedding_grad_rows=all: every row trained, all saved
    # ... which the loader fills from the base LM: the frozen weights are the pretrained ones, untouched.
    # (load_pretrained is af2.load's loader, before af2.load packs the weights for CPU inference.)
    from af2.checkpoint.folder import load_pretrained, resolve_model_dir

    loaded = load_pretrained(resolve_model_dir(out), torch.float32).state_dict()
    want = base.state_dict()
    frozen = [k for k in want if k.startswith("model.layers.") and k.endswith("mlp.up_proj.weight")]
    assert frozen
    for key in frozen:
        i = key.split(".")[2]
        ours = f"lm.model.layers.{i}.decoder_layer.{key.split('.', 3)[3]}"
        assert torch.equal(loaded[ours], want[key]), key
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 3


def test_a_training_run_is_a_model_that_answers_and_is_scored(workspace, tmp_path):
    """The seam: `af2 train` output loads with af2.load(run_dir), answers with ask(), and `af2 eval --model
    run_dir` scores it; checkpoints hold only the trained weights plus a reference to the base LM."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from af2.cli import main
    from af2.config import tiny_config
    from af2.inference import load

    root, tok = workspace
    lm_cfg = dict(tiny_config().lm)
    base_dir = tmp_path / "base-lm"
    torch.manual_seed(7)
    AutoModelForCausalLM.from_config(AutoConfig.for_model(lm_cfg.pop("model_type"), **lm_cfg)).save_pretrained(
        str(base_dir))
    PreTrainedTokenizerFast.from_pretrained(str(tok)).save_pretrained(str(base_dir))
    run = tmp_path / "run"
    rc = main(["train", "--config", "stage1_pretrain", "model=tiny", f"model_overrides={json.dumps(MICRO)}",
               f"base_lm={base_dir}", "embedding_grad_rows=new", "new_rows_init=mean", "lean_loss=true",
               "max_steps=4", "save_interval=2", "keep_last=1", "batch_size=4", "grad_accum=1", "precision=fp32",
               "progress=false", f"output_dir={run}", f"data.dataset_file_root={root}", f"data.data_root={root}",
               "data.blend={tones/train: 1.0}", "data.global_weight=1.0", "audio_tower_checkpoint=\"\""])
    assert rc == 0
    assert [p.name for p in (run / "checkpoints").glob("step_*")] == ["step_00000004"]  # keep_last=1
    weights = load_file(str(run / "checkpoints" / "step_00000004" / "model.safetensors"))
    base_rows = AutoModelForCausalLM.from_pretrained(str(base_dir)).get_input_embeddings().weight
    api = load(run, dtype="float32")
    # only the 4 new rows trained; the base vocabulary is exactly the base LM's
    emb = api.model.lm.get_input_embeddings().weight
    assert torch.equal(emb[: base_rows.shape[0]], base_rows)
    assert weights["extra_rows.lm.model.embed_tokens.weight"].shape == (4, emb.shape[1])
    clip = root / "audio" / "test" / "0.wav"
    answer = api.ask(clip, PROMPT, max_new_tokens=4)
    assert isinstance(answer.text, str) and answer.audio.windows == 1

    # af2 eval scores the run folder directly (the af2-manifest task over the held-out tones)
    data = tmp_path / "eval" / "manifests"
    data.mkdir(parents=True)
    test = json.loads((root / "tones" / "test.json").read_text())
    test["split_path"] = str(root / "audio" / "test")
    test["data"] = {k: v for k, v in list(test["data"].items())[:6]}
    test["total_num"] = 6
    (data / "val.json").write_text(json.dumps(test))
    out = tmp_path / "eval" / "results"
    rc = main(["eval", "--model", str(run), "--tasks", "af2-manifest", "--data", f"af2-manifest={data}",
               "--out", str(out), "--no-progress", "--no-paper-comparison", "--max-new-tokens", "4"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert "af2-manifest" in json.dumps(summary)


def test_whitening_is_fitted_when_a_stage_starts_not_when_it_resumes(workspace):
    """A resumed run takes the fitted map from its checkpoint; refitting first would be wasted work."""
    root, tok = workspace
    cfg = stage_cfg(root, tok, "stage1_pretrain", trainable=("xattn",), whitening_items=8)
    cfg = replace(cfg, model_overrides={**cfg.model_overrides,
                                        "xattn": {**cfg.model_overrides.get("xattn", {}), "audio_whitening": True}})
    fresh = build_alm_task(cfg).model.audio_whitening
    assert not torch.equal(fresh, torch.eye(fresh.shape[0]))
    resumed = build_alm_task(replace(cfg, resume=True)).model.audio_whitening
    assert torch.equal(resumed, torch.eye(resumed.shape[0]))  # left for the checkpoint to fill
