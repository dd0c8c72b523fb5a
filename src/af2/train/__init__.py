"""Training: the AF2 curriculum (AF-CLAP, pre-training, fine-tuning, long fine-tuning) on one engine."""
