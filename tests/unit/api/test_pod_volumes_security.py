"""Pod volumes, volumeMounts, securityContext and imagePullPolicy defaulting: the shapes,
Kubernetes' validation wording and field paths, and the defaults admission fills in."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.api import Pod, apply_defaults, default_pull_policy, kind_info, validate_object
from shoal.errors import InvalidError

BASE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "p"},
    "spec": {
        "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 2000},
        "volumes": [
            {"name": "scratch", "emptyDir": {}},
            {"name": "cache", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
            {"name": "apps", "hostPath": {"path": "/srv/apps", "type": "DirectoryOrCreate"}},
        ],
        "containers": [
            {
                "name": "c",
                "image": "busybox:1.36",
                "volumeMounts": [
                    {"name": "scratch", "mountPath": "/tmp/scratch"},
                    {"name": "apps", "mountPath": "/app", "readOnly": True, "subPath": "web"},
                ],
                "securityContext": {
                    "runAsUser": 1001,
                    "runAsNonRoot": True,
                    "readOnlyRootFilesystem": True,
                    "allowPrivilegeEscalation": False,
                },
            }
        ],
    },
}


def pod(**edits: Any) -> dict[str, Any]:
    """A copy of BASE; ``edits`` maps a dotted path (with [i] indexes) to a new value."""
    doc = copy.deepcopy(BASE)
    for path, value in edits.items():
        parts = path.replace("[", ".").replace("]", "").split(".")
        node: Any = doc
        for p in parts[:-1]:
            node = node[int(p)] if p.isdigit() else node[p]
        last = parts[-1]
        if last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value
    return doc


def errors(doc: dict[str, Any]) -> dict[str, tuple[str, str]]:
    with pytest.raises(InvalidError) as info:
        validate_object(kind_info("Pod"), doc)
    return {c.field: (c.reason, c.message) for c in info.value.causes}


def test_valid_pod_parses_with_every_new_field() -> None:
    obj = validate_object(kind_info("Pod"), BASE)
    assert isinstance(obj, Pod)
    v = obj.spec.volumes
    assert [x.name for x in v] == ["scratch", "cache", "apps"]
    assert v[0].empty_dir is not None and v[0].empty_dir.medium == ""
    assert v[1].empty_dir is not None and v[1].empty_dir.medium == "Memory"
    assert v[2].host_path is not None and v[2].host_path.type == "DirectoryOrCreate"
    m = obj.spec.containers[0].volume_mounts[1]
    assert (m.name, m.mount_path, m.read_only, m.sub_path) == ("apps", "/app", True, "web")
    sc = obj.spec.containers[0].security_context
    assert sc is not None and (sc.run_as_user, sc.run_as_non_root) == (1001, True)
    assert obj.spec.security_context is not None and obj.spec.security_context.fs_group == 2000


def test_wire_form_round_trips_an_empty_emptydir() -> None:
    """to_dict drops empty maps; ``emptyDir: {}`` must still come back as an emptyDir."""
    obj = validate_object(kind_info("Pod"), BASE)
    assert isinstance(obj, Pod)
    again = Pod.from_dict(obj.to_dict())
    assert again.spec.volumes[0].empty_dir is not None
    assert again.spec.volumes == obj.spec.volumes
    assert again.spec.containers[0].security_context == obj.spec.containers[0].security_context


def test_volume_needs_exactly_one_source() -> None:
    errs = errors(pod(**{"spec.volumes[0]": {"name": "scratch"}}))
    assert errs["spec.volumes[0]"] == (
        "FieldValueRequired",
        "Required value: must specify a volume type",
    )
    both = {"name": "scratch", "emptyDir": {}, "hostPath": {"path": "/x"}}
    errs = errors(pod(**{"spec.volumes[0]": both}))
    assert errs["spec.volumes[0].hostPath"] == (
        "FieldValueForbidden",
        "Forbidden: may not specify more than 1 volume type",
    )


def test_volume_names_unique_and_dns_labels() -> None:
    errs = errors(pod(**{"spec.volumes[1].name": "scratch", "spec.volumes[2].name": "Bad_Name"}))
    assert errs["spec.volumes[1].name"] == ("FieldValueDuplicate", 'Duplicate value: "scratch"')
    reason, message = errs["spec.volumes[2].name"]
    assert reason == "FieldValueInvalid"
    assert message.startswith('Invalid value: "Bad_Name": a lowercase RFC 1123 label')


def test_hostpath_must_be_absolute_without_backsteps_and_type_known() -> None:
    errs = errors(pod(**{"spec.volumes[2].hostPath.path": "srv/apps"}))
    assert errs["spec.volumes[2].hostPath.path"] == (
        "FieldValueInvalid",
        'Invalid value: "srv/apps": must be an absolute path',
    )
    # Shape errors (an unknown enumeration value) come from the model pass.
    errs = errors(pod(**{"spec.volumes[2].hostPath.type": "Socket"}))
    assert errs["spec.volumes[2].hostPath.type"][1].startswith(
        'Unsupported value: "Socket": supported values: "", "DirectoryOrCreate"'
    )
    errs = errors(pod(**{"spec.volumes[2].hostPath.path": "/srv/../etc"}))
    assert errs["spec.volumes[2].hostPath.path"][1] == (
        "Invalid value: \"/srv/../etc\": must not contain '..'"
    )
    errs = errors(pod(**{"spec.volumes[2].hostPath.path": ""}))
    assert errs["spec.volumes[2].hostPath.path"] == ("FieldValueRequired", "Required value")


def test_emptydir_size_limit_and_medium() -> None:
    errs = errors(pod(**{"spec.volumes[1].emptyDir": {"medium": "Disk"}}))
    assert errs["spec.volumes[1].emptyDir.medium"][1].startswith('Unsupported value: "Disk"')
    errs = errors(pod(**{"spec.volumes[1].emptyDir": {"sizeLimit": "-1Gi"}}))
    assert errs["spec.volumes[1].emptyDir.sizeLimit"][1] == (
        'Invalid value: "-1Gi": must be greater than or equal to 0'
    )
    errs = errors(pod(**{"spec.volumes[1].emptyDir": {"sizeLimit": "lots"}}))
    assert "must be a quantity" in errs["spec.volumes[1].emptyDir.sizeLimit"][1]


def test_volume_mount_rules() -> None:
    mounts = [
        {"name": "nope", "mountPath": "/a"},
        {"name": "scratch", "mountPath": "relative"},
        {"name": "scratch", "mountPath": "/a/"},
        {"name": "apps", "mountPath": "/b", "subPath": "/abs"},
        {"name": "apps", "mountPath": "/c", "subPath": "x/../../y"},
        {"name": "", "mountPath": ""},
    ]
    errs = errors(pod(**{"spec.containers[0].volumeMounts": mounts}))
    p = "spec.containers[0].volumeMounts"
    assert errs[f"{p}[0].name"] == ("FieldValueNotFound", 'Not found: "nope"')
    assert errs[f"{p}[1].mountPath"][1] == 'Invalid value: "relative": must be an absolute path'
    assert errs[f"{p}[2].mountPath"] == (
        "FieldValueInvalid",
        'Invalid value: "/a/": must be unique',
    )
    assert errs[f"{p}[3].subPath"][1] == 'Invalid value: "/abs": must be a relative path'
    assert errs[f"{p}[4].subPath"][1] == "Invalid value: \"x/../../y\": must not contain '..'"
    assert errs[f"{p}[5].name"] == ("FieldValueRequired", "Required value")
    assert errs[f"{p}[5].mountPath"] == ("FieldValueRequired", "Required value")


def test_security_context_ids_and_privilege_escalation() -> None:
    errs = errors(
        pod(
            **{
                "spec.securityContext": {"runAsUser": -1, "fsGroup": 2**31},
                "spec.containers[0].securityContext": {
                    "runAsGroup": -5,
                    "privileged": True,
                    "allowPrivilegeEscalation": False,
                },
            }
        )
    )
    assert errs["spec.securityContext.runAsUser"][1] == (
        "Invalid value: -1: must be between 0 and 2147483647, inclusive"
    )
    assert errs["spec.securityContext.fsGroup"][1].startswith("Invalid value: 2147483648")
    assert errs["spec.containers[0].securityContext.runAsGroup"][0] == "FieldValueInvalid"
    assert errs["spec.containers[0].securityContext"][1] == (
        'Invalid value: "": cannot set `allowPrivilegeEscalation` to false and `privileged` to true'
    )


def test_unknown_security_field_rejected() -> None:
    errs = errors(pod(**{"spec.securityContext": {"runAsUsr": 1}}))
    assert errs["spec.securityContext.runAsUsr"] == ("FieldValueNotSupported", "Unknown field")


def test_deployment_template_is_checked_too() -> None:
    template = copy.deepcopy(BASE["spec"])
    template["containers"][0]["volumeMounts"][0]["name"] = "missing"
    doc = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": template},
        },
    }
    with pytest.raises(InvalidError) as info:
        validate_object(kind_info("Deployment"), doc)
    fields = [c.field for c in info.value.causes]
    assert fields == ["spec.template.spec.containers[0].volumeMounts[0].name"]


@pytest.mark.parametrize(
    ("image", "policy"),
    [
        ("busybox", "Always"),
        ("busybox:latest", "Always"),
        ("library/busybox:latest", "Always"),
        ("127.0.0.1:5000/app", "Always"),
        ("127.0.0.1:5000/app:latest", "Always"),
        ("127.0.0.1:5000/app:1.0", "IfNotPresent"),
        ("busybox:1.36", "IfNotPresent"),
        ("busybox:latest-slim", "IfNotPresent"),
        ("busybox@sha256:" + "a" * 64, "IfNotPresent"),
        ("busybox:latest@sha256:" + "a" * 64, "IfNotPresent"),
        ("localhost:5000/a/b@sha256:" + "b" * 64, "IfNotPresent"),
    ],
)
def test_default_pull_policy(image: str, policy: str) -> None:
    assert default_pull_policy(image) == policy


def test_admission_defaults_pull_policy_only_when_unset_and_imaged() -> None:
    doc = pod()
    doc["spec"]["containers"] = [
        {"name": "a", "image": "nginx"},
        {"name": "b", "image": "nginx:1.27"},
        {"name": "c", "image": "nginx", "imagePullPolicy": "Never"},
        {"name": "d", "command": ["sleep", "1"]},
    ]
    obj = validate_object(kind_info("Pod"), doc)
    apply_defaults(obj)
    assert isinstance(obj, Pod)
    got = [c.image_pull_policy for c in obj.spec.containers]
    assert got == ["Always", "IfNotPresent", "Never", None]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False)
    | st.text(max_size=8) | st.sampled_from(["", "/", "..", "/a/../b", "Memory", "File", "-1"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.data())
def test_any_corruption_is_a_field_error_never_a_crash(data: st.DataObject) -> None:
    doc = copy.deepcopy(BASE)
    path = data.draw(st.sampled_from(_paths(doc["spec"])))
    parent: Any = doc["spec"]
    for p in path[:-1]:
        parent = parent[p]
    if data.draw(st.booleans()) and isinstance(parent, dict):
        parent.pop(path[-1], None)
    else:
        parent[path[-1]] = data.draw(json_values)
    try:
        obj = validate_object(kind_info("Pod"), doc)
    except InvalidError as exc:
        assert exc.causes and all(c.field.startswith("spec") for c in exc.causes)
    else:
        apply_defaults(obj)
