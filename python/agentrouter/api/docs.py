"""``/api/docs``: a readable reference page rendered from the OpenAPI document.

Self-contained HTML (inline CSS, no script, nothing fetched from anywhere): the
introduction, then each operation with its parameters, request body fields,
responses and the fields of the answer.
"""

from __future__ import annotations

import html
import re
from functools import cache
from typing import Any

from agentrouter.api.openapi import openapi_document

_CSS = """
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#fafbfc}
main{max-width:980px;margin:0 auto;padding:24px 32px 64px}
h1{font-size:28px;margin:8px 0}h2{margin-top:40px;border-bottom:1px solid #dde1e6;padding-bottom:4px}
h3{font-size:17px;margin:28px 0 6px;font-family:ui-monospace,SFMono-Regular,Menlo,monospace}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:13px}
code{background:#eef1f4;padding:1px 4px;border-radius:3px}
.op{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:4px 18px 14px;margin:18px 0}
.m{display:inline-block;min-width:58px;text-align:center;border-radius:4px;color:#fff;font-size:12px;
padding:2px 6px;margin-right:8px;font-weight:600}
.GET{background:#2f7d32}.POST{background:#1565c0}.PATCH{background:#8e6a00}.DELETE{background:#b3261e}
table{border-collapse:collapse;width:100%;margin:6px 0 10px}
th,td{text-align:left;border-bottom:1px solid #eceff2;padding:4px 8px;vertical-align:top;font-size:14px}
th{font-size:12px;text-transform:uppercase;color:#59606b}
nav a{margin-right:14px}.muted{color:#59606b}
"""


@cache
def docs_html() -> bytes:
    spec = openapi_document()
    schemas = spec["components"]["schemas"]
    info = spec["info"]
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{_e(info['title'])}</title>",
        "<meta name=viewport content='width=device-width,initial-scale=1'>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>{_e(info['title'])} <span class=muted>v{_e(info['version'])}</span></h1>",
        (
            "<p>The machine-readable description is <a href='/api/openapi.json'><code>/api/openapi.json</code></a> "
            "(OpenAPI 3.1).</p>"
        ),
        _markdown(info["description"]),
        "<nav>" + "".join(f"<a href='#tag-{_e(t['name'])}'>{_e(t['name'])}</a>" for t in spec["tags"]) + "</nav>",
    ]
    for tag in spec["tags"]:
        parts.append(f"<h2 id='tag-{_e(tag['name'])}'>{_e(tag['name'].capitalize())}</h2>")
        parts.append(f"<p>{_e(tag['description'])}</p>")
        for path, item in spec["paths"].items():
            for method, op in item.items():
                if tag["name"] in op.get("tags", ()):
                    parts.append(_operation(method.upper(), path, op, schemas))
    parts.append("<h2 id='schemas'>Objects</h2>")
    for name in sorted(schemas):
        parts.append(f"<h3 id='schema-{_e(name)}'>{_e(name)}</h3>")
        if schemas[name].get("description"):
            parts.append(_markdown(schemas[name]["description"]))
        parts.append(_fields(schemas[name], schemas))
    parts.append("</main></body></html>")
    return "".join(parts).encode()


def _operation(method: str, path: str, op: dict[str, Any], schemas: dict[str, Any]) -> str:
    out = [
        f"<div class=op id='{_e(op['operationId'])}'>",
        f"<h3><span class='m {method}'>{method}</span>{_e(path)}</h3>",
        f"<p><b>{_e(op['summary'])}.</b> {_inline_md(op.get('description', ''))}</p>",
    ]
    params = op.get("parameters", [])
    if params:
        out.append("<table><tr><th>Parameter</th><th>In</th><th>Type</th><th>Description</th></tr>")
        for p in params:
            schema = p.get("schema", {})
            desc = p.get("description") or schema.get("description") or ""
            out.append(
                f"<tr><td><code>{_e(p['name'])}</code></td><td>{_e(p['in'])}</td>"
                f"<td class=mono>{_e(_type(schema, schemas))}</td><td>{_inline_md(desc)}</td></tr>"
            )
        out.append("</table>")
    body = op.get("requestBody")
    if body:
        ref = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        out.append(f"<p>Body: <a href='#schema-{_e(ref)}'><code>{_e(ref)}</code></a> (JSON)</p>")
        out.append(_fields(schemas[ref], schemas))
    out.append("<table><tr><th>Status</th><th>Meaning</th><th>Body</th></tr>")
    for status, resp in op["responses"].items():
        schema = resp.get("content", {}).get("application/json", {}).get("schema", {})
        ref = schema.get("$ref", "").rsplit("/", 1)[-1]
        link = f"<a href='#schema-{_e(ref)}'><code>{_e(ref)}</code></a>" if ref else ""
        out.append(f"<tr><td>{_e(status)}</td><td>{_inline_md(resp['description'])}</td><td>{link}</td></tr>")
    out.append("</table></div>")
    return "".join(out)


def _fields(schema: dict[str, Any], schemas: dict[str, Any]) -> str:
    props = schema.get("properties", {})
    if not props:
        return ""
    required = set(schema.get("required", ()))
    rows = ["<table><tr><th>Field</th><th>Type</th><th>Description</th></tr>"]
    for name, prop in props.items():
        desc = prop.get("description", "")
        for variant in prop.get("anyOf", ()):
            desc = desc or variant.get("description", "")
        mark = " <span class=muted>required</span>" if name in required else ""
        default = f" Default: <code>{_e(_json(prop['default']))}</code>." if "default" in prop else ""
        rows.append(
            f"<tr><td><code>{_e(name)}</code>{mark}</td><td class=mono>{_type_html(prop, schemas)}</td>"
            f"<td>{_inline_md(desc)}{default}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def _type(schema: dict[str, Any], schemas: dict[str, Any]) -> str:
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[1]
    if "anyOf" in schema:
        return " | ".join(_type(s, schemas) for s in schema["anyOf"])
    if "enum" in schema:
        return " | ".join(_json(v) for v in schema["enum"])
    kind = str(schema.get("type", "any"))
    if kind == "array":
        return f"array of {_type(schema.get('items', {}), schemas)}"
    limits = []
    for key, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("maxLength", "len ≤")):
        if key in schema:
            limits.append(f"{sign} {_json(schema[key])}")
    return kind + (f" ({', '.join(limits)})" if limits else "")


def _type_html(schema: dict[str, Any], schemas: dict[str, Any]) -> str:
    text = _e(_type(schema, schemas))
    for name in schemas:
        text = re.sub(rf"\b{re.escape(name)}\b", f"<a href='#schema-{name}'>{name}</a>", text)
    return text


def _json(value: Any) -> str:
    import msgspec

    return msgspec.json.encode(value).decode()


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _inline_md(text: str) -> str:
    escaped = _e(text)
    escaped = re.sub(r"``?([^`]+)``?", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", escaped)


def _markdown(text: str) -> str:
    return "".join(f"<p>{_inline_md(p.replace(chr(10), ' '))}</p>" for p in text.strip().split("\n\n"))
