"""A JSON Schema validator for the keywords the API's schemas use, with messages in words.

It knows nothing of the API: `schemas` gives it the named schemas that `$ref` points to and the
checks behind each `format`. Every keyword it meets must be one it enforces or one it knows to be
an annotation, so a schema cannot show clients a rule the server does not apply.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from chalicelib.errors import ApiError, invalid

REF_PREFIX = "#/components/schemas/"

# Keywords that say something to a reader and nothing to a validator.
ANNOTATIONS = frozenset({"description", "writeOnly", "default", "title"})

_TYPE_NAMES = {
    "null": "null",
    "object": "an object",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
}


class Explained(list):
    """`oneOf` or `anyOf` branches, with a function that says in words why a value fits none.

    A bare "matches none of the forms" would not tell the client what to change; `why(value)`
    raises the error that does. It serialises as the plain list it is.
    """

    def __init__(self, branches: list[dict], why: Callable[[Any], None]) -> None:
        super().__init__(branches)
        self.why = why


def _is_type(value: Any, kind: str) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        # Python's json reads NaN and Infinity, which JSON itself has not.
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    raise ValueError(f"schema type {kind} is not supported")


def _ecma(pattern: str) -> str:
    """JSON Schema patterns are ECMA-262: a final `$` is the very end, where Python's `$` would
    also match before a final newline ("name\\n" must not pass `^[a-z]+$`)."""
    return pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith(r"\$") else pattern


def _admits_null(schema: dict) -> bool:
    kinds = schema.get("type", [])
    return "null" in ([kinds] if isinstance(kinds, str) else kinds)


class Validator:
    """`validate(value, schema)` raises a 400 naming the first field that breaks the schema."""

    def __init__(self, named: Mapping[str, dict], formats: Mapping[str, Callable[[str, str], None]]) -> None:
        self.named = named
        self.formats = formats
        # Applied in this order, so the first error is the one a client should fix first: the
        # type before its rules, a format (which says what is wrong in words) before its pattern,
        # an object's own fields before rules over the whole object.
        self._checks: dict[str, Callable[[Any, Any, dict, str], None]] = {
            "$ref": self._ref,
            "type": self._type,
            "enum": self._enum,
            "minLength": self._min_length,
            "maxLength": self._max_length,
            "format": self._format,
            "pattern": self._pattern,
            "minimum": self._range,
            "maximum": self._range,
            "minItems": self._min_items,
            "maxItems": self._max_items,
            "items": self._items,
            "minProperties": self._min_properties,
            "maxProperties": self._max_properties,
            "required": self._required,
            "properties": self._fields,
            "additionalProperties": self._fields,
            "propertyNames": self._fields,
            "allOf": self._all_of,
            "anyOf": self._any_of,
            "oneOf": self._one_of,
        }

    @property
    def keywords(self) -> frozenset[str]:
        """The keywords this validator enforces."""
        return frozenset(self._checks)

    def validate(self, value: Any, schema: dict, field: str = "") -> None:
        unknown = schema.keys() - self._checks.keys() - ANNOTATIONS
        if unknown:
            raise ValueError(f"schema keywords {sorted(unknown)} are not enforced by the validator")
        done = set()
        for keyword, check in self._checks.items():
            # properties, additionalProperties and propertyNames are one pass over the object's keys.
            if keyword in schema and check not in done:
                check(value, schema[keyword], schema, field)
                done.add(check)

    def matches(self, value: Any, schema: dict, field: str = "") -> bool:
        try:
            self.validate(value, schema, field)
        except ApiError:
            return False
        return True

    # --- any value ----------------------------------------------------------------------------

    def _ref(self, value: Any, ref: str, schema: dict, field: str) -> None:
        if not ref.startswith(REF_PREFIX):
            raise ValueError(f"$ref {ref} is not one of {REF_PREFIX}...")
        self.validate(value, self.named[ref[len(REF_PREFIX) :]], field)

    def _type(self, value: Any, kinds: str | list[str], schema: dict, field: str) -> None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_is_type(value, k) for k in kinds):
            raise invalid(f"{field or 'body'} must be {_TYPE_NAMES[kinds[0]]}", field or None)

    def _enum(self, value: Any, allowed: list, schema: dict, field: str) -> None:
        # JSON tells true from 1, where Python's `in` would not.
        if not any(value == v and isinstance(value, bool) == isinstance(v, bool) for v in allowed):
            raise invalid(f"{field or 'body'} must be one of {', '.join(repr(v) for v in allowed)}", field or None)

    def _all_of(self, value: Any, branches: list[dict], schema: dict, field: str) -> None:
        for branch in branches:
            self.validate(value, branch, field)

    def _any_of(self, value: Any, branches: list[dict], schema: dict, field: str) -> None:
        if not any(self.matches(value, b, field) for b in branches):
            self._explain(value, branches, f"{field or 'body'} matches none of the forms it may take", field)

    def _one_of(self, value: Any, branches: list[dict], schema: dict, field: str) -> None:
        matched = sum(self.matches(value, b, field) for b in branches)
        if matched == 0:
            self._explain(value, branches, f"{field or 'body'} matches none of the forms it may take", field)
        if matched > 1:
            self._explain(value, branches, f"{field or 'body'} matches more than one of the forms it may take", field)

    def _explain(self, value: Any, branches: list[dict], fallback: str, field: str) -> None:
        if isinstance(branches, Explained):
            branches.why(value)
        raise invalid(fallback, field or None)

    # --- strings ------------------------------------------------------------------------------

    def _min_length(self, value: Any, low: int, schema: dict, field: str) -> None:
        if isinstance(value, str) and len(value) < low:
            what = "must not be empty" if low == 1 else f"must be at least {low} characters"
            raise invalid(f"{field or 'body'} {what}", field or None)

    def _max_length(self, value: Any, high: int, schema: dict, field: str) -> None:
        if isinstance(value, str) and len(value) > high:
            raise invalid(f"{field or 'body'} must be at most {high} characters", field or None)

    def _format(self, value: Any, name: str, schema: dict, field: str) -> None:
        if isinstance(value, str):
            self.formats[name](value, field)

    def _pattern(self, value: Any, pattern: str, schema: dict, field: str) -> None:
        if isinstance(value, str) and not re.search(_ecma(pattern), value):
            raise invalid(f"{field or 'body'} must match {pattern}", field or None)

    # --- numbers ------------------------------------------------------------------------------

    def _range(self, value: Any, _: int, schema: dict, field: str) -> None:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return
        low, high = schema.get("minimum"), schema.get("maximum")
        if (low is None or value >= low) and (high is None or value <= high):
            return
        if low is not None and high is not None:
            raise invalid(f"{field} must be between {low} and {high}", field)
        raise invalid(f"{field} must be at least {low}" if high is None else f"{field} must be at most {high}", field)

    # --- lists --------------------------------------------------------------------------------

    def _min_items(self, value: Any, low: int, schema: dict, field: str) -> None:
        if isinstance(value, list) and len(value) < low:
            raise invalid(f"{field} must have at least {low} item{'s' if low != 1 else ''}", field)

    def _max_items(self, value: Any, high: int, schema: dict, field: str) -> None:
        if isinstance(value, list) and len(value) > high:
            raise invalid(f"{field} may have at most {high} items", field)

    def _items(self, value: Any, items: dict, schema: dict, field: str) -> None:
        if isinstance(value, list):
            for index, item in enumerate(value):
                self.validate(item, items, f"{field}[{index}]")

    # --- objects ------------------------------------------------------------------------------

    def _min_properties(self, value: Any, low: int, schema: dict, field: str) -> None:
        if isinstance(value, dict) and len(value) < low:
            raise invalid(f"{field or 'body'} needs at least {low} {'entry' if low == 1 else 'entries'}", field)

    def _max_properties(self, value: Any, high: int, schema: dict, field: str) -> None:
        if isinstance(value, dict) and len(value) > high:
            raise invalid(f"{field or 'body'} may have at most {high} entries", field)

    def _required(self, value: Any, required: list[str], schema: dict, field: str) -> None:
        if not isinstance(value, dict):
            return
        prefix = f"{field}." if field else ""
        properties = schema.get("properties", {})
        for key in required:
            # A null where null is not allowed is "not given" in this API's bodies: say so.
            if key not in value or (value[key] is None and key in properties and not _admits_null(properties[key])):
                raise invalid(f"{prefix}{key} is required", f"{prefix}{key}")

    def _fields(self, value: Any, _: Any, schema: dict, field: str) -> None:
        """properties, additionalProperties and propertyNames, key by key in the body's order."""
        if not isinstance(value, dict):
            return
        prefix = f"{field}." if field else ""
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        names = schema.get("propertyNames")
        for key, item in value.items():
            if names is not None and not self.matches(key, names):
                try:
                    self.validate(key, names, "it")
                except ApiError as error:
                    raise invalid(f"{prefix}{key} is not a valid name: {error.message}", f"{prefix}{key}") from None
            if key in properties:
                self.validate(item, properties[key], f"{prefix}{key}")
            elif extra is False:
                raise invalid(f"unknown field {prefix}{key}", f"{prefix}{key}")
            elif isinstance(extra, dict):
                self.validate(item, extra, f"{prefix}{key}")
