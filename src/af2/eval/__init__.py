"""Benchmark evaluation: tasks (loader + prompt + scorer), adapters, a sharded resumable runner,
and reports. Entry point: ``af2 eval`` (af2.cli.eval) or ``af2.eval.runner.run``."""
