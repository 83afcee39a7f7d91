"""A small JSON Schema checker for structured-output and tool-argument validation.

Covers the keywords structured outputs and tool definitions actually use (type, properties,
required, additionalProperties, items, enum, const, anyOf/oneOf/allOf, length and range
bounds). Unknown keywords are ignored, so an unusual schema can only make the scorer *more*
lenient, never flag valid output as invalid.
"""

from __future__ import annotations

from typing import Any

__all__ = ("validate",)

_TYPES: dict[str, Any] = {
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


def validate(value: Any, schema: Any, path: str = "$", *, limit: int = 5) -> list[str]:
    """Errors (at most ``limit``) of ``value`` against ``schema``; empty when valid."""
    errors: list[str] = []
    _check(value, schema, path, errors, limit, schema if isinstance(schema, dict) else {})
    return errors


def _resolve(schema: Any, root: dict) -> Any:
    ref = schema.get("$ref") if isinstance(schema, dict) else None
    if isinstance(ref, str) and ref.startswith("#/"):
        node: Any = root
        for part in ref[2:].split("/"):
            node = node.get(part) if isinstance(node, dict) else None
        return node if isinstance(node, dict) else {}
    return schema


def _check(value: Any, schema: Any, path: str, errors: list[str], limit: int, root: dict) -> None:
    if len(errors) >= limit or not isinstance(schema, dict):
        return
    schema = _resolve(schema, root)
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_TYPES.get(k, lambda v: True)(value) for k in kinds):
            errors.append(f"{path}: expected {'/'.join(map(str, kinds))}, got {type(value).__name__}")
            return
    if "enum" in schema and isinstance(schema["enum"], list) and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in enum")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: expected const {schema['const']!r}")
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            if not any(not validate(value, _resolve(o, root), path, limit=1) for o in options):
                errors.append(f"{path}: matches none of {key}")
    for sub in schema.get("allOf") or []:
        _check(value, sub, path, errors, limit, root)
    if isinstance(value, dict):
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        for name in schema.get("required") or []:
            if name not in value:
                errors.append(f"{path}: missing required {name!r}")
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            if name in props:
                _check(item, props[name], f"{path}.{name}", errors, limit, root)
            elif extra is False:
                errors.append(f"{path}: unexpected property {name!r}")
            elif isinstance(extra, dict):
                _check(item, extra, f"{path}.{name}", errors, limit, root)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                _check(item, items, f"{path}[{i}]", errors, limit, root)
        if isinstance(schema.get("minItems"), int) and len(value) < schema["minItems"]:
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        if isinstance(schema.get("maxItems"), int) and len(value) > schema["maxItems"]:
            errors.append(f"{path}: more than {schema['maxItems']} items")
    elif isinstance(value, str):
        if isinstance(schema.get("minLength"), int) and len(value) < schema["minLength"]:
            errors.append(f"{path}: shorter than {schema['minLength']}")
        if isinstance(schema.get("maxLength"), int) and len(value) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']}")
    elif _TYPES["number"](value):
        if isinstance(schema.get("minimum"), (int, float)) and value < schema["minimum"]:
            errors.append(f"{path}: below minimum {schema['minimum']}")
        if isinstance(schema.get("maximum"), (int, float)) and value > schema["maximum"]:
            errors.append(f"{path}: above maximum {schema['maximum']}")
