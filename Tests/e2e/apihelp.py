"""HTTP helpers for the REST tests, and validation of real responses against docs/openapi.yaml."""
import json
import os
import urllib.error
import urllib.request

import yaml
from openapi_schema_validator import OAS31Validator

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SPEC = yaml.safe_load(open(os.path.join(ROOT, "docs", "openapi.yaml")))


def call(g, method, path, body=None, key=None, headers=None, raw=None, timeout=20):
    h = {"Content-Type": "application/json", **(headers or {})}
    if key:
        h["Authorization"] = f"Bearer {key}"
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(g.http + path, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            return e.code, e.headers, json.loads(text)
        except ValueError:
            return e.code, e.headers, text


def conforms(spec_path, method, status, body):
    """Validates a real response body against the documented schema for that status."""
    op = SPEC["paths"][spec_path][method.lower()]
    assert str(status) in op["responses"], f"{method} {spec_path} answered {status}, which the spec does not document"
    resp = op["responses"][str(status)]
    if "$ref" in resp:
        resp = SPEC["components"]["responses"][resp["$ref"].rsplit("/", 1)[-1]]
    schema = resp["content"]["application/json"]["schema"]
    OAS31Validator({**schema, "components": SPEC["components"]}).validate(body)
    return body
