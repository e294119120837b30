"""JSON Schemas of the wire types (`protocol`): pydantic payload models and typed-dict
results alike, generated together so shared pieces are one component each."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import TypeAdapter

Named = tuple[str, Any]  # a component name and the type it describes


def named(kind: Any, name: str | None = None) -> Named:
    """A wire type under its class name, or `name` for an alias such as a union."""
    return name or kind.__name__, kind


def component_schemas(types: Iterable[Named], ref_template: str) -> dict[str, Any]:
    """The schema of every type in `types` and of everything they use, keyed by name, with
    `$ref`s built from `ref_template` (which has a `{model}` placeholder)."""
    unique = dict(types)
    mode: Literal["validation"] = "validation"
    adapters = [(name, mode, TypeAdapter(kind)) for name, kind in unique.items()]
    top, definitions = TypeAdapter.json_schemas(adapters, ref_template=ref_template)
    schemas: dict[str, Any] = dict(definitions.get("$defs", {}))
    for (name, _), schema in top.items():
        if schema.get("$ref") == ref(name, ref_template)["$ref"]:
            continue  # a class: its schema is the definition under its own name
        if name in schemas:
            raise RuntimeError(f"schema name clash: {name} is two different types")
        schemas[name] = schema
    missing = [name for name in unique if name not in schemas]
    if missing:
        raise RuntimeError(f"schemas not under their own names: {missing}")
    return schemas


def ref(name: str, template: str) -> dict[str, str]:
    return {"$ref": template.format(model=name)}


def query_schema(prop: dict[str, Any]) -> dict[str, Any]:
    """A payload field as a query parameter's schema: present or absent, never null."""
    schema = {k: v for k, v in prop.items() if k not in ("title", "description")}
    options = schema.pop("anyOf", None)
    if options is not None:
        kept = [option for option in options if option.get("type") != "null"]
        if len(kept) == 1:
            schema.update(kept[0])
        else:
            schema["anyOf"] = kept
    if "default" in schema and schema["default"] is None:
        del schema["default"]
    return schema
