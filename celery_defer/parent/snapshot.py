"""The JSON snapshot of ``defer()``'s data, and the checks that keep it harmless to a worker.

Data that JSON can encode may still poison the workers that receive it:

- nesting: Celery's worker pickles a task's arguments to hand them to its pool
  process, and pickling recurses once per level; data ~600 levels deep made the
  worker's main process die with ``RecursionError`` on every delivery. Data is
  refused deeper than :data:`MAX_DATA_DEPTH`.
- surrogates (``"\\udc80"``): ``json`` escapes them, but nothing downstream can
  encode them as UTF-8 (Redis clients, message bodies), and a pair of them comes
  back as the one character it stands for.
- non-``str`` keys: ``json`` turns ``{1: "a"}`` into ``{"1": "a"}``, so the handler
  would get data that is not what the caller passed.

Plain data is checked in one walk over its containers (depth and keys);
validated data by scanning its text (a few ``str`` scans in C, a Python scan
only when the text has more brackets than the limit), so a ``defer()`` call
costs little more than its ``json.dumps``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from celery_defer.config.options import FunctionOptions
from celery_defer.config.schemas import encode_plain
from celery_defer.errors import AsyncSchemaError, CallSkipped, SchemaRejected

#: The deepest nesting of objects and arrays ``defer()`` accepts in ``data`` (the
#: top-level object is level 1). Far below what breaks Python's recursion in the
#: worker (~600 levels), far above what event data needs.
MAX_DATA_DEPTH = 64

# In JSON text every backslash starts an escape, so scanning left to right and
# consuming whole escapes keeps the scan aligned; a \ud800-\udfff escape that is
# not half of a high-low pair is a lone surrogate.
_SURROGATE_ESCAPES = re.compile(r"\\\\|\\ud[89ab][0-9a-f]{2}\\ud[c-f][0-9a-f]{2}|(\\ud[89a-f][0-9a-f]{2})")
_SCALARS = frozenset({str, int, float, bool, type(None)})
_TOO_DEEP = f"data is nested deeper than {MAX_DATA_DEPTH} levels (MAX_DATA_DEPTH)"


def snapshot(options: FunctionOptions, data: object) -> str:
    """Validate and encode ``data`` for ``options``' function; return the JSON text.

    Raises:
        CallSkipped: the data breaks a call-site rule; the message says which.
    """
    if data is None:
        data = {}
    # type() first: isinstance() against pydantic's and collections' ABCs is slow.
    plain = options.schema is None and (type(data) is dict or not isinstance(data, BaseModel))
    if type(data) is not dict and not isinstance(data, (Mapping, BaseModel)):
        raise CallSkipped(
            f"data must be a JSON object (a dict or a pydantic model), got {type(data).__name__}"
        )
    try:
        # With a schema or a model, the receiver validates the data again and its
        # types say what keys become; plain data reaches the handler as JSON made it.
        if plain:
            text = encode_plain(data)
        elif options.schema is not None:
            text = options.schema.to_json(data)
        else:
            text = data.model_dump_json()  # type: ignore[union-attr]
    except AsyncSchemaError as exc:
        raise CallSkipped(f"the schema of {options.id!r} cannot validate synchronously: {exc}") from exc
    except SchemaRejected as exc:
        raise CallSkipped(f"data failed the schema of {options.id!r}: {exc}") from exc
    except RecursionError as exc:
        raise CallSkipped(_TOO_DEEP) from exc
    except (TypeError, ValueError) as exc:  # PydanticSerializationError is a ValueError
        raise CallSkipped(f"data is not JSON-serialisable: {exc}") from exc
    if plain:
        _check_plain(data, 1)
    elif text.count("{") + text.count("[") > MAX_DATA_DEPTH and _depth(text) > MAX_DATA_DEPTH:
        raise CallSkipped(_TOO_DEEP)
    if "\\ud" in text and _has_surrogates(text, data if plain else None):
        raise CallSkipped("data holds a surrogate (a str that cannot be encoded as UTF-8)")
    return text


def _has_surrogates(text: str, source: object | None) -> bool:
    """Whether the data behind ``text`` holds a surrogate code point.

    Only called when the text has a ``\\ud...`` escape: a real astral character
    (an emoji) or a surrogate in a ``str``. Escapes cannot tell a str holding a
    surrogate pair from the character the pair stands for, so plain data is
    encoded again as UTF-8, which refuses any surrogate; other text is scanned
    for escapes that are not half of a pair.
    """
    if source is not None:
        try:
            json.dumps(source, ensure_ascii=False, check_circular=False).encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    return any(match.group(1) for match in _SURROGATE_ESCAPES.finditer(text))


def _check_plain(data: object, depth: int) -> None:
    """Refuse plain data nested deeper than the limit or holding a non-str key.

    One recursive walk over the containers only; it stops at the limit, so it
    never recurses more than :data:`MAX_DATA_DEPTH` levels.
    """
    if depth > MAX_DATA_DEPTH:
        raise CallSkipped(_TOO_DEEP)
    if type(data) is dict or isinstance(data, Mapping):
        for key in data:
            if type(key) is not str and not isinstance(key, str):
                raise CallSkipped(
                    f"data has a key that is not a str ({key!r}); JSON would change it on the way "
                    "to the function"
                )
        values: Any = data.values()
    else:
        values = data
    for value in values:
        kind = type(value)
        if kind in _SCALARS:
            continue
        if kind is dict or kind is list or isinstance(value, (Mapping, list, tuple)):
            _check_plain(value, depth + 1)


def _depth(text: str) -> int:
    """The nesting depth of JSON text, brackets inside strings not counted."""
    deepest = depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "}]":
            depth -= 1
    return deepest
