"""Property tests of --set parsing: any input either parses or raises GanzipError."""
from __future__ import annotations

import math

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from hypothesis import example, given, settings
from hypothesis import strategies as st

from ganzip import recipes
from ganzip.config import section_keys, valid_keys
from ganzip.errors import GanzipError

KEYS = valid_keys()


def _toml(rhs: str):
    """The value as TOML reads it, or None when it is not a TOML value."""
    try:
        return tomllib.loads(f"v = {rhs.strip()}")["v"]
    except (tomllib.TOMLDecodeError, KeyError):
        return None


def _parses_or_refuses(item: str) -> None:
    """Any item parses or raises GanzipError, and the answer fits the item.

    Refused: an item without ``=`` or with an unknown key must be; a refused
    value's error names the key (or the --set syntax). Accepted: the key is a valid one and the config holds the
    value, of the key's type (checked against tomllib's reading of it).
    """
    key, sep, rhs = item.partition("=")
    key = key.strip()
    try:
        cfg = recipes.resolve_recipe("crd", [item])
    except GanzipError as exc:
        if sep and key in KEYS:  # refused for its value: the error names the key or the --set syntax
            assert key.partition(".")[2] in str(exc) or str(exc).startswith(("--set", "overrides=")), (item, str(exc))
        return
    assert sep and key in KEYS, f"{item!r} was accepted"
    section, _, sub = key.partition(".")
    stored = getattr(getattr(cfg, section), sub)
    hint = section_keys(section)[sub]
    value = _toml(rhs)
    if hint is bool:
        assert stored is value
    elif hint is int:
        assert type(stored) is int and isinstance(value, (int, float)) and not isinstance(value, bool)
        assert stored == value
    elif hint is float:
        assert type(stored) is float and isinstance(value, (int, float)) and not isinstance(value, bool)
        assert stored == value
    elif hint is str:
        assert stored == (value if isinstance(value, str) else rhs.strip())
    else:
        assert isinstance(stored, list)


@settings(max_examples=300, deadline=None)
@given(st.text())
@example("crd.weight")  # no value
@example("crd.wieght=3")  # unknown key
@example("train.steps=ten")
@example("train.steps=1.5")
@example("crd.rows=1")
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
