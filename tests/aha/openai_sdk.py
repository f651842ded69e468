"""The official OpenAI Python SDK against `aha serve` (run by tests/aha/serve.rs).

usage: openai_sdk.py BASE_URL MODEL MODE   (MODE: basic | auth | queue | load)
Prints one JSON object with what was measured; any failed check raises (non-zero exit).
"""

import json
import sys
import threading
import time

import openai
from openai import OpenAI

base, model, mode = sys.argv[1], sys.argv[2], sys.argv[3]
out = {}


def client(key="none"):
    return OpenAI(base_url=base, api_key=key, max_retries=0, timeout=300)


def expect(exc_type, fn, status):
    try:
        fn()
    except exc_type as e:
        assert e.status_code == status, (e.status_code, str(e))
        return e
    raise AssertionError(f"expected {exc_type.__name__}")


def ask(c, prompt, **kw):
    return c.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        temperature=0,
        **kw,
    )


if mode == "basic":
    c = client()
    assert [m.id for m in c.models.list().data] == [model]
    r = ask(c, "What is the capital of France? Answer in one word.", max_tokens=16, seed=1)
    out["non_stream"] = r.choices[0].message.content
    assert "Paris" in r.choices[0].message.content, r
    assert r.usage.completion_tokens > 0 and r.usage.prompt_tokens > 0
    parts = []
    usage = None
    for ch in ask(
        c,
        "What is the capital of France? Answer in one word.",
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    ):
        if ch.usage:
            usage = ch.usage
        for choice in ch.choices:
            if choice.delta.content:
                parts.append(choice.delta.content)
    out["stream"] = "".join(parts)
    assert "Paris" in out["stream"], parts
    assert usage is not None and usage.completion_tokens > 0
    # Stop strings.
    r = ask(c, "Count from 1 to 10, separated by commas.", max_tokens=40, stop=["5"])
    assert "5" not in r.choices[0].message.content and "4" in r.choices[0].message.content, r
    # Tools: the model's <tool_call> text comes back as OpenAI tool_calls.
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Get the current weather in a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    r = ask(c, "What's the weather in Paris right now?", tools=tools, tool_choice="auto", max_tokens=64)
    calls = r.choices[0].message.tool_calls
    assert calls, r
    assert calls[0].function.name == "get_weather", calls
    assert "paris" in json.loads(calls[0].function.arguments)["city"].lower(), calls
    assert r.choices[0].finish_reason == "tool_calls"
    out["tool_call"] = calls[0].function.arguments
    # Errors, as the SDK's own exception types.
    e = expect(
        openai.BadRequestError,
        lambda: ask(c, "hi", max_tokens=1, extra_body={"temprature": 1}),
        400,
    )
    assert "temprature" in str(e), str(e)
    expect(
        openai.NotFoundError,
        lambda: c.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}]),
        404,
    )
    expect(openai.APIStatusError, lambda: ask(c, "x" * (5 * 1024 * 1024), max_tokens=1), 413)
elif mode == "auth":
    expect(openai.AuthenticationError, lambda: client("wrong").models.list(), 401)
    expect(openai.AuthenticationError, lambda: ask(client("wrong"), "hi", max_tokens=1), 401)
    r = ask(client("sekrit"), "Say hi.", max_tokens=2)
    assert r.choices[0].message.content is not None
elif mode == "queue":
    c = client("sekrit")
    first_chunk = threading.Event()
    done = {}

    def long_request():
        n = 0
        for ch in ask(c, "Write a long story about a dragon.", max_tokens=400, stream=True):
            n += 1
            first_chunk.set()
            if n > 40:
                break
        done["chunks"] = n

    t = threading.Thread(target=long_request)
    t.start()
    assert first_chunk.wait(120), "the first request never streamed"
    expect(openai.InternalServerError, lambda: ask(c, "hi", max_tokens=4), 503)
    t.join()
    out["first_chunks"] = done["chunks"]
elif mode == "load":
    c = client()
    n = 16
    results = [None] * n

    def one(i):
        t0 = time.time()
        first = None
        text = []
        for ch in ask(c, f"Reply with just the number {i}.", max_tokens=6, stream=True):
            for choice in ch.choices:
                if choice.delta.content:
                    if first is None:
                        first = time.time() - t0
                    text.append(choice.delta.content)
        results[i] = {"text": "".join(text), "ttft": first, "total": time.time() - t0}

    t0 = time.time()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t0
    for i, r in enumerate(results):
        assert r is not None and r["ttft"] is not None, (i, r)
        assert str(i) in r["text"], (i, r)
    ttfts = sorted(r["ttft"] for r in results)
    out["clients"] = n
    out["wall_s"] = round(wall, 2)
    out["ttft_min_s"] = round(ttfts[0], 2)
    out["ttft_median_s"] = round(ttfts[n // 2], 2)
    out["ttft_max_s"] = round(ttfts[-1], 2)
    out["texts"] = [r["text"] for r in results]
else:
    raise SystemExit(f"unknown mode {mode}")

print(json.dumps(out))
