"""The LLM back end against a chat-completions server on 127.0.0.1 that misbehaves on purpose."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from af2.data.qa.llm import LLMConfig, LLMGenerator, REPLY_SCHEMA, validate

GOOD = {"qa": [{"skill": "counting", "question": "How many notes are played?", "answer": "8 notes"},
               {"skill": "attribute_identification", "question": "Which instrument plays?", "answer": "violin",
                "options": ["piano", "violin", "flute"]}]}


class Server:
    """Replies per item id from a script: 'ok', '500', 'slow', 'badjson', 'notchat', 'schema'."""

    def __init__(self, script):
        self.script = {k: list(v) for k, v in script.items()}
        self.calls = []
        self.inflight = self.max_inflight = 0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                item = json.loads(body["messages"][1]["content"])["id"]
                with lock:
                    outer.calls.append((item, self.path, self.headers.get("Authorization")))
                    outer.inflight += 1
                    outer.max_inflight = max(outer.max_inflight, outer.inflight)
                    steps = outer.script[item]
                    step = steps.pop(0) if len(steps) > 1 else steps[0]
                try:
                    time.sleep(0.05)
                    if step == "500":
                        self.send_error(500)
                        return
                    if step == "slow":
                        time.sleep(1.0)
                    content = {"ok": json.dumps(GOOD), "slow": json.dumps(GOOD), "badjson": "{\"qa\": [",
                               "schema": json.dumps({"qa": [{"skill": "dancing", "question": "Why?", "answer": "x"}]})
                               }.get(step)
                    payload = b"<html>oops" if step == "notchat" else json.dumps(
                        {"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
                    try:
                        self.send_response(200)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload)
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # the client timed out first, as the test intends
                finally:
                    with lock:
                        outer.inflight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"


def _metas(ids):
    return [{"id": i, "category": "music", "caption": f"clip {i}", "attributes": {"instrument": "violin"}} for i in ids]


def test_misbehaving_server_nothing_lost_retries_bounded_rejects_counted(tmp_path):
    script = {"a": ["ok"], "b": ["500", "ok"], "c": ["slow", "ok"], "d": ["badjson", "notchat", "ok"],
              "e": ["schema", "schema", "schema", "schema"], "f": ["500"]}
    sleeps = []
    with Server(script) as server:
        gen = LLMGenerator(LLMConfig(base_url=server.url, model="m", api_key="k", concurrency=2, max_attempts=3,
                                     timeout_s=0.5, backoff_s=0.01, cache_dir=tmp_path / "cache"), sleep=sleeps.append)
        results = gen.generate(_metas(script))
    assert [r.item_id for r in results] == list(script)  # one result per input, in order
    ok = {r.item_id for r in results if r.pairs}
    assert ok == {"a", "b", "c", "d"}
    failed = {r.item_id: r.error for r in results if not r.pairs}
    assert set(failed) == {"e", "f"} and failed["f"].startswith("http_500") and failed["e"].startswith("schema")
    per_item = {i: sum(1 for c in server.calls if c[0] == i) for i in script}
    assert per_item == {"a": 1, "b": 2, "c": 2, "d": 3, "e": 3, "f": 3}  # never more than max_attempts
    assert gen.stats.rejected == {"http_500": 4, "timeout": 1, "malformed_json": 1, "malformed_response": 1,
                                  "schema": 3}
    assert gen.stats.failed_items == 2 and gen.stats.accepted_items == 4
    assert all(c[1] == "/v1/chat/completions" and c[2] == "Bearer k" for c in server.calls)
    assert sleeps and max(sleeps) <= 0.02 + 1e-9  # back-off 0.01, 0.02
    pairs = next(r for r in results if r.item_id == "a").pairs
    assert pairs[1].question.endswith("(A) piano. (B) violin. (C) flute.") and pairs[1].answer == "(B) violin"
    assert pairs[0].provenance() == {"generator": "llm:m", "template": "audioskills-v1", "sources": ["a"]}


def test_concurrency_limit():
    ids = [f"i{k}" for k in range(8)]
    with Server({i: ["ok"] for i in ids}) as server:
        results = LLMGenerator(LLMConfig(base_url=server.url, model="m", concurrency=2)).generate(_metas(ids))
    assert all(r.pairs for r in results) and len(server.calls) == 8
    assert server.max_inflight == 2


def test_cache_is_keyed_by_input_prompt_and_model(tmp_path):
    with Server({"a": ["ok"], "b": ["ok"]}) as server:
        cfg = LLMConfig(base_url=server.url, model="m", cache_dir=tmp_path, backoff_s=0)
        first = LLMGenerator(cfg).generate(_metas(["a", "b"]))
        again = LLMGenerator(cfg)
        second = again.generate(_metas(["a", "b"]))
        assert again.stats.cache_hits == 2 and len(server.calls) == 2
        assert [r.pairs for r in first] == [r.pairs for r in second]
        other = LLMGenerator(LLMConfig(base_url=server.url, model="other", cache_dir=tmp_path, backoff_s=0))
        other.generate(_metas(["a"]))
        assert other.stats.cache_hits == 0 and len(server.calls) == 3
        changed = LLMGenerator(cfg)
        changed.generate([{**_metas(["a"])[0], "caption": "a different caption"}])
        assert changed.stats.cache_hits == 0 and len(server.calls) == 4


def test_schema_validator_and_config_from_env(monkeypatch):
    assert validate(GOOD, REPLY_SCHEMA) == []
    assert any("missing 'answer'" in e for e in validate({"qa": [{"skill": "counting", "question": "How many?"}]},
                                                         REPLY_SCHEMA))
    assert validate({"qa": []}, REPLY_SCHEMA) and validate([], REPLY_SCHEMA)
    monkeypatch.setenv("AF2_LLM_BASE_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("AF2_LLM_MODEL", "env-model")
    assert LLMConfig.from_env(model="flag-model").model == "flag-model"
    monkeypatch.delenv("AF2_LLM_MODEL")
    with pytest.raises(ValueError, match="AF2_LLM_MODEL"):
        LLMConfig.from_env()
