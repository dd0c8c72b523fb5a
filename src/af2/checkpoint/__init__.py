"""Loading and saving AF2 weights, one module per layout.

- ``af2.checkpoint.official``: NVIDIA's released layout (safe_ckpt/ + clap_ckpt/), read strictly.
- ``af2.checkpoint.folder``: af2 model folders (config.json + model.safetensors + tokenizer),
  optionally naming a base LM whose frozen weights they leave out; every training checkpoint is one.
- ``af2.checkpoint.weights``: what both share: strict state-dict loading, tied aliases, safetensors
  reads (int8 quantisation on read), the NaN/Inf check.
"""
