import pytest

from shoal.apiserver._patch import json_patch, merge_patch
from shoal.errors import InvalidError


def test_merge_patch_rfc7386() -> None:
    doc = {"a": "b", "c": {"d": "e", "f": "g"}}
    assert merge_patch(doc, {"a": "z", "c": {"f": None}}) == {"a": "z", "c": {"d": "e"}}
    assert merge_patch({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}
    assert merge_patch(doc, {"n": {"x": 1}}) == {**doc, "n": {"x": 1}}
    assert doc == {"a": "b", "c": {"d": "e", "f": "g"}}  # input untouched


def test_json_patch_ops() -> None:
    doc = {"spec": {"replicas": 1, "items": [1, 2]}}
    out = json_patch(doc, [
        {"op": "replace", "path": "/spec/replicas", "value": 3},
        {"op": "add", "path": "/spec/items/-", "value": 9},
        {"op": "remove", "path": "/spec/items/0"},
        {"op": "test", "path": "/spec/replicas", "value": 3},
        {"op": "copy", "from": "/spec/replicas", "path": "/spec/copy"},
    ])  # fmt: skip
    assert out == {"spec": {"replicas": 3, "items": [2, 9], "copy": 3}}
    with pytest.raises(InvalidError):
        json_patch(doc, [{"op": "replace", "path": "/spec/missing", "value": 1}])
    with pytest.raises(InvalidError):
        json_patch(doc, [{"op": "test", "path": "/spec/replicas", "value": 2}])
