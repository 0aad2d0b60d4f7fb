"""`vipcheck manifests` against the Kubernetes OpenAPI schemas (tests/data/k8s-openapi-subset.json),
strictly: an unknown field fails, as `kubectl apply --validate=strict` would refuse it."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import yaml

from tests import k8s_openapi
from vipcheck.manifests import DEFAULT_IMAGE, DEFAULT_NAMESPACE, manifests, render

SUBSET = k8s_openapi.load()


def errors(document: dict[str, Any]) -> list[str]:
    name = k8s_openapi.schema_for(SUBSET, document["apiVersion"], document["kind"])
    validator = k8s_openapi.validator(SUBSET, name)
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(document)
    ]


PRINTED = list(yaml.safe_load_all(render(DEFAULT_NAMESPACE, DEFAULT_IMAGE)))


@pytest.mark.parametrize(
    "document", PRINTED, ids=[f"{d['kind']}/{d['metadata']['name']}" for d in PRINTED]
)
def test_every_printed_document_is_valid(document: dict[str, Any]) -> None:
    assert errors(document) == []


def test_each_kind_is_the_schema_that_declares_its_group_version_kind() -> None:
    assert {
        (d["apiVersion"], d["kind"]): k8s_openapi.schema_for(SUBSET, d["apiVersion"], d["kind"])
        for d in PRINTED
    } == {
        ("v1", "Namespace"): "io.k8s.api.core.v1.Namespace",
        ("v1", "ServiceAccount"): "io.k8s.api.core.v1.ServiceAccount",
        ("rbac.authorization.k8s.io/v1", "ClusterRole"): "io.k8s.api.rbac.v1.ClusterRole",
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): (
            "io.k8s.api.rbac.v1.ClusterRoleBinding"
        ),
        ("rbac.authorization.k8s.io/v1", "Role"): "io.k8s.api.rbac.v1.Role",
        ("rbac.authorization.k8s.io/v1", "RoleBinding"): "io.k8s.api.rbac.v1.RoleBinding",
        ("apps/v1", "DaemonSet"): "io.k8s.api.apps.v1.DaemonSet",
    }


def test_a_kind_no_schema_declares_is_refused() -> None:
    with pytest.raises(LookupError, match="0 schemas"):
        k8s_openapi.schema_for(SUBSET, "apps/v1beta1", "DaemonSet")


def daemon_set() -> dict[str, Any]:
    return copy.deepcopy(manifests(DEFAULT_NAMESPACE, DEFAULT_IMAGE)[-1])


def container(document: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = document["spec"]["template"]["spec"]["containers"][0]
    return found


def test_a_misspelt_field_deep_in_the_pod_template_is_caught() -> None:
    broken = daemon_set()
    security = container(broken)["securityContext"]
    security["readOnlyRootFileSystem"] = security.pop("readOnlyRootFilesystem")
    assert errors(broken) == [
        "spec/template/spec/containers/0/securityContext: Additional properties are not "
        "allowed ('readOnlyRootFileSystem' was unexpected)"
    ]


def test_a_field_of_the_wrong_type_is_caught() -> None:
    broken = daemon_set()
    broken["spec"]["template"]["spec"]["hostNetwork"] = "true"
    assert errors(broken) == ["spec/template/spec/hostNetwork: 'true' is not of type 'boolean'"]


def test_a_missing_required_field_is_caught() -> None:
    broken = daemon_set()
    del broken["spec"]["selector"]
    assert errors(broken) == ["spec: 'selector' is a required property"]


def test_a_rule_without_verbs_and_a_binding_without_role_are_caught() -> None:
    role, binding = [copy.deepcopy(d) for d in PRINTED if d["kind"] in ("Role", "RoleBinding")][:2]
    del role["rules"][0]["verbs"]
    del binding["roleRef"]
    assert errors(role) == ["rules/0: 'verbs' is a required property"]
    assert errors(binding) == [": 'roleRef' is a required property"]  # at the top


def test_strict_refuses_unknown_fields_only_where_upstream_lists_properties() -> None:
    # Labels are a map (additionalProperties: string): any key is allowed there, a number not.
    namespace = copy.deepcopy(PRINTED[0])
    namespace["metadata"]["labels"]["example.com/any-key"] = "ok"
    assert errors(namespace) == []
    namespace["metadata"]["labels"]["example.com/any-key"] = 1
    assert errors(namespace) == ["metadata/labels/example.com/any-key: 1 is not of type 'string'"]


def test_the_vendored_subset_is_closed_and_reduced() -> None:
    # Regenerating from itself changes nothing: every reference resolves within it, nothing
    # unreachable from the roots is kept, and only validating keywords are.
    schemas = SUBSET["components"]["schemas"]
    assert k8s_openapi.closure(schemas, k8s_openapi.ROOTS) == schemas
    assert SUBSET["roots"] == list(k8s_openapi.ROOTS)
    assert {file["path"] for file in SUBSET["source"]["files"]} == {
        "api/openapi-spec/v3/api__v1_openapi.json",
        "api/openapi-spec/v3/apis__apps__v1_openapi.json",
        "api/openapi-spec/v3/apis__rbac.authorization.k8s.io__v1_openapi.json",
    }


def test_closure_names_a_reference_it_cannot_resolve() -> None:
    schemas = {"a": {"properties": {"b": {"$ref": "#/components/schemas/b"}}, "description": "x"}}
    with pytest.raises(KeyError, match="b: referred to, but in none of the files"):
        k8s_openapi.closure(schemas, ["a"])
    schemas["b"] = {"type": "string", "default": ""}
    assert k8s_openapi.closure(schemas, ["a"]) == {
        "a": {"properties": {"b": {"$ref": "#/components/schemas/b"}}},
        "b": {"type": "string"},
    }


def client_type(schema: dict[str, Any]) -> str:
    """A property's type spelled as the official client's models spell it (`List[V1EnvVar]`)."""
    if "$ref" in schema:
        return {
            "Quantity": "str",
            "IntOrString": "object",
            "Time": "datetime",
            "MicroTime": "datetime",
            "FieldsV1": "object",
        }.get(name := schema["$ref"].rsplit(".", 1)[-1], f"V1{name}")
    if "allOf" in schema:
        return client_type(schema["allOf"][0])
    kind = schema.get("type")
    if kind == "array":
        return f"List[{client_type(schema['items'])}]"
    if kind == "object" and schema.get("additionalProperties"):
        return f"Dict[str, {client_type(schema['additionalProperties'])}]"
    return {"string": "str", "integer": "int", "boolean": "bool", "number": "float"}.get(
        str(kind), "object"
    )


def normalized(spelled: str) -> str:
    """The client's spelling across its releases: `list[X]`, `dict(str, X)` before its models
    were pydantic's, `CoreV1ResourceClaim` where two groups have a kind of that name."""
    spelled = re.sub(r"\bdict\(str, (.*)\)", r"Dict[str, \1]", spelled).replace("list[", "List[")
    return spelled.replace("CoreV1", "V1").replace("RbacV1", "V1")


