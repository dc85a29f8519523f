"""kubectl JSONPath templates over plain dicts."""

from __future__ import annotations

import pytest

from knemu.cli.output.jsonpath import JsonPathError, parse_template, render

POD = {
    "kind": "Pod",
    "metadata": {
        "name": "sample-deployment-7c67dd9675-jggr7",
        "labels": {"pod-template-hash": "7c67dd9675", "app": "sample-app"},
    },
    "spec": {"containers": [{"name": "nginx", "ports": [{"containerPort": 80}]}]},
    "status": {
        "podIP": "10.244.1.2",
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "False"},
        ],
    },
}
LIST = {
    "kind": "List",
    "items": [
        {"metadata": {"name": "a"}, "status": {"podIP": "10.244.1.2"}},
        {"metadata": {"name": "b"}, "status": {"podIP": "10.244.2.2"}},
    ],
}


def test_labels_print_as_compact_json_with_sorted_keys() -> None:
    # Modern kubectl prints maps as JSON (the seed's kubectl printed map[...]).
    assert render("{.metadata.labels}", POD) == (
        '{"app":"sample-app","pod-template-hash":"7c67dd9675"}'
    )


def test_items_wildcard_joins_with_spaces() -> None:
    assert render("{.items[*].metadata.name}", LIST) == "a b"


def test_range_with_string_literal_newline() -> None:
    template = '{range .items[*]}{.metadata.name}{"\\t"}{.status.podIP}{"\\n"}{end}'
    assert render(template, LIST) == "a\t10.244.1.2\nb\t10.244.2.2\n"


def test_plain_text_between_actions() -> None:
    assert render("ip={.status.podIP} name={.metadata.name}", POD) == (
        "ip=10.244.1.2 name=sample-deployment-7c67dd9675-jggr7"
    )


def test_filter_index_slice_recursive_and_union() -> None:
    assert render('{.status.conditions[?(@.type=="Ready")].status}', POD) == "False"
    assert render("{.status.conditions[-1].type}", POD) == "Ready"
    assert render("{.items[0:1].metadata.name}", LIST) == "a"
    assert render("{..containerPort}", POD) == "80"
    assert render("{.metadata['name','kind']}", POD) == "sample-deployment-7c67dd9675-jggr7"
    assert render("{.items[?(@.status.podIP!='10.244.1.2')].metadata.name}", LIST) == "b"


def test_missing_keys_print_nothing_and_numbers_print_plainly() -> None:
    assert render("[{.status.hostIP}]", POD) == "[]"
    assert render("{.spec.containers[0].ports[0].containerPort}", POD) == "80"


@pytest.mark.parametrize(
    "bad", ["{.metadata", "{range .items[*]}{.x}", "{end}", "{.items[?(@.a ~ 1)]}", '{"\\q"}']
)
def test_malformed_templates_are_rejected_with_the_template_named(bad: str) -> None:
    with pytest.raises(JsonPathError) as err:
        parse_template(bad)
    assert "jsonpath" in err.value.message
