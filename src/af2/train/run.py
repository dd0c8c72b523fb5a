"""Build the task of a stage from its ``TrainConfig`` and run it: what ``af2 train`` calls."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file

from af2.config import AF2Config, af2_config, apply_overrides, nano_config, tiny_config
from af2.base_lm import load_base_lm, resolve_base_lm
from af2.checkpoint.folder import BaseRef, save_pretrained
from af2.errors import CheckpointError, ConfigError
from af2.model.af2 import AF2Model
from af2.tokens import add_special_tokens
from af2.train.alm import alm_task, with_training_options
from af2.train.checkpoint import latest_checkpoint, load_weights
from af2.model.clap import AFClap
from af2.train.clap import text_encoder_dir, ClapCollator, build_text_encoder, clap_loss, export_audio_tower
from af2.train.teacher import build_teacher, teacher_dim
from af2.train.config import TrainConfig
from af2.data.dataset import ManifestDataset
from af2.train.data import blended_items
from af2.train.distributed import init_distributed, shutdown, unwrap
from af2.train.engine import Task, TrainResult, train
from af2.train.listen import listen_check, multiple_choice_items
from af2.train.lora import add_lora
from af2.train.stages import apply_stage
from af2.train.whitening import fit_audio_whitening


def model_config(cfg: TrainConfig) -> AF2Config:
    """The AF2 architecture of the run, with the stage's window count."""
    base = {"tiny": tiny_config, "nano": nano_config}.get(cfg.model, lambda: af2_config(cfg.model))()
    base = apply_overrides(base, cfg.model_overrides) if cfg.model_overrides else base
    return replace(base, audio=replace(base.audio, max_windows=cfg.windows))


def load_tokenizer(path: str, what: str):
    if not path:
        raise ConfigError(f"{what} is required: a local tokenizer folder")
    from af2.base_lm import load_tokenizer as load  # one loader: offline failures are one-line errors

    try:
        return load(path)
    except CheckpointError as exc:
        raise CheckpointError(f"{what}: {exc}") from None


def audio_tower_file(path: str | Path) -> Path:
    """stage 0's ``audio_tower.safetensors``, or the one in a stage-0 checkpoint or run directory."""
    path = Path(path)
    if path.is_dir():
        path = (latest_checkpoint(path) or path) / "audio_tower.safetensors"
    if not path.is_file():
        raise CheckpointError(f"audio_tower_checkpoint: no {path}; point it at stage 0's run directory or file")
    return path


def build_alm_task(cfg: TrainConfig) -> Task:
    """Stages 1-3: an ``AF2Model`` initialised from the previous stage, its trainable set applied."""
    arch = with_training_options(model_config(cfg), cfg)
    tokenizer = load_tokenizer(resolve_base_lm(cfg.tokenizer or cfg.base_lm), "tokenizer")
    add_special_tokens(tokenizer, arch.tokens)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    lm, base = None, None
    if cfg.base_lm:
        arch, lm, base_vocab = load_base_lm(cfg.base_lm, arch, len(tokenizer), cfg.new_rows_init)
        base = BaseRef(cfg.base_lm, base_vocab, full_embedding=cfg.embedding_grad_rows == "all" and
                       "embeddings" in cfg.trainable)
    model = AF2Model(arch, lm=lm)
    if cfg.init_checkpoint:
        load_weights(model, cfg.init_checkpoint, cfg.init_new_params)
    elif cfg.audio_tower_checkpoint:
        tower = audio_tower_file(cfg.audio_tower_checkpoint)
        try:
            model.audio_encoder.load_state_dict(load_file(str(tower)))
        except RuntimeError as exc:
            raise CheckpointError(f"{tower}: does not match the audio tower of this model: {exc}") from exc
    if cfg.lora.enabled:
        add_lora(model, cfg.lora)
    apply_stage(model, cfg.trainable)
    if len(tokenizer) != arch.vocab_size:
        raise CheckpointError(f"tokenizer {cfg.tokenizer} has {len(tokenizer)} tokens with AF2's specials but the "
                         f"model has {arch.vocab_size} embedding rows; fix model or tokenizer")
    # the saved folder answers up to 5 minutes, whatever the stage's training window count
    inference_cfg = replace(arch, audio=replace(arch.audio, max_windows=max(arch.audio.max_windows, 30)))

    def save_model(state: dict[str, torch.Tensor], folder: Path) -> None:
        save_pretrained(model, folder, tokenizer, base, state=state, cfg=inference_cfg)

    task = alm_task(cfg, model, tokenizer, base_vocab=base.vocab_size if base else None)
    # a later stage loads the fitted map with init_checkpoint, a resumed run with its checkpoint
    if arch.xattn.audio_whitening and not cfg.init_checkpoint and not cfg.resume:
        fit_audio_whitening(model, task.dataset, cfg.whitening_items, cfg.whitening_shrink, seed=cfg.seed,
                            progress=cfg.progress)
    return replace(task, save_model=save_model, tokenizer=tokenizer, evaluate=listen_evaluator(cfg, tokenizer))


