"""The Kubernetes OpenAPI v3 schemas of the objects `vipcheck manifests` prints, and a strict
validator for them.

tests/data/k8s-openapi-subset.json holds the component schemas reachable from the kinds in
ROOTS, reduced to the keywords that validate (no descriptions, defaults, or list and patch
annotations), with a header naming the upstream files and commits they were read from. To
regenerate it from kubernetes/kubernetes `api/openapi-spec/v3/` files (the apps file first: where
files define the same schema, as they do ObjectMeta, the first one's is kept):

    python tests/k8s_openapi.py COMMIT DIR/apis__apps__v1_openapi.json \
        DIR/api__v1_openapi.json DIR/apis__rbac.authorization.k8s.io__v1_openapi.json \
        > tests/data/k8s-openapi-subset.json

(a file read at another commit than the first may say so as PATH@COMMIT).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SUBSET = Path(__file__).parent / "data" / "k8s-openapi-subset.json"
SCHEMAS = "#/components/schemas/"
ROOTS = (
    "io.k8s.api.core.v1.Namespace",
    "io.k8s.api.core.v1.ServiceAccount",
    "io.k8s.api.rbac.v1.ClusterRole",
    "io.k8s.api.rbac.v1.ClusterRoleBinding",
    "io.k8s.api.rbac.v1.Role",
    "io.k8s.api.rbac.v1.RoleBinding",
    "io.k8s.api.apps.v1.DaemonSet",
)
# What validates an instance; everything else in the upstream schemas documents it.
KEYWORDS = frozenset(
    {
        "$ref",
        "additionalProperties",
        "allOf",
        "anyOf",
        "enum",
        "format",
        "items",
        "oneOf",
        "properties",
        "required",
        "type",
        "x-kubernetes-group-version-kind",
        "x-kubernetes-int-or-string",
        "x-kubernetes-preserve-unknown-fields",
    }
)
GVK = "x-kubernetes-group-version-kind"


def reduced(schema: Any) -> Any:
    """A schema with only the KEYWORDS, at every depth (property names are kept as they are)."""
    if isinstance(schema, list):
        return [reduced(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    kept: dict[str, Any] = {}
    for key, value in schema.items():
        if key not in KEYWORDS:
            continue
        if key == "properties":
            kept[key] = {name: reduced(sub) for name, sub in value.items()}
        elif key == GVK:
            kept[key] = value
        else:
            kept[key] = reduced(value)
    return kept


def refs(schema: Any) -> Iterator[str]:
    """The component names a schema refers to, at any depth."""
    if isinstance(schema, list):
        for item in schema:
            yield from refs(item)
    elif isinstance(schema, dict):
        for key, value in schema.items():
            if key == "$ref":
                yield str(value).removeprefix(SCHEMAS)
            else:
                yield from refs(value)


def closure(schemas: Mapping[str, Any], roots: Sequence[str]) -> dict[str, Any]:
    """The roots and every schema they reach, reduced; a reference to a missing one raises."""
    found: dict[str, Any] = {}
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name in found:
            continue
        if name not in schemas:
            raise KeyError(f"{name}: referred to, but in none of the files")
        found[name] = reduced(schemas[name])
        pending.extend(refs(found[name]))
    return dict(sorted(found.items()))


def subset(commit: str, files: Sequence[str]) -> dict[str, Any]:
    """The vendored document, from upstream files given as PATH or PATH@COMMIT."""
    merged: dict[str, Any] = {}
    sources = []
    for spec in files:
        path, _, own_commit = spec.partition("@")
        document = json.loads(Path(path).read_text())
        for name, schema in document["components"]["schemas"].items():
            merged.setdefault(name, schema)
        sources.append(
            {
                "path": f"api/openapi-spec/v3/{Path(path).name}",
                "commit": own_commit or commit,
            }
        )
    return {
        "source": {"repository": "kubernetes/kubernetes", "files": sources},
        "note": "components.schemas reachable from the roots, reduced to validating keywords "
        "by tests/k8s_openapi.py",
        "roots": list(ROOTS),
        "components": {"schemas": closure(merged, ROOTS)},
    }


def load() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(SUBSET.read_text())
    return document


def strict(schema: Any) -> Any:
    """The schema with unknown properties refused: every object schema that lists properties
    and says nothing of others gets additionalProperties false (upstream never sets it)."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    tightened = {
        key: (
            {name: strict(sub) for name, sub in value.items()}
            if key == "properties"
            else value
            if key == GVK
            else strict(value)
        )
        for key, value in schema.items()
    }
    if "properties" in tightened and "additionalProperties" not in tightened:
        tightened["additionalProperties"] = False
    return tightened


def schema_for(document: Mapping[str, Any], api_version: str, kind: str) -> str:
    """The one component whose x-kubernetes-group-version-kind is this apiVersion and kind."""
    group, _, version = api_version.rpartition("/")
    names = [
        str(name)
        for name, schema in document["components"]["schemas"].items()
        for gvk in schema.get(GVK, [])
        if (gvk["group"], gvk["version"], gvk["kind"]) == (group, version, kind)
    ]
    if len(names) != 1:
        raise LookupError(f"{api_version} {kind}: {len(names)} schemas declare it: {names}")
    return names[0]


def validator(document: Mapping[str, Any], name: str) -> Draft202012Validator:
    """A strict validator of one component, its references resolved within the document."""
    components = strict(document["components"])
    return Draft202012Validator({"$ref": f"{SCHEMAS}{name}", "components": components})


if __name__ == "__main__":
    json.dump(subset(sys.argv[1], sys.argv[2:]), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
