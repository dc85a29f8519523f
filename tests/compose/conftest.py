from __future__ import annotations

from collections.abc import Iterator

import pytest
from compose_helpers import ComposeCluster, compose_cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[ComposeCluster]:
    with compose_cluster(nodes=3) as c:
        yield c
