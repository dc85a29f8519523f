"""YAML as Kubernetes reads manifests: a mapping that names one key twice is an error.

PyYAML keeps the last value of a repeated key without a word, so two manifests concatenated
without a ``---`` between them would silently become one merged object.  Kubernetes' reader
(sigs.k8s.io/yaml over go-yaml) rejects them (``mapping key "spec" already defined``), and so
does this loader, with the line of both occurrences.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode


class StrictSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses repeated mapping keys."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: dict[Any, int] = {}
        for key_node, _value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<" merge keys may repeat (YAML merge key spec)
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:
                continue  # an unhashable key: the base class reports it
            if first != key_node.start_mark.line + 1:
                raise ConstructorError(
                    None,
                    None,
                    f"mapping key {key!r} already defined at line {first} "
                    "(two manifests need a '---' line between them)",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def safe_load(text: str) -> Any:
    return yaml.load(text, Loader=StrictSafeLoader)


def safe_load_all(text: str) -> list[Any]:
    return list(yaml.load_all(text, Loader=StrictSafeLoader))
