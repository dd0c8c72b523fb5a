"""``af2 serve``: an OpenAI-compatible HTTP server with continuous batching, and a web page.

    protocol.py   the chat-completions contract: request validation, response and chunk shapes
    inputs.py     a request's clip → windows + audio facts (bytes only; remote URLs when allowed)
    sampling.py   per-row greedy / seeded sampling for a mixed batch, vectorised
    batch.py      the running decode batch: join at a step boundary, leave at once
    engine.py     the scheduler thread: bounded queue, batched audio encoding, one step at a time
    metrics.py    Prometheus text
    app.py        FastAPI routes; cli.py the ``af2 serve`` command; static/index.html the page
    local.py      the server on a free loopback port in a background thread (tests, benchmarks)
"""
