"""Drives `webr1 serve` with the official `openai` Python client, unchanged, through structured output: a forced tool
call (parsed by the client into `tool_calls`), the same call streamed (`delta.tool_calls` in pieces), the round trip
with a `tool` message and a final answer, a named function, and `response_format` through the client's `parse` helper
with a pydantic model. Prints one JSON line with what it saw. Exit code 3 when openai or jsonschema is missing.
"""
import json
import sys
import time

try:
    import jsonschema
    import openai
    import pydantic
except ImportError as e:
    print(f"a package is missing ({e}): pip install openai jsonschema", file=sys.stderr)
    sys.exit(3)

base_url, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0, timeout=900)
weather = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
clock = {"type": "function", "function": {"name": "get_time", "description": "The time now (no arguments)."}}
tools = [weather, clock]
ask = [{"role": "user", "content": "What is the weather in Paris?"}]
seen = {}

started = time.time()
whole = client.chat.completions.create(
    model=model, messages=ask, tools=tools, tool_choice="required", temperature=0, max_tokens=60,
    parallel_tool_calls=False,
)
choice = whole.choices[0]
calls = choice.message.tool_calls
seen["required"] = {
    "finish_reason": choice.finish_reason,
    "content": choice.message.content,
    "calls": [{"id": c.id, "type": c.type, "name": c.function.name, "arguments": c.function.arguments} for c in calls],
    "seconds": time.time() - started,
}
for c in calls:
    params = next(t["function"].get("parameters", {}) for t in tools if t["function"]["name"] == c.function.name)
    jsonschema.validate(json.loads(c.function.arguments), params)

stream = client.chat.completions.create(
    model=model, messages=ask, tools=tools, tool_choice="required", temperature=0, max_tokens=60,
    parallel_tool_calls=False, stream=True,
)
pieces, names, ids, finish = {}, {}, {}, None
for chunk in stream:
    for ch in chunk.choices:
        for d in ch.delta.tool_calls or []:
            if d.id:
                ids[d.index] = d.id
            if d.function and d.function.name:
                names[d.index] = d.function.name
            if d.function and d.function.arguments:
                pieces.setdefault(d.index, []).append(d.function.arguments)
        if ch.finish_reason:
            finish = ch.finish_reason
seen["stream"] = {
    "finish_reason": finish,
    "names": [names[i] for i in sorted(names)],
    "arguments": ["".join(pieces.get(i, [])) for i in sorted(names)],
    "argument_pieces": sum(len(p) for p in pieces.values()),
    "ids": [ids[i] for i in sorted(ids)],
}

first = calls[0]
round_trip = ask + [
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": first.id, "type": "function", "function": {"name": first.function.name, "arguments": first.function.arguments}}]},
    {"role": "tool", "tool_call_id": first.id, "content": json.dumps({"temperature": 21, "unit": "celsius"})},
]
final = client.chat.completions.create(model=model, messages=round_trip, tools=tools, temperature=0, max_tokens=24)
seen["round_trip"] = {
    "finish_reason": final.choices[0].finish_reason,
    "content": final.choices[0].message.content,
    "calls": len(final.choices[0].message.tool_calls or []),
    "prompt_tokens": final.usage.prompt_tokens,
}

named = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "What time is it?"}], tools=tools,
    tool_choice={"type": "function", "function": {"name": "get_time"}}, temperature=0, max_tokens=30,
)
seen["named"] = {
    "finish_reason": named.choices[0].finish_reason,
    "calls": [(c.function.name, c.function.arguments) for c in named.choices[0].message.tool_calls or []],
}


class City(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=20)
    country: str = pydantic.Field(max_length=20)
    population_millions: int = pydantic.Field(ge=0, le=50)


parsed = client.chat.completions.parse(
    model=model, messages=[{"role": "user", "content": "Describe Paris."}], response_format=City,
    temperature=0, max_tokens=120,
)
city = parsed.choices[0].message.parsed
seen["parse"] = {
    "finish_reason": parsed.choices[0].finish_reason,
    "content": parsed.choices[0].message.content,
    "parsed": city.model_dump() if city is not None else None,
    "type": type(city).__name__,
}
print(json.dumps(seen))
