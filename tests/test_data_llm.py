"""The LLM back end against a chat-completions server on 127.0.0.1 (the shared ``chat_server``
fixture of conftest.py) that misbehaves on purpose."""

import json

import pytest

from af2.data.qa.llm import LLMConfig, LLMGenerator, REPLY_SCHEMA, validate

GOOD = {"qa": [{"skill": "counting", "question": "How many notes are played?", "answer": "8 notes"},
               {"skill": "attribute_identification", "question": "Which instrument plays?", "answer": "violin",
                "options": ["piano", "violin", "flute"]}]}


def scripted(script):
    """A reply function for the shared ``chat_server`` fixture: per item id, a list of steps
    'ok', '500', 'slow', 'badjson', 'notchat', 'schema' (the last step repeats)."""
    script = {k: list(v) for k, v in script.items()}
    contents = {"ok": json.dumps(GOOD), "slow": json.dumps(GOOD), "badjson": "{\"qa\": [", "notchat": None,
                "schema": json.dumps({"qa": [{"skill": "dancing", "question": "Why?", "answer": "x"}]})}

    def reply(body):
        steps = script[json.loads(body["messages"][1]["content"])["id"]]
        step = steps.pop(0) if len(steps) > 1 else steps[0]
        return (500 if step == "500" else 200), contents.get(step), 0.05 + (1.0 if step == "slow" else 0.0)

    return reply


def _item(request):
    return json.loads(request["messages"][1]["content"])["id"]


def _metas(ids):
    return [{"id": i, "category": "music", "caption": f"clip {i}", "attributes": {"instrument": "violin"}} for i in ids]


def test_misbehaving_server_nothing_lost_retries_bounded_rejects_counted(tmp_path, chat_server):
    script = {"a": ["ok"], "b": ["500", "ok"], "c": ["slow", "ok"], "d": ["badjson", "notchat", "ok"],
              "e": ["schema", "schema", "schema", "schema"], "f": ["500"]}
    sleeps = []
    server = chat_server(scripted(script))
    gen = LLMGenerator(LLMConfig(base_url=server.url, model="m", api_key="k", concurrency=2, max_attempts=3,
                                 timeout_s=0.5, backoff_s=0.01, cache_dir=tmp_path / "cache"), sleep=sleeps.append)
    results = gen.generate(_metas(script))
    assert [r.item_id for r in results] == list(script)  # one result per input, in order
    ok = {r.item_id for r in results if r.pairs}
    assert ok == {"a", "b", "c", "d"}
    failed = {r.item_id: r.error for r in results if not r.pairs}
    assert set(failed) == {"e", "f"} and failed["f"].startswith("http_500") and failed["e"].startswith("schema")
    per_item = {i: sum(1 for r in server.requests if _item(r) == i) for i in script}
    assert per_item == {"a": 1, "b": 2, "c": 2, "d": 3, "e": 3, "f": 3}  # never more than max_attempts
    assert gen.stats.rejected == {"http_500": 4, "timeout": 1, "malformed_json": 1, "malformed_response": 1,
                                  "schema": 3}
    assert gen.stats.failed_items == 2 and gen.stats.accepted_items == 4
    assert all(r["_path"] == "/v1/chat/completions" and r["_auth"] == "Bearer k" for r in server.requests)
    assert sleeps and max(sleeps) <= 0.02 + 1e-9  # back-off 0.01, 0.02
    pairs = next(r for r in results if r.item_id == "a").pairs
    assert pairs[1].question.endswith("(A) piano. (B) violin. (C) flute.") and pairs[1].answer == "(B) violin"
    assert pairs[0].provenance() == {"generator": "llm:m", "template": "audioskills-v1", "sources": ["a"]}


def test_concurrency_limit(chat_server):
    ids = [f"i{k}" for k in range(8)]
    server = chat_server(scripted({i: ["ok"] for i in ids}))
    results = LLMGenerator(LLMConfig(base_url=server.url, model="m", concurrency=2)).generate(_metas(ids))
    assert all(r.pairs for r in results) and len(server.requests) == 8
    assert server.max_inflight == 2


def test_cache_is_keyed_by_input_prompt_and_model(tmp_path, chat_server):
    server = chat_server(scripted({"a": ["ok"], "b": ["ok"]}))
    cfg = LLMConfig(base_url=server.url, model="m", cache_dir=tmp_path, backoff_s=0)
    first = LLMGenerator(cfg).generate(_metas(["a", "b"]))
    again = LLMGenerator(cfg)
    second = again.generate(_metas(["a", "b"]))
    assert again.stats.cache_hits == 2 and len(server.requests) == 2
    assert [r.pairs for r in first] == [r.pairs for r in second]
    other = LLMGenerator(LLMConfig(base_url=server.url, model="other", cache_dir=tmp_path, backoff_s=0))
    other.generate(_metas(["a"]))
    assert other.stats.cache_hits == 0 and len(server.requests) == 3
    changed = LLMGenerator(cfg)
    changed.generate([{**_metas(["a"])[0], "caption": "a different caption"}])
    assert changed.stats.cache_hits == 0 and len(server.requests) == 4


def test_a_refused_request_is_a_failed_item_not_a_crash(chat_server):
    server = chat_server(lambda body: (401, "", 0.0))
    gen = LLMGenerator(LLMConfig(base_url=server.url, model="m", max_attempts=3, backoff_s=0))
    (result,) = gen.generate(_metas(["a"]))
    assert result.pairs == () and result.error.startswith("http_401") and len(server.requests) == 1


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
