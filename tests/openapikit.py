"""Test helpers for the API descriptions (docs/openapi.yaml, docs/hub-openapi.yaml): load a document,
list what a maintained validator (openapi-spec-validator) and a YAML-typing walk find wrong with it, and
check a response body against the schema the document gives for its path, method and status."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from openapi_spec_validator import OpenAPIV30SpecValidator

DOCS = Path(__file__).resolve().parents[1] / "docs"
TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


def load(name: str) -> dict:
    return yaml.safe_load((DOCS / name).read_text(encoding="utf-8"))


def _enum_problems(node: Any, where: str) -> list[str]:
    """Enum and default values whose YAML type differs from the schema's `type` (`[yes, no]` loads as
    booleans, `default: 1.0` under `type: string` as a number)."""
    out: list[str] = []
    if isinstance(node, dict):
        kind = node.get("type")
        values = list(node["enum"]) if isinstance(node.get("enum"), list) else []
        values += [node["default"]] if "default" in node else []
        if kind in TYPES:
            for v in values:
                ok = isinstance(v, TYPES[kind]) and not (
                    kind in ("integer", "number") and isinstance(v, bool)
                )
                if not ok and not (v is None and node.get("nullable")):
                    out.append(f"{where}: enum/default value {v!r} is not a {kind}")
        for k, v in node.items():
            out += _enum_problems(v, f"{where}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _enum_problems(v, f"{where}/{i}")
    return out


def problems(spec: dict) -> list[str]:
    errors = [e.message for e in OpenAPIV30SpecValidator(spec).iter_errors()]
    return errors + _enum_problems(spec, "")


def documented_operations(spec: dict) -> set[tuple[str, str]]:
    methods = {"get", "put", "post", "delete", "patch", "head", "options"}
    return {(p, m.upper()) for p, ops in spec["paths"].items() for m in ops if m in methods}


def flask_operations(app, keep) -> set[tuple[str, str]]:
    """(OpenAPI path, method) of every route `keep(rule)` selects; `<name>`/`<conv:name>` -> `{name}`."""
    out = set()
    for rule in app.url_map.iter_rules():
        if not keep(rule.rule):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        out |= {(path, m) for m in rule.methods - {"HEAD", "OPTIONS"}}
    return out


def response_schema(spec: dict, path: str, method: str, status: int, media: str = "application/json"):
    op = spec["paths"][path][method.lower()]
    responses = op["responses"]
    resp = responses.get(str(status)) or responses.get("default")
    assert resp is not None, f"{method} {path}: status {status} is not documented"
    if "$ref" in resp:
        resp = spec["components"]["responses"][resp["$ref"].rsplit("/", 1)[1]]
    content = resp.get("content") or {}
    assert media in content, f"{method} {path} {status}: no {media} body documented"
    return content[media]["schema"]


def check_status(spec: dict, path: str, method: str, response) -> None:
    """The answer's status is documented, and so is its media type when the document gives one."""
    resp = spec["paths"][path][method.lower()]["responses"].get(str(response.status_code))
    assert resp is not None, f"{method} {path}: status {response.status_code} is not documented"
    if "$ref" in resp:
        resp = spec["components"]["responses"][resp["$ref"].rsplit("/", 1)[1]]
    if resp.get("content"):
        assert response.mimetype in resp["content"], f"{method} {path}: {response.mimetype} not documented"


def check(spec: dict, path: str, method: str, response) -> Any:
    """Validate a Flask test response's JSON body against the document; returns the body."""
    schema = response_schema(spec, path, method, response.status_code)
    body = response.get_json()
    assert body is not None, f"{method} {path}: {response.status_code} answered no JSON"
    # The components ride along so "#/components/..." references resolve inside this one schema.
    root = {**schema, "components": spec.get("components", {})}
    errors = sorted(
        OAS30Validator(root, format_checker=oas30_format_checker).iter_errors(body), key=lambda e: e.path
    )
    assert not errors, f"{method} {path} {response.status_code}: " + "; ".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]
    )
    return body


def check_request(spec: dict, path: str, method: str, body: Any, media: str = "application/json") -> None:
    """Validate a request body (what a client sends) against the document's requestBody schema."""
    content = spec["paths"][path][method.lower()]["requestBody"]["content"]
    root = {**content[media]["schema"], "components": spec.get("components", {})}
    errors = list(OAS30Validator(root, format_checker=oas30_format_checker).iter_errors(body))
    assert not errors, f"{method} {path} request: " + "; ".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]
    )
