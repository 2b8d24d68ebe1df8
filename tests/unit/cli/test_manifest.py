"""Manifest loading and the plan-then-act check: every document, every field, no server."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from shoal.cli._manifest import (
    Document,
    ManifestError,
    load_documents,
    parse_text,
    plan_objects,
)

POD = """
apiVersion: v1
kind: Pod
metadata: {name: p1}
spec:
  containers: [{name: c, image: nginx}]
"""

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: c, image: nginx}]
"""

BAD_DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: bad}
spec:
  replicas: -1
  selector: {matchLabels: {app: bad}}
  template:
    metadata: {labels: {app: other}}
    spec:
      containers: [{name: c}]
"""


def _pod(name: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]},
    }


# --- loading ---------------------------------------------------------------------------------


def test_multi_document_yaml_keeps_order_and_numbers_documents() -> None:
    docs = parse_text(f"{POD}---\n{DEPLOYMENT}---\n", "app.yaml")
    assert [d.data["kind"] for d in docs] == ["Pod", "Deployment"]
    assert [d.index for d in docs] == [1, 2]
    assert docs[1].where == "app.yaml (document 2)"


def test_empty_documents_are_skipped() -> None:
    docs = parse_text(f"---\n---\n{POD}\n---\n", "x.yaml")
    assert len(docs) == 1 and docs[0].index == 1


def test_json_file_with_one_object(tmp_path: Path) -> None:
    f = tmp_path / "pod.json"
    f.write_text(json.dumps(_pod("a")))
    docs = load_documents([str(f)])
    assert [d.data["metadata"]["name"] for d in docs] == ["a"]
    assert docs[0].source == str(f)


def test_json_list_contributes_its_items(tmp_path: Path) -> None:
    f = tmp_path / "pods.json"
    f.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [_pod("a"), _pod("b")]}))
    docs = load_documents([str(f)])
    assert [d.data["metadata"]["name"] for d in docs] == ["a", "b"]
    assert [d.index for d in docs] == [1, 2]


def test_yaml_list_kind_is_expanded_too() -> None:
    text = json.dumps({"apiVersion": "v1", "kind": "PodList", "items": [_pod("a")]})
    assert [d.data["metadata"]["name"] for d in parse_text(text, "x.yaml")] == ["a"]


def test_directory_reads_manifest_files_sorted(tmp_path: Path) -> None:
    (tmp_path / "b.yml").write_text(DEPLOYMENT)
    (tmp_path / "a.yaml").write_text(POD)
    (tmp_path / "c.json").write_text(json.dumps(_pod("c")))
    (tmp_path / "notes.txt").write_text("not a manifest")
    docs = load_documents([str(tmp_path)])
    assert [Path(d.source).name for d in docs] == ["a.yaml", "b.yml", "c.json"]


def test_stdin_dash() -> None:
    docs = load_documents(["-"], stdin=io.StringIO(POD + "---\n" + DEPLOYMENT))
    assert [d.source for d in docs] == ["<stdin>", "<stdin>"]
    assert docs[1].data["kind"] == "Deployment"


def test_repeated_files_are_concatenated(tmp_path: Path) -> None:
    (tmp_path / "1.yaml").write_text(POD)
    (tmp_path / "2.yaml").write_text(DEPLOYMENT)
    docs = load_documents([str(tmp_path / "2.yaml"), str(tmp_path / "1.yaml")])
    assert [d.data["kind"] for d in docs] == ["Deployment", "Pod"]


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "broken.yaml"
    f.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: [x\n")
    with pytest.raises(ManifestError) as err:
        load_documents([str(f)])
    text = str(err.value)
    assert str(f) in text
    assert "line 4" in text or "line 3" in text


def test_json_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "broken.json"
    f.write_text('{\n  "kind": "Pod",\n  oops\n}')
    with pytest.raises(ManifestError) as err:
        load_documents([str(f)])
    assert f"{f}: line 3" in str(err.value)


def test_missing_file_and_non_object_documents_are_reported(tmp_path: Path) -> None:
    f = tmp_path / "scalars.yaml"
    f.write_text("just a string\n---\n- a\n- list\n")
    with pytest.raises(ManifestError) as err:
        load_documents([str(tmp_path / "nope.yaml"), str(f)])
    lines = str(err.value).splitlines()
    assert f"{tmp_path / 'nope.yaml'}: no such file or directory" in lines
    assert any("(document 1)" in line and "a string" in line for line in lines)
    assert any("(document 2)" in line and "a list" in line for line in lines)


# --- planning --------------------------------------------------------------------------------


def _docs(*texts: str, source: str = "app.yaml") -> list[Document]:
    return parse_text("\n---\n".join(texts), source)


def test_plan_fills_namespace_and_normalizes() -> None:
    plan = plan_objects(_docs(POD, DEPLOYMENT))
    assert [(p.info.kind, p.name, p.namespace) for p in plan] == [
        ("Pod", "p1", "default"),
        ("Deployment", "web", "default"),
    ]
    # the normalized form carries the server's defaults, for comparison with live objects
    dep = plan[1].normalized
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": "25%"}
    assert "strategy" not in plan[1].body["spec"]


def test_plan_uses_dash_n_namespace() -> None:
    plan = plan_objects(_docs(POD), "team-a")
    assert plan[0].namespace == "team-a"
    assert plan[0].body["metadata"]["namespace"] == "team-a"


def test_plan_rejects_namespace_that_contradicts_dash_n() -> None:
    text = POD.replace("{name: p1}", "{name: p1, namespace: other}")
    with pytest.raises(ManifestError) as err:
        plan_objects(_docs(text), "team-a")
    assert '"other"' in str(err.value) and '"team-a"' in str(err.value)


def test_cluster_scoped_objects_have_no_namespace() -> None:
    ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: team-a, namespace: x}\n"
    plan = plan_objects(_docs(ns), "y")
    assert plan[0].namespace is None


def test_invalid_document_names_file_index_and_every_field() -> None:
    with pytest.raises(ManifestError) as err:
        plan_objects(_docs(DEPLOYMENT, BAD_DEPLOYMENT, source="web.yaml"))
    problems = err.value.problems
    assert len(problems) == 1
    lines = problems[0].lines()
    assert lines[0] == 'web.yaml (document 2): Deployment "bad" is invalid:'
    assert "  spec.replicas: Invalid value: -1: must be greater than or equal to 0" in lines
    assert (
        "  spec.template.spec.containers[0].image: Required value: "
        "a container needs an image or a command"
    ) in lines
    assert any(line.startswith("  spec.template.metadata.labels: ") for line in lines)


def test_every_bad_document_is_reported_not_just_the_first() -> None:
    unknown = "apiVersion: v1\nkind: Frobnicator\nmetadata: {name: x}\n"
    with pytest.raises(ManifestError) as err:
        plan_objects(_docs(BAD_DEPLOYMENT, POD, unknown))
    wheres = [p.where for p in err.value.problems]
    assert wheres == ["app.yaml (document 1)", "app.yaml (document 3)"]
    assert 'unknown kind "Frobnicator"' in err.value.problems[1].message


def test_wrong_api_version_says_which_is_served() -> None:
    with pytest.raises(ManifestError) as err:
        plan_objects(_docs(DEPLOYMENT.replace("apps/v1", "v1")))
    assert "use apiVersion: apps/v1" in str(err.value)


def test_missing_kind_and_name_are_problems() -> None:
    no_kind = "apiVersion: v1\nmetadata: {name: x}\n"
    no_name = "apiVersion: v1\nkind: Pod\nmetadata: {generateName: x-}\nspec: {containers: [{name: c, image: i}]}\n"
    with pytest.raises(ManifestError) as err:
        plan_objects(_docs(no_kind, no_name))
    text = str(err.value)
    assert "(document 1): kind: Required value" in text
    assert "(document 2): Pod is invalid:" in text
    assert "metadata.name: Required value" in text


def test_plan_without_validation_only_addresses_objects() -> None:
    plan = plan_objects(_docs(BAD_DEPLOYMENT), validate=False)
    assert [(p.info.kind, p.name) for p in plan] == [("Deployment", "bad")]