def test_the_vendored_schemas_agree_with_the_official_clients_models() -> None:
    """The subset was read upstream and copied keyword by keyword (tests/k8s_openapi.py): every
    property it shares with the kubernetes client's generated model of the same kind (another
    copy of the same OpenAPI spec, at the client's release) has the same type there, and they
    share nearly all properties (each release adds a few)."""
    from kubernetes import client  # noqa: PLC0415 - only this test reads the models

    shared, differ, compared = 0, [], 0
    for name, schema in SUBSET["components"]["schemas"].items():
        version, kind = name.split(".")[-2:]
        model = getattr(client, version.capitalize() + kind, None)
        if model is None or "properties" not in schema:
            continue
        compared += 1
        attributes = {json_name: attr for attr, json_name in model.attribute_map.items()}
        for field_name, field in schema["properties"].items():
            if field_name not in attributes:
                continue
            shared += 1
            theirs = normalized(model.openapi_types[attributes[field_name]])
            ours = client_type(field)
            if ours != theirs:
                differ.append(f"{kind}.{field_name}: {ours} here, {theirs} in the client")
        total = len(schema["properties"].keys() | attributes.keys())
        assert total - len(schema["properties"].keys() & attributes.keys()) <= 3, kind
    assert differ == []
    assert compared > 100
    assert shared > 500
