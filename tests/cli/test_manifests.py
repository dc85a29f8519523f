"""Manifest loading: the seeds' files, multi-document YAML, JSON, directories, bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from knemu.cli.manifests import (
    ManifestError,
    load_paths,
    parse_documents,
    strip_trailing_whitespace,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SEED_002 = (
    "myapp-service-clusterip.yaml",
    "myapp-service-nodeport.yaml",
    "myapp-service-loadbalancer.yaml",
)


def test_seed_003_manifests_load() -> None:
    docs = load_paths([str(EXAMPLES / "sample-named-port-pods.yaml")])
    assert [(d.index, d.label) for d in docs] == [
        (1, "Pod/sample-named-port-pod-80"),
        (2, "Pod/sample-named-port-pod-81"),
    ]
    env = docs[1].obj["spec"]["containers"][0]["env"]
    assert env == [{"name": "NGINX_PORT", "value": "81"}]


@pytest.mark.parametrize("name", ["myapp-service-loadbalancer.yaml", "myapp-service-nodeport.yaml"])
def test_seed_002_trailing_tabs_are_tolerated_like_kubectl(name: str) -> None:
    path = EXAMPLES / "seed-002" / name
    assert "\t" in path.read_text()  # the files really have them
    (doc,) = load_paths([str(path)])
    ports = doc.obj["spec"]["ports"]
    assert ports[0]["port"] == 80 and ports[0]["targetPort"] == 80
    assert doc.obj["spec"]["selector"] == {"app": "myapp", "type": "frontend"}


def test_seed_002_loadbalancer_keeps_its_values() -> None:
    (doc,) = load_paths([str(EXAMPLES / "seed-002" / "myapp-service-loadbalancer.yaml")])
    assert doc.obj["spec"]["clusterIP"] == "10.0.171.239"
    assert doc.obj["status"]["loadBalancer"]["ingress"] == [{"ip": "192.0.2.127"}]


def test_directory_expands_to_manifests_in_name_order() -> None:
    docs = load_paths([str(EXAMPLES / "seed-002")])
    assert [Path(d.source).name for d in docs] == sorted(
        p.name for p in (EXAMPLES / "seed-002").iterdir()
    )


def test_block_scalars_keep_their_whitespace() -> None:
    text = "a: 1\t\nb: |\n  keep \t\n  this\t\nc: 2 \n"
    assert strip_trailing_whitespace(text) == "a: 1\nb: |\n  keep \t\n  this\t\nc: 2\n"
    (doc,) = parse_documents("kind: Pod\t\nmetadata: {name: x}\nnote: |\n  tab\t\n", "f")
    assert doc.obj["note"] == "tab\t\n"


def test_bad_yaml_names_file_line_and_column() -> None:
    with pytest.raises(ManifestError) as err:
        parse_documents("kind: Pod\nmetadata:\n  name: [x\n", "bad.yaml")
    message = err.value.message
    assert message.startswith("bad.yaml: line ")
    assert "column" in message
    with pytest.raises(ManifestError) as err2:
        parse_documents("a: b\n  c: d\n", "x.yaml")
    assert "x.yaml: line 2, column 4" in err2.value.message


def test_tab_indentation_still_fails_after_the_retry() -> None:
    with pytest.raises(ManifestError) as err:
        parse_documents("kind: Pod\nmetadata:\n\tname: x\n", "tabs.yaml")
    assert "tabs.yaml: line 3" in err.value.message


def test_json_object_stream_and_list_kind() -> None:
    one = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}}
    two = dict(one, metadata={"name": "b"})
    docs = parse_documents(json.dumps(one) + "\n" + json.dumps(two), "p.json")
    assert [d.label for d in docs] == ["Pod/a", "Pod/b"]
    listed = {"apiVersion": "v1", "kind": "List", "items": [one, two]}
    assert len(parse_documents(json.dumps(listed, indent="\t"), "l.json")) == 2


def test_non_mapping_document_and_missing_file_and_stdin() -> None:
    with pytest.raises(ManifestError, match=r"doc.yaml: document 2: expected a mapping"):
        parse_documents("kind: Pod\n---\n- a\n", "doc.yaml")
    with pytest.raises(ManifestError, match="does not exist"):
        load_paths(["/nonexistent/kt-missing.yaml"])
    docs = load_paths(["-"], stdin=io.StringIO("kind: Pod\nmetadata: {name: s}\n---\n"))
    assert [d.label for d in docs] == ["Pod/s"]


def test_repeated_keys_are_refused_like_kubectl() -> None:
    # Seed 002's three Service files concatenated without '---' would be one merged object
    # under PyYAML's defaults; Kubernetes' reader refuses the repeated key, and so does knemu.
    text = "".join((EXAMPLES / "seed-002" / n).read_text() for n in SEED_002)
    with pytest.raises(ManifestError, match=r"-: line \d+, column 1: mapping key 'apiVersion' "
                       r"already defined at line 1 \(two manifests need a '---' line"):  # fmt: skip
        parse_documents(text, "-")
    with pytest.raises(ManifestError, match="mapping key 'app' already defined at line 3"):
        parse_documents("metadata:\n  labels:\n    app: a\n    app: b\n", "x.yaml")
    separated = "\n---\n".join((EXAMPLES / "seed-002" / n).read_text() for n in SEED_002)
    assert len(parse_documents(separated, "-")) == 3
    # YAML merge keys may repeat "<<" and still work.
    doc = parse_documents("base: &b {x: 1}\nm:\n  <<: *b\n  y: 2\n", "m.yaml")[0]
    assert doc.obj["m"] == {"x": 1, "y": 2}
