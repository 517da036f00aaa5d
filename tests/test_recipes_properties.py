"""Property tests of --set parsing: any input either parses or raises GanzipError."""
from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from ganzip import recipes
from ganzip.config import valid_keys
from ganzip.errors import GanzipError

KEYS = valid_keys()


def _parses_or_refuses(item: str) -> None:
    try:
        recipes.resolve_recipe("crd", [item])
    except GanzipError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_string_parses_or_raises_ganzip_error(item):
    _parses_or_refuses(item)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(KEYS), st.text())
def test_any_value_for_a_valid_key_parses_or_raises_ganzip_error(key, value):
    _parses_or_refuses(f"{key}={value}")


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(KEYS), st.text(alphabet="[]{}\"'=,.0123456789eE+-_:#\\ntruefalsinf ", max_size=40))
def test_toml_like_values_parse_or_raise_ganzip_error(key, value):
    _parses_or_refuses(f"{key}={value}")


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=10**9))
def test_integers_round_trip(n):
    assert recipes.resolve_recipe("crd", [f"train.seed={n}"]).train.seed == n


@settings(max_examples=100, deadline=None)
@given(st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False))
def test_floats_round_trip(x):
    cfg = recipes.resolve_recipe("crd", [f"crd.weight={x!r}"])
    assert cfg.crd.weight == x and not math.isnan(cfg.crd.weight)


@settings(max_examples=50, deadline=None)
@given(st.booleans())
def test_booleans_round_trip(b):
    assert recipes.resolve_recipe("crd", [f"crd.rows={str(b).lower()}"]).crd.rows is b


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=30))
def test_quoted_strings_round_trip(text):
    quoted = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    cfg = recipes.resolve_recipe("crd", [f"perceptual.weights={quoted}"])
    assert cfg.perceptual.weights == text
