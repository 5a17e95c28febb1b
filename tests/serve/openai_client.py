"""Drives `webr1 serve` with the official `openai` Python client, unchanged: a whole and a streamed chat completion
at temperature 0 must give the same answer. Prints one JSON line with what it saw. Exit code 3 when openai is missing.
"""
import json
import sys

try:
    import openai
except ImportError:
    print("the openai package is not installed (pip install openai)", file=sys.stderr)
    sys.exit(3)

base_url, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0, timeout=600)
messages = [{"role": "user", "content": "What is the capital of France?"}]

listed = [m.id for m in client.models.list().data]

whole = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=6)

parts, reasoning, finish, usage, chunks = [], [], None, None, 0
stream = client.chat.completions.create(
    model=model, messages=messages, temperature=0, max_tokens=6, stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    chunks += 1
    if chunk.usage is not None:
        usage = chunk.usage.model_dump()
    for choice in chunk.choices:
        if choice.delta.content:
            parts.append(choice.delta.content)
        extra = getattr(choice.delta, "reasoning_content", None)
        if extra:
            reasoning.append(extra)
        if choice.finish_reason:
            finish = choice.finish_reason

print(json.dumps({
    "models": listed,
    "whole": {
        "content": whole.choices[0].message.content,
        "reasoning_content": getattr(whole.choices[0].message, "reasoning_content", None),
        "finish_reason": whole.choices[0].finish_reason,
        "usage": whole.usage.model_dump(),
        "object": whole.object,
    },
    "stream": {"content": "".join(parts), "reasoning": "".join(reasoning), "finish_reason": finish,
               "usage": usage, "chunks": chunks},
}))
