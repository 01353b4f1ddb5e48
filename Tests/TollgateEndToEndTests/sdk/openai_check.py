"""The official `openai` package, unchanged, pointed at the gateway.

Usage: python3 openai_check.py BASE_URL API_KEY
Exits 0 when a chat answer and a streamed answer arrive as the SDK expects them.
"""
import sys

import openai

base_url, api_key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=10)
model = "qwen2.5-0.5b-instruct"

models = [m.id for m in client.models.list()]
assert model in models, models

chat = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Hello, who are you?"}], max_tokens=8
)
assert chat.object == "chat.completion", chat
assert chat.choices[0].message.role == "assistant"
assert chat.choices[0].message.content, chat
assert chat.usage.completion_tokens == 8, chat.usage
print("chat:", repr(chat.choices[0].message.content), chat.usage.total_tokens, "tokens")

chunks = []
stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Tell me a story"}],
    max_tokens=6,
    stream=True,
    stream_options={"include_usage": True},
)
usage = None
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        chunks.append(chunk.choices[0].delta.content)
    if chunk.usage:
        usage = chunk.usage
assert len(chunks) == 6, chunks
assert usage is not None and usage.completion_tokens == 6, usage
print("stream:", repr("".join(chunks)), len(chunks), "chunks")

try:
    openai.OpenAI(base_url=base_url, api_key="tg-not-a-key", max_retries=0).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}]
    )
    raise AssertionError("a wrong key was accepted")
except openai.AuthenticationError as e:
    assert e.status_code == 401 and e.code == "invalid_api_key", e
    print("wrong key:", e.status_code, e.code)

try:
    client.chat.completions.create(model="gpt-99", messages=[{"role": "user", "content": "hi"}])
    raise AssertionError("an unknown model was accepted")
except openai.NotFoundError as e:
    assert e.code == "model_not_found", e
    print("unknown model:", e.status_code, e.code)
print("openai", openai.__version__, "OK")
