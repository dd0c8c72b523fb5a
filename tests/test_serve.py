"""``af2 serve`` through the official ``openai`` client on 127.0.0.1, with the fixture's tiny model."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import httpx2
import openai
import pytest

import af2
from af2.checkpoint.folder import save_pretrained
from af2.parity import fixture_config
from af2.serve.app import ServeConfig
from af2.serve.local import running_server, wait_healthy
from serve_helpers import audio_part, user

MODEL = "tiny-af2"
QUESTIONS = ["w379 w366 w250 w360 w455 w15", "w20 w196 w68", "w189 w486 w363 w128"]
CLIPS = ["short.wav", "long.wav", "stereo.wav"]


@pytest.fixture(scope="module")
def api(fixture_dir):
    # fp32: the batch-equals-alone guarantee is for greedy fp32 (bf16 kernels may block a batch differently)
    return af2.load(fixture_dir / "checkpoint", config=fixture_config(fixture_dir), max_audio_seconds=25,
                    dtype="float32")


@pytest.fixture(scope="module")
def clips(fixture_dir):
    return {name: (fixture_dir / "audio" / name).read_bytes() for name in CLIPS}


@pytest.fixture(scope="module")
def url(api):
    with running_server(ServeConfig(MODEL, max_batch=8, max_queue=16, max_body_mb=2), lambda: api) as base:
        yield base


def client(base: str, key: str = "unused", retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=retries, timeout=60)


def metric(base: str, name: str) -> float:
    text = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def test_answer_equals_python_api(url, api, clips, fixture_dir):
    expected = api.ask(fixture_dir / "audio" / "short.wav", QUESTIONS[0], max_new_tokens=9)
    r = client(url).chat.completions.create(model=MODEL, messages=user(QUESTIONS[0], audio_part(clips["short.wav"])),
                                            max_tokens=9)
    choice = r.choices[0]
    assert choice.message.content == expected.text and choice.finish_reason == "length"
    assert r.usage.completion_tokens == 9 and r.usage.prompt_tokens > 0
    assert r.usage.prompt_tokens_details.audio_tokens == 64 * expected.audio.windows
    assert r.model_extra["af2"]["audio"]["windows"] == expected.audio.windows
    assert r.model_extra["af2"]["timings"]["first_token_s"] > 0
    models = client(url).models.list()
    assert [m.id for m in models.data] == [MODEL]


def test_stream_matches_and_ends_with_usage(url, api, clips, fixture_dir):
    expected = api.ask(fixture_dir / "audio" / "long.wav", QUESTIONS[1], max_new_tokens=10)
    stream = client(url).chat.completions.create(
        model=MODEL, messages=user(QUESTIONS[1], audio_part(clips["long.wav"])), max_completion_tokens=10,
        stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1 and "".join(pieces) == expected.text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10


def test_stop_string_and_eos_finish_with_stop(url, api, clips, fixture_dir):
    full = api.ask(fixture_dir / "audio" / "short.wav", QUESTIONS[0], max_new_tokens=12).text
    word = full.split()[3]
    r = client(url).chat.completions.create(model=MODEL, messages=user(QUESTIONS[0], audio_part(clips["short.wav"])),
                                            max_tokens=12, stop=[word])
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.content == full[:full.index(word)].rstrip()
    pieces = [c.choices[0].delta.content or "" for c in client(url).chat.completions.create(
        model=MODEL, messages=user(QUESTIONS[0], audio_part(clips["short.wav"])), max_tokens=12, stop=word,
        stream=True)]
    assert "".join(pieces) == r.choices[0].message.content  # the stop string itself is never streamed


def test_staggered_concurrent_requests_equal_sequential(url, api, clips, fixture_dir):
    """Requests arriving while others decode join the running batch and still answer as if alone."""
    jobs = [(CLIPS[i % 3], QUESTIONS[(i + 1) % 3], 6 + 5 * (i % 4)) for i in range(8)]
    expected = [api.ask(fixture_dir / "audio" / c, q, max_new_tokens=n).text for c, q, n in jobs]
    steps_before = metric(url, "af2_batch_size_count")
    results: dict[int, str] = {}

    def run(i: int) -> None:
        time.sleep(0.03 * i)  # staggered arrivals
        clip, question, n = jobs[i]
        r = client(url).chat.completions.create(model=MODEL, messages=user(question, audio_part(clips[clip])),
                                                max_tokens=n)
        results[i] = r.choices[0].message.content

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [results.get(i) for i in range(len(jobs))] == expected
    # Shared steps: fewer decoding steps than the requests' tokens decoded one by one.
    steps = metric(url, "af2_batch_size_count") - steps_before
    assert steps < sum(n for _, _, n in jobs) - len(jobs)


def test_seeded_sampling_is_reproducible_in_any_batch(url, clips):
    ask = dict(model=MODEL, messages=user(QUESTIONS[2], audio_part(clips["stereo.wav"])), max_tokens=8,
               temperature=0.9, top_p=0.9, seed=1234)
    alone = client(url).chat.completions.create(**ask).choices[0].message.content
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        client(url).chat.completions.create(**ask).choices[0].message.content)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == [alone] * 3


def _status(exc_info) -> tuple[int, dict]:
    return exc_info.value.status_code, exc_info.value.body


@pytest.mark.parametrize("change,param", [
    ({"n": 2}, "n"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
    ({"logprobs": True}, "logprobs"),
    ({"frequency_penalty": 0.5}, "frequency_penalty"),
    ({"temperature": 3}, "temperature"),
    ({"extra_body": {"bogus": 1}}, "bogus"),
    ({"messages": "two audio"}, "messages[0].content[2]"),
    ({"messages": "assistant audio"}, "messages[1].content[0]"),
    ({"messages": "multi-turn"}, "messages"),
    ({"messages": "system"}, "messages"),
    ({"messages": "no audio"}, "messages[0].content"),
    ({"messages": "bad base64"}, "messages[0].content[1].input_audio.data"),
    ({"messages": "bad format"}, "messages[0].content[1].input_audio.format"),
    ({"messages": "bad audio"}, "messages[0].content[1].input_audio.data"),
    ({"messages": "image"}, "messages[0].content[1].type"),
    ({"messages": "remote"}, "messages[0].content[1].audio_url.url"),
    ({"messages": "file url"}, "messages[0].content[1].audio_url.url"),
])
def test_unsupported_requests_get_400_naming_the_parameter(url, clips, change, param):
    wav = audio_part(clips["short.wav"])
    messages = {
        "two audio": user("q", wav, wav),
        "assistant audio": user("q", wav) + [{"role": "assistant", "content": [wav]}],
        "multi-turn": user("q", wav) + [{"role": "assistant", "content": "w1"}, {"role": "user", "content": "w2"}],
        "system": [{"role": "system", "content": "be brief"}] + user("q", wav),
        "no audio": [{"role": "user", "content": "what is this?"}],
        "bad base64": user("q", {"type": "input_audio", "input_audio": {"data": "!!notbase64", "format": "wav"}}),
        "bad audio": user("q", audio_part(b"RIFF\x00\x00garbage" * 10)),
        "bad format": user("q", audio_part(clips["short.wav"], "exe")),
        "image": user("q", {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}),
        "remote": user("q", {"type": "audio_url", "audio_url": {"url": "http://127.0.0.1:9/a.wav"}}),
        "file url": user("q", {"type": "audio_url", "audio_url": {"url": "file:///etc/passwd"}}),
    }.get(change.pop("messages", None), user("q", wav))
    with pytest.raises(openai.BadRequestError) as err:
        client(url).chat.completions.create(model=MODEL, messages=messages, max_tokens=2, **change)
    status, body = _status(err)
    assert status == 400 and body["param"] == param and body["message"] and body["type"] == "invalid_request_error"


def test_data_url_audio_and_truncation_header(url, api, clips, fixture_dir, tmp_path):
    import numpy as np
    import soundfile as sf

    long_clip = tmp_path / "thirty.flac"
    sf.write(long_clip, 0.2 * np.sin(np.arange(16_000 * 30) / 7.0), 16_000)
    data_url = "data:audio/flac;base64," + base64.b64encode(long_clip.read_bytes()).decode()
    raw = client(url).chat.completions.with_raw_response.create(
        model=MODEL, messages=user("w1 w2", {"type": "audio_url", "audio_url": {"url": data_url}}), max_tokens=3)
    facts = raw.parse().model_extra["af2"]["audio"]
    assert facts["truncated_s"] == pytest.approx(5.0) and facts["kept_s"] == pytest.approx(25.0)
    assert float(raw.headers["x-af2-audio-truncated-seconds"]) == pytest.approx(5.0)
    assert "truncated" in raw.headers["warning"]
    with pytest.raises(openai.BadRequestError) as err:
        client(url).chat.completions.create(
            model=MODEL, messages=user("w1", {"type": "audio_url", "audio_url": {"url": data_url}}), max_tokens=3,
            extra_body={"strict_length": True})
    assert err.value.body["param"].endswith("audio_url.url") and "30.0 s" in err.value.body["message"]


def test_remote_audio_only_when_allowed(api, clips, tmp_path):
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    (tmp_path / "clip.wav").write_bytes(clips["short.wav"])
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    files = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    remote = user(QUESTIONS[0], {"type": "audio_url", "audio_url": {
        "url": f"http://127.0.0.1:{files.server_address[1]}/clip.wav"}})
    try:
        with running_server(ServeConfig(MODEL, allow_remote_audio=True), lambda: api) as base:
            r = client(base).chat.completions.create(model=MODEL, messages=remote, max_tokens=3)
            assert r.usage.completion_tokens == 3 and r.model_extra["af2"]["audio"]["kept_s"] == pytest.approx(4.0)
            missing = user("q", {"type": "audio_url", "audio_url": {"url": remote[0]["content"][1]["audio_url"][
                "url"].replace("clip.wav", "none.wav")}})
            with pytest.raises(openai.BadRequestError) as err:
                client(base).chat.completions.create(model=MODEL, messages=missing, max_tokens=3)
            assert err.value.body["code"] == "audio_fetch_failed"
    finally:
        files.shutdown()


def test_wrong_model_404_and_large_body_413(url, clips):
    with pytest.raises(openai.NotFoundError) as err:
        client(url).chat.completions.create(model="gpt-4o", messages=user("q", audio_part(clips["short.wav"])))
    assert err.value.body["param"] == "model"
    big = audio_part(os.urandom(3 * 1024 * 1024))
    with pytest.raises(openai.APIStatusError) as err:
        client(url).chat.completions.create(model=MODEL, messages=user("q", big), max_tokens=2)
    assert err.value.status_code == 413 and "--max-body-mb" in err.value.body["message"]


def _long_stream(base: str, clip: bytes):
    """A streamed request that decodes for a while (the tiny model rarely ends before max_tokens)."""
    return httpx2.stream("POST", f"{base}/v1/chat/completions", timeout=60, json={
        "model": MODEL, "messages": user(QUESTIONS[0], audio_part(clip)), "max_tokens": 1000, "stream": True})


def _first_content(lines) -> str:
    for line in lines:
        if line.startswith("data: ") and '"content": "w' in line:
            return line
    raise AssertionError("no content chunk")


def test_full_queue_429_with_retry_after_and_disconnect_frees_the_row(api, clips):
    with running_server(ServeConfig(MODEL, max_batch=1, max_queue=0), lambda: api) as base:
        with _long_stream(base, clips["short.wav"]) as response:
            lines = response.iter_lines()  # held: dropping the iterator would close the connection
            _first_content(lines)  # the one batch row is taken
            with pytest.raises(openai.RateLimitError) as err:
                client(base).chat.completions.create(model=MODEL, messages=user("q", audio_part(clips["short.wav"])),
                                                     max_tokens=2)
            assert int(err.value.response.headers["retry-after"]) >= 1
            assert metric(base, "af2_running_requests") == 1
        deadline = time.monotonic() + 10  # the client went away: its row must leave the batch
        while metric(base, "af2_running_requests") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metric(base, "af2_running_requests") == 0
        assert metric(base, "af2_generated_tokens_total") < 1000
        r = client(base).chat.completions.create(model=MODEL, messages=user("q", audio_part(clips["short.wav"])),
                                                 max_tokens=2)
        assert r.choices[0].finish_reason == "length"
        assert metric(base, "af2_rejected_total") == 1 and metric(base, 'af2_requests_total{status="429"}') == 1


@pytest.mark.slow
def test_non_streamed_disconnect_cancels_and_a_flood_ends_in_200_or_429(api, clips):
    with running_server(ServeConfig(MODEL, max_batch=4, max_queue=4), lambda: api) as base:
        body = {"model": MODEL, "messages": user(QUESTIONS[0], audio_part(clips["short.wav"])), "max_tokens": 1000}
        with pytest.raises(httpx2.TimeoutException):
            httpx2.post(f"{base}/v1/chat/completions", json=body, timeout=0.5)
        deadline = time.monotonic() + 10
        while metric(base, "af2_running_requests") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metric(base, "af2_running_requests") == 0 and metric(base, "af2_generated_tokens_total") < 1000
        assert metric(base, 'af2_requests_total{status="499"}') == 1

        statuses: list[int] = []
        short = {**body, "max_tokens": 4}

        def post() -> None:
            statuses.append(httpx2.post(f"{base}/v1/chat/completions", json=short, timeout=60).status_code)

        threads = [threading.Thread(target=post) for _ in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert len(statuses) == 64 and set(statuses) <= {200, 429}  # none lost, none 5xx
        assert statuses.count(200) >= 8 and statuses.count(429) >= 1


@pytest.mark.parametrize("part", ["step", "encode"])
def test_a_failing_step_or_encode_answers_500_and_the_server_recovers(url, clips, monkeypatch, part):
    from af2.model.af2 import AF2Model
    from af2.serve.batch import DecodeBatch

    def broken(self, *args, **kwargs):
        raise RuntimeError("simulated device failure")

    owner, name, message = ((DecodeBatch, "step", "internal error while decoding") if part == "step" else
                            (AF2Model, "encode_audio", "internal error while encoding the audio"))
    ask = dict(model=MODEL, messages=user(QUESTIONS[0], audio_part(clips["short.wav"])), max_tokens=4)
    with monkeypatch.context() as patch:
        patch.setattr(owner, name, broken)
        with pytest.raises(openai.InternalServerError) as err:
            client(url).chat.completions.create(**ask)
        assert err.value.status_code == 500 and message in err.value.body["message"]
    assert client(url).chat.completions.create(**ask).usage.completion_tokens == 4
    deadline = time.monotonic() + 10  # the finished row leaves the batch just after its last event
    while metric(url, "af2_running_requests") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(url, "af2_running_requests") == 0 and metric(url, "af2_queue_depth") == 0


def test_api_key_401_and_not_ready_503(api, clips):
    gate = threading.Event()

    def slow_loader():
        gate.wait(30)
        return api

    cfg = ServeConfig(MODEL, api_key="s3cret")
    with running_server(cfg, slow_loader, wait_ready=False) as base:
        health = httpx2.get(f"{base}/health", timeout=10)
        assert health.status_code == 503 and health.json()["status"] == "loading"
        with pytest.raises(openai.InternalServerError) as err:
            client(base, "s3cret").chat.completions.create(model=MODEL, messages=user("q"), max_tokens=2)
        assert err.value.status_code == 503
        gate.set()
        wait_healthy(base, time.monotonic() + 30)
        with pytest.raises(openai.AuthenticationError) as err:
            client(base, "wrong").chat.completions.create(
                model=MODEL, messages=user("q", audio_part(clips["short.wav"])), max_tokens=2)
        assert err.value.body["code"] == "invalid_api_key"
        assert httpx2.get(f"{base}/metrics", timeout=10).status_code == 401
        r = client(base, "s3cret").chat.completions.create(
            model=MODEL, messages=user("q", audio_part(clips["short.wav"])), max_tokens=2)
        assert r.usage.completion_tokens == 2


def test_metrics_and_page(url):
    text = httpx2.get(f"{url}/metrics", timeout=10).text
    for name, kind in (("af2_requests_total", "counter"), ("af2_queue_depth", "gauge"),
                       ("af2_batch_size", "histogram"), ("af2_tokens_per_second", "gauge"),
                       ("af2_time_to_first_token_seconds", "histogram")):
        assert f"# TYPE {name} {kind}\n" in text
    assert '\naf2_batch_size_bucket{le="+Inf"} ' in text and "\naf2_queue_depth 0\n" in text
    page = httpx2.get(url, timeout=10).text
    assert "<audio" in page and "/v1/chat/completions" in page
    assert "://" not in page  # self-contained: no CDN, nothing fetched from elsewhere


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_af2_serve_command_answers_plain_http(official_model, tmp_path, clips):
    model, tokenizer, _ = official_model
    folder = save_pretrained(model, tmp_path / "tiny-af2", tokenizer)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "af2", "serve", "--model", str(folder), "--port", str(port),
                             "--served-model-name", MODEL], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, text=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", time.monotonic() + 90)
        body = {"model": MODEL, "max_tokens": 3,
                "messages": user("w1 w2", {"type": "audio_url", "audio_url": {
                    "url": "data:audio/wav;base64," + base64.b64encode(clips["short.wav"]).decode()}})}
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
        assert answer["choices"][0]["message"]["content"] and answer["usage"]["completion_tokens"] == 3
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    lines = [line for line in err.splitlines() if "status=200" in line]
    assert len(lines) == 1 and "tokens=3" in lines[0] and "latency_s=" in lines[0]
