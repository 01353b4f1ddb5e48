"""A streamed cache hit, replayed by the gateway, read by the official `openai` package.

Usage: python3 openai_cache_check.py BASE_URL API_KEY
Exits 0 when a repeated deterministic stream comes back as a hit (X-Cache: HIT) that the SDK
parses into the same text as the original stream.
"""
import sys

import openai

base_url, api_key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=10)
kwargs = dict(model="qwen2.5-0.5b-instruct", temperature=0, max_tokens=12,
              messages=[{"role": "user", "content": "What does the cache replay?"}])


def run(include_usage):
    raw = client.chat.completions.with_raw_response.create(
        stream=True, stream_options={"include_usage": include_usage}, **kwargs)
    text, usage = "", None
    for chunk in raw.parse():
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage
    return raw.headers.get("x-cache"), text, usage


first = run(False)
import time; time.sleep(0.2)  # the store is written off the response path
second = run(True)
assert first[0] == "MISS", first
assert second[0] == "HIT", second
assert second[1] == first[1] and first[1], (first, second)
assert second[2] is not None and second[2].completion_tokens == 12, second
print("streamed hit:", repr(second[1]), "usage", second[2].total_tokens, "OK")