def listen_evaluator(cfg: TrainConfig, tokenizer):
    """The shuffled-audio control and feature-diversity check of ``cfg.listen`` (None when unset)."""
    if not cfg.listen.manifest:
        return None
    items = multiple_choice_items(cfg.listen.manifest, cfg.listen.items, cfg.listen.scoring)

    def evaluate(model) -> dict[str, float]:
        report = listen_check(unwrap(model), tokenizer, items, cfg.data.data_root, cfg.windows,
                              scoring=cfg.listen.scoring)
        if report.feature_cosine > cfg.listen.max_cosine:
            print(f"warning: audio features are collapsing: mean pairwise cosine {report.feature_cosine:.3f} > "
                  f"{cfg.listen.max_cosine} across {report.items} held-out clips", flush=True)
        print(f"listen: accuracy {report.accuracy:.3f} own audio vs {report.shuffled_accuracy:.3f} shuffled "
              f"(chance {report.chance:.3f}, {report.items} items), gold-letter nll {report.nll:.3f} vs "
              f"{report.nll_shuffled:.3f}, feature cosine {report.feature_cosine:.3f}",
              flush=True)
        return report.as_dict()

    return evaluate



def build_clap_task(cfg: TrainConfig) -> Task:
    """Stage 0: AF-CLAP on (clip, captions) items; each checkpoint also holds audio_tower.safetensors."""
    arch = model_config(cfg)
    torch.manual_seed(cfg.seed)
    model = AFClap(arch.htsat, arch.audio, build_text_encoder(cfg.clap), embed_dim=cfg.clap.embed_dim,
                   logit_scale_init=cfg.clap.logit_scale_init, teacher_dim=teacher_dim(cfg.clap.teacher),
                   teacher_weight=cfg.clap.teacher_weight)
    if cfg.init_checkpoint:
        load_weights(model, cfg.init_checkpoint)
    apply_stage(model, cfg.trainable)
    tokenizer = load_tokenizer(text_encoder_dir(cfg.clap.tokenizer or cfg.clap.text_encoder), "clap.tokenizer")
    dataset = ManifestDataset(blended_items(cfg.data), cfg.data.data_root, replace(arch.audio, max_windows=1))
    return Task(model=model, dataset=dataset, collate=ClapCollator(tokenizer, cfg.clap, build_teacher(cfg.clap.teacher, arch.audio.sample_rate)),
                loss=clap_loss,
                lengths=dataset.lengths(), export=export_audio_tower)


def run(cfg: TrainConfig) -> TrainResult:
    info = init_distributed(cfg.device)
    try:
        task = build_clap_task(cfg) if cfg.kind == "clap" else build_alm_task(cfg)
        return train(cfg, task, info)
    finally:
        shutdown()
