"""Properties of manifest reading: line locations, `set` values and width expansion."""
from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ganzip.batch import TomlLocator, load_manifest, overrides_from, width_label
from ganzip.recipes import parse_value

KEYS = ["name", "model", "arch", "data", "recipe", "steps", "size", "seed", "device", "widths", "set", "arch_opts"]
VALUES = {
    "name": '"j"', "model": '"m.pth"', "arch": '"resnet_6blocks"', "data": '"builtin:day2night"',
    "recipe": "'crd'", "steps": "3", "size": "64", "seed": "0", "device": '"cpu"', "widths": "[0.25, 0.5]",
    "set": '{"crd.weight" = 10, "train.lr" = 1e-4}', "arch_opts": "{ngf = 8}",
}
MULTILINE = {"widths": "[\n  0.25,\n  0.5,\n]", "set": '[\n  "crd.weight=10",  # why\n  "train.lr=1e-4",\n]'}


@st.composite
def manifests(draw):
    """TOML text with [defaults] and several [[job]] tables, and where each key was written."""
    lines: list[str] = []
    where: dict[tuple, int] = {}

    def noise():
        for _ in range(draw(st.integers(0, 2))):
            lines.append(draw(st.sampled_from(["", "# a comment", "   ", "# [[job]] in a comment"])))

    noise()
    if draw(st.booleans()):
        lines.append('out = "runs"')
        where[("out",)] = len(lines)
    noise()
    if draw(st.booleans()):
        lines.append("[defaults]")
        where[("defaults",)] = len(lines)
        for key in draw(st.lists(st.sampled_from(KEYS[1:]), unique=True, max_size=4)):
            noise()
            lines.append(f"{key} = {VALUES[key]}")
            where[("defaults", key)] = len(lines)
    for index in range(draw(st.integers(1, 4))):
        noise()
        indent = draw(st.sampled_from(["", "  "]))
        lines.append(f"{indent}[[job]]" + draw(st.sampled_from(["", "  # next job"])))
        where[("job", index)] = len(lines)
        for key in draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=6)):
            noise()
            quoted = draw(st.booleans())
            value = MULTILINE[key] if key in MULTILINE and draw(st.booleans()) else VALUES[key]
            lines.append(f'{indent}{chr(34) + key + chr(34) if quoted else key} = {value}')
            where[("job", index, key)] = len(lines)
            lines = "\n".join(lines).split("\n")  # a multi-line value takes several lines
    return "\n".join(lines) + "\n", where


@settings(max_examples=150, deadline=None)
@given(manifests())
def test_the_locator_finds_every_key_and_table_where_it_was_written(doc):
    import tomllib

    text, where = doc
    tomllib.loads(text)  # the generated text is valid TOML
    loc = TomlLocator(text)
    for path, line in where.items():
        assert loc.line(*path) == line, (path, text)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 3), st.sampled_from(["model", "steps", "unknown_key"]))
def test_a_key_missing_from_a_job_falls_back_to_the_job_header(index, key):
    text = "".join(f'[[job]]\nname = "j{i}"\n' for i in range(4))
    assert TomlLocator(text).line("job", index, key) == 1 + 2 * index


toml_scalars = (
    st.integers(-10**6, 10**6)
    | st.floats(allow_nan=False, allow_infinity=False, width=64)
    | st.booleans()
    | st.text(alphabet=string.ascii_letters + string.digits + " ._-/:\"'\\é", max_size=12)
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["crd.weight", "train.lr", "adversarial.mode", "discriminator.fakes"]),
                       toml_scalars | st.lists(toml_scalars, max_size=3), min_size=1))
def test_set_tables_become_overrides_that_parse_back_to_the_same_values(table):
    items = overrides_from(table)
    assert [i.partition("=")[0] for i in items] == list(table)
    for item, value in zip(items, table.values()):
        assert parse_value(item.partition("=")[2]) == value


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.floats(min_value=1e-3, max_value=1.0, allow_nan=False), min_size=1, max_size=5, unique=True))
def test_several_widths_expand_to_one_uniquely_named_job_each(tmp_path, widths):
    (tmp_path / "m.pth").write_bytes(b"x")  # only its existence is checked when reading
    (tmp_path / "manifest.toml").write_text(
        '[[job]]\nname = "g"\nmodel = "m.pth"\ndata = "builtin:day2night"\nset = {"perceptual.weight" = 0}\n'
        f"widths = [{', '.join(repr(w) for w in widths)}]\n")
    jobs = load_manifest(tmp_path / "manifest.toml").jobs
    assert [j.width for j in jobs] == widths
    names = [j.name for j in jobs]
    assert len(set(names)) == len(names)
    if len(widths) > 1:
        assert names == [f"g@{width_label(w)}" for w in widths]
    else:
        assert names == ["g"]
