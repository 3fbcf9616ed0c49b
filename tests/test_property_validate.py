"""Property: whatever YAML text ``mtl validate`` is given (random documents, random mutations of a valid
recipe, random bytes), nothing but the project's own MtlError escapes the recipe and data layers."""

from __future__ import annotations

import copy

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtlcli import data
from mtlcli import recipe as R
from mtlcli.errors import MtlError
from tests.conftest import TINY_RECIPE, write_tiny_csv

VALID = yaml.safe_load(TINY_RECIPE)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["numeric", "binary", "dense", "static", "val_loss", "tiny.csv", "", "relu", "adam"]),
)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(st.text(max_size=8), st.sampled_from(["data", "model", "train", "tasks", "inputs"])),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=20,
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


@st.composite
def mutated_recipes(draw):
    doc = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        path = draw(st.sampled_from(paths))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(documents)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(documents)
        else:
            parent.append(draw(documents))
        if not isinstance(doc, dict) or not doc:
            break
    return doc


def _validate(text: str, base) -> None:
    try:
        loaded = R.loads(text, file="fuzz.yaml", base_dir=base)
        data.prepare(loaded)
    except MtlError as exc:
        assert exc.exit_code == 2
        assert exc.lines() and all(isinstance(line, str) for line in exc.lines())


FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(doc=documents)
def test_random_documents(tmp_path_factory, doc):
    _validate(yaml.safe_dump(doc), tmp_path_factory.getbasetemp())


@FAST
@given(doc=mutated_recipes())
def test_mutations_of_a_valid_recipe(tiny_dir, doc):
    _validate(yaml.safe_dump(doc, sort_keys=False), tiny_dir)


@FAST
@given(text=st.text(max_size=200))
def test_random_text(text):
    _validate(text, None)


@FAST
@given(raw=st.binary(max_size=200))
def test_random_bytes_through_the_file_reader(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("raw") / "r.yaml"
    path.write_bytes(raw)
    try:
        R.load(path)
    except MtlError as exc:
        assert exc.exit_code == 2


def test_the_unmutated_recipe_is_valid(tiny_dir):
    _validate(yaml.safe_dump(VALID), tiny_dir)
    data.prepare(R.loads(yaml.safe_dump(VALID), base_dir=tiny_dir))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    write_tiny_csv(d / "tiny.csv")
    return d
