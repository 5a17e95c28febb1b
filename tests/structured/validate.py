"""Validates answers against their JSON schemas with Python's `jsonschema` package and its format checker (the
validator of record for webr1's structured-output tests, not webr1's own). Reads a JSON file of
[{"name", "schema", "answer"}]; prints one JSON line {"checked": n, "failures": [...]}. Exit code 3 when jsonschema
is missing.
"""
import json
import sys

try:
    import jsonschema
except ImportError:
    print("the jsonschema package is not installed (pip install jsonschema rfc3339-validator)", file=sys.stderr)
    sys.exit(3)

cases = json.load(open(sys.argv[1]))
failures = []
checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
for case in cases:
    try:
        value = json.loads(case["answer"])
    except ValueError as e:
        failures.append({"name": case["name"], "answer": case["answer"], "error": f"not JSON: {e}"})
        continue
    validator = jsonschema.validators.validator_for(case["schema"], default=jsonschema.Draft202012Validator)
    errors = [e.message for e in validator(case["schema"], format_checker=checker).iter_errors(value)]
    if errors:
        failures.append({"name": case["name"], "answer": case["answer"], "error": errors[:3]})
print(json.dumps({"checked": len(cases), "formats": sorted(checker.checkers), "failures": failures}))
