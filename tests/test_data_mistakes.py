"""Data mistakes through the CLI (issue 12, "Data errors"): each one makes ``mtl validate`` and ``mtl train``
exit 2 with mtl's own message naming the file and line, without a traceback, and ``train`` leaves no run
directory behind; in memory and streamed alike. Then the CSV dialects, and run directories that move.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from .conftest import TINY_RECIPE, write_tiny_csv

STREAMED = "  stream: {chunk_rows: 7, shuffle_buffer: 1000}\n"
MODES = {"in memory": "", "streamed": STREAMED}


def project(tmp_path: Path, lines=None, name: str = "tiny.csv", extra: str = "", n: int = 240) -> Path:
    """tiny.csv (or ``name``) with ``lines`` ({line number: text}) replaced; returns the recipe path."""
    write_tiny_csv(tmp_path / "tiny.csv", n=n)
    rows = (tmp_path / "tiny.csv").read_text().splitlines()
    for line, text in (lines or {}).items():
        rows[line - 1] = text
    body = "\n".join(rows) + "\n"
    path = tmp_path / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(body.encode()))
    else:
        path.write_text(body)
    recipe = tmp_path / "recipe.yaml"
    text = TINY_RECIPE.replace("train: tiny.csv", f"train: {name}").replace("  inputs:", extra + "  inputs:")
    recipe.write_text(text)
    return recipe


def cell(tmp_path: Path, line: int, column: int, value: str) -> str:
    """Line ``line`` of the tiny data with field ``column`` set to ``value``."""
    write_tiny_csv(tmp_path / "probe.csv", n=240)
    fields = (tmp_path / "probe.csv").read_text().splitlines()[line - 1].split(",")
    fields[column] = value
    return ",".join(fields)


def refused(cli, recipe: Path, tmp_path: Path) -> list[str]:
    """The problem lines ``validate`` prints; ``train`` prints the same, exits 2 and makes no directory."""
    checked = cli("validate", recipe)
    assert checked.exit_code == 2, checked.output
    assert "Traceback" not in checked.output
    out = tmp_path / "run-out"
    trained = cli("train", recipe, "-o", out)
    assert trained.exit_code == 2, trained.output
    assert "Traceback" not in trained.output
    assert not out.exists()
    problems = [line for line in checked.output.splitlines() if line.startswith("  - ")]
    assert problems == [line for line in trained.output.splitlines() if line.startswith("  - ")]
    return problems


@pytest.mark.parametrize("mode", MODES)
def test_every_bad_numeric_cell_is_reported_with_its_line(cli, tmp_path, mode):
    bad = {
        10: cell(tmp_path, 10, 1, "ten"),
        50: cell(tmp_path, 50, 1, "fifty"),
        200: cell(tmp_path, 200, 1, "?"),
    }
    recipe = project(tmp_path, bad, extra=MODES[mode])
    f = tmp_path / "tiny.csv"
    assert refused(cli, recipe, tmp_path) == [
        f"  - {f}:10 column 'b': expected a number, received 'ten'",
        f"  - {f}:50 column 'b': expected a number, received 'fifty'",
        f"  - {f}:200 column 'b': expected a number, received '?'",
    ]


@pytest.mark.parametrize("mode", MODES)
def test_bad_cells_beyond_the_limit_are_counted(cli, tmp_path, mode):
    bad = {line: cell(tmp_path, line, 0, f"x{line}") for line in range(5, 205, 4)}  # 50 bad cells
    recipe = project(tmp_path, bad, extra=MODES[mode])
    f = tmp_path / "tiny.csv"
    problems = refused(cli, recipe, tmp_path)
    assert problems[:2] == [
        f"  - {f}:5 column 'a': expected a number, received 'x5'",
        f"  - {f}:9 column 'a': expected a number, received 'x9'",
    ]
    assert len(problems) == 21
    assert problems[19] == f"  - {f}:81 column 'a': expected a number, received 'x81'"
    assert problems[20] == f"  - {f}: ... and 30 more bad cells in column 'a'"


@pytest.mark.parametrize("mode", MODES)
def test_every_unknown_label_of_a_validation_file_is_reported(cli, tmp_path, mode):
    recipe = project(tmp_path, extra=MODES[mode])
    rows = (tmp_path / "tiny.csv").read_text().splitlines()
    val = [rows[0]] + rows[1:30]
    for i in (3, 7):
        fields = val[i].split(",")
        fields[3] = "w"
        val[i] = ",".join(fields)
    (tmp_path / "val.csv").write_text("\n".join(val) + "\n")
    recipe.write_text(recipe.read_text().replace("validation: 0.25", "validation: val.csv"))
    v = tmp_path / "val.csv"
    assert refused(cli, recipe, tmp_path) == [
        f"  - {v}:4 column 'kind': label 'w' is not one of the task's classes ('x', 'y', 'z')",
        f"  - {v}:8 column 'kind': label 'w' is not one of the task's classes ('x', 'y', 'z')",
    ]


@pytest.mark.parametrize("name", ["tiny.csv", "tiny.csv.gz"])
@pytest.mark.parametrize("mode", MODES)
def test_rows_with_too_few_or_too_many_fields_name_their_line(cli, tmp_path, mode, name):
    short = ",".join(cell(tmp_path, 30, 0, "0.5").split(",")[:3])  # a row cut to 3 of 6 fields
    long = cell(tmp_path, 90, 5, "1.0,7,8")
    recipe = project(tmp_path, {30: short, 90: long}, name=name, extra=MODES[mode])
    f = tmp_path / name
    assert refused(cli, recipe, tmp_path) == [
        f"  - {f}:30: expected 6 fields (as in the header line), received 3: the row is cut short "
        f"(data.train: '{name}')",
        f"  - {f}:90: expected 6 fields (as in the header line), received 8 (data.train: '{name}')",
    ]


@pytest.mark.parametrize("mode", MODES)
def test_a_first_row_with_one_field_too_many_is_not_taken_as_an_index(cli, tmp_path, mode):
    recipe = project(tmp_path, {2: cell(tmp_path, 2, 0, "1,0.5")}, extra=MODES[mode])
    problems = refused(cli, recipe, tmp_path)
    assert problems == [
        f"  - {tmp_path / 'tiny.csv'}:2: expected 6 fields (as in the header line), received 7 "
        "(data.train: 'tiny.csv')"
    ]


@pytest.mark.parametrize("mode", MODES)
def test_empty_and_header_only_files(cli, tmp_path, mode):
    recipe = project(tmp_path, extra=MODES[mode])
    f = tmp_path / "tiny.csv"
    f.write_text("")
    assert refused(cli, recipe, tmp_path) == [
        f"  - {f}: the file is empty; expected a header line with the column names, then one row per "
        "sample (data.train: 'tiny.csv')"
    ]
    f.write_text("a,b,color,kind,flag,value\n")
    assert refused(cli, recipe, tmp_path) == [
        f"  - {f}:2: the file has a header line (6 columns) but no rows; expected one row per sample after "
        "it (data.train: 'tiny.csv')"
    ]


@pytest.mark.parametrize("mode", MODES)
def test_bytes_that_are_not_text_name_their_line_and_the_encoding_key(cli, tmp_path, mode):
    recipe = project(tmp_path, extra=MODES[mode])
    f = tmp_path / "tiny.csv"
    rows = f.read_bytes().split(b"\n")
    rows[6] = rows[6].replace(b"red", b"r\xf8d").replace(b"blue", b"bl\xf8").replace(b"green", b"gr\xf8n")
    f.write_bytes(b"\n".join(rows))
    assert refused(cli, recipe, tmp_path) == [
        f"  - {f}:7: cannot read as CSV: byte 0xf8 is not utf-8 text; if the file has another encoding, "
        "name it: data.csv: {encoding: latin-1} (data.train: 'tiny.csv')"
    ]
    recipe.write_text(recipe.read_text().replace("  inputs:", "  csv: {encoding: latin-1}\n  inputs:"))
    assert cli("validate", recipe).exit_code == 0


def european(tmp_path: Path) -> Path:
    """tiny.csv as a European spreadsheet saves it: ';' between fields, ',' as the decimal mark, latin-1."""
    write_tiny_csv(tmp_path / "tiny.csv")
    text = (tmp_path / "tiny.csv").read_text().replace(",", ";").replace(".", ",").replace("red", "rød")
    (tmp_path / "euro.csv").write_bytes(text.encode("latin-1"))
    return tmp_path / "euro.csv"


@pytest.mark.parametrize("mode", MODES)
def test_csv_dialects_shared_and_per_source_read_the_same_numbers(tmp_path, mode):
    from mtlcli import data
    from mtlcli import recipe as R

    european(tmp_path)
    plain = tmp_path / "plain.yaml"
    plain.write_text(TINY_RECIPE.replace("  inputs:", MODES[mode] + "  inputs:"))
    shared = tmp_path / "shared.yaml"
    shared.write_text(
        plain.read_text().replace(
            "train: tiny.csv", "train: euro.csv\n  csv: {sep: ';', encoding: latin-1, decimal: ','}"
        )
    )
    own = tmp_path / "own.yaml"
    own.write_text(
        plain.read_text().replace(
            "train: tiny.csv", "train: {path: euro.csv, sep: ';', encoding: latin1, decimal: ','}"
        )
    )
    want = data.prepare(R.load(plain))
    for path in (shared, own):
        got = data.prepare(R.load(path))
        assert got.prep.inputs["a"] == want.prep.inputs["a"]
        assert got.prep.targets["value"] == want.prep.targets["value"]
        assert got.prep.inputs["color"].vocabulary == ["blue", "green", "rød"]
        assert got.info["files"]["train"]["csv"]["sep"] == ";"


def test_a_bad_cell_in_a_decimal_comma_file_is_the_only_one_reported(cli, tmp_path):
    euro = european(tmp_path)
    rows = euro.read_bytes().split(b"\n")
    rows[11] = b"oops" + rows[11][rows[11].index(b";") :]
    euro.write_bytes(b"\n".join(rows))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        TINY_RECIPE.replace(
            "train: tiny.csv", "train: euro.csv\n  csv: {sep: ';', encoding: latin-1, decimal: ','}"
        )
    )
    assert refused(cli, recipe, tmp_path) == [f"  - {euro}:12 column 'a': expected a number, received 'oops'"]


def test_dialect_values_are_checked_in_the_recipe(cli, tmp_path):
    recipe = project(tmp_path)
    text = recipe.read_text()
    recipe.write_text(
        text.replace("train: tiny.csv", "train: {path: tiny.csv, sep: ';;', encoding: utf8x}").replace(
            "  inputs:", "  csv: {decimal: ',', sepp: ','}\n  inputs:"
        )
    )
    r = str(recipe)
    assert refused(cli, recipe, tmp_path) == [
        f"  - {r}:4 data.train.encoding: unknown encoding 'utf8x'; did you mean 'utf8'? (Python's codecs know "
        "utf-8, latin-1, cp1252, utf-16, ...)",
        f"  - {r}:4 data.train.sep: expected one character such as ';', '|' or '\\t' (a tab), received text (';;')",
        f"  - {r}:6 data.csv.decimal: the decimal mark ',' is also the field separator; choose two different "
        "characters",
        f"  - {r}:6 data.csv.sepp: unknown key 'sepp'; did you mean 'sep'?; data.csv has sep, encoding, decimal",
    ]


def test_a_tab_separator_may_be_written_as_backslash_t(cli, tmp_path):
    write_tiny_csv(tmp_path / "tiny.csv")
    (tmp_path / "tabs.tsv").write_text((tmp_path / "tiny.csv").read_text().replace(",", "\t"))
    (tmp_path / "tabs.csv").write_text((tmp_path / "tabs.tsv").read_text())
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(TINY_RECIPE.replace("train: tiny.csv", "train: {path: tabs.csv, sep: '\\t'}"))
    result = cli("validate", recipe)
    assert result.exit_code == 0, result.output


# ------------------------------------------------------------------------------------------------
# Run directories that move


def test_a_moved_project_evaluates_and_resumes_and_a_changed_file_still_fails(cli, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    write_tiny_csv(old / "tiny.csv")
    european(old)
    (old / "recipe.yaml").write_text(
        TINY_RECIPE.replace(
            "train: tiny.csv", "train: {path: euro.csv, sep: ';', encoding: latin-1, decimal: ','}"
        )
    )
    trained = cli("train", old / "recipe.yaml", "-o", old / "runs" / "one", "--epochs", "1")
    assert trained.exit_code == 0, trained.output
    info = json.loads((old / "runs" / "one" / "data.json").read_text())
    assert info["files"]["train"]["from_run"] == "../../euro.csv"
    assert info["recipe_from_run"] == "../.."
    before = cli("evaluate", old / "runs" / "one", "--json")
    assert before.exit_code == 0, before.output

    new = tmp_path / "elsewhere" / "new"
    new.parent.mkdir()
    shutil.move(old, new)
    run = new / "runs" / "one"
    after = cli("evaluate", run, "--json")
    assert after.exit_code == 0, after.output
    assert json.loads(after.stdout)["tasks"] == json.loads(before.stdout)["tasks"]
    resumed = cli("train", "--resume", run, "--epochs", "2")
    assert resumed.exit_code == 0, resumed.output
    with_recipe = cli("train", new / "recipe.yaml", "--resume", run, "--epochs", "3")
    assert with_recipe.exit_code == 0, with_recipe.output

    euro = new / "euro.csv"
    euro.write_bytes(euro.read_bytes().replace("rød".encode("latin-1"), b"red"))
    changed = cli("evaluate", run)
    assert changed.exit_code == 2
    assert "Traceback" not in changed.output
    assert (
        f"{euro}: the file changed since training (sha256 differs), so the validation split cannot be rebuilt; "
        "pass --data FILE to evaluate it anyway"
    ) in changed.output


def test_a_run_of_mtl_0_1_with_absolute_paths_only_still_finds_its_data(tmp_path):
    from mtlcli import data

    write_tiny_csv(tmp_path / "tiny.csv")
    run = tmp_path / "somewhere" / "run"
    run.mkdir(parents=True)
    digest = data.file_digest(tmp_path / "tiny.csv")
    entry = {"path": str(tmp_path / "tiny.csv"), "source": str(tmp_path / "tiny.csv"), "sha256": digest}
    info = {
        "files": {"train": {**entry, "rows": 120}},
        "seed": 0,
        "split_rows": {"train": 90, "validation": 30},
    }
    info["fraction_indices"] = {"validation": list(range(30))}
    (run / "data.json").write_text(json.dumps(info))
    reloaded = data.reload_split(run, None)
    assert reloaded.name == "validation" and reloaded.table.n_rows == 30
    assert data.recipe_dir(run, info, tmp_path) == tmp_path


@pytest.mark.parametrize("mode", MODES)
def test_a_file_read_with_the_wrong_separator_says_which_one_it_looks_like(cli, tmp_path, mode):
    european(tmp_path)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        TINY_RECIPE.replace("train: tiny.csv", "train: euro.csv\n  csv: {encoding: latin-1}").replace(
            "  inputs:", MODES[mode] + "  inputs:"
        )
    )
    problems = refused(cli, recipe, tmp_path)
    if mode == "in memory":  # the file is read (and scanned) before its columns are checked
        assert problems == [
            f"  - {tmp_path / 'euro.csv'}:1: the header line is one column, 'a;b;color;kind;flag;value'; the "
            "file looks separated by ';': set data.csv: {sep: ';'} (data.train: 'euro.csv')"
        ]
    else:  # streamed, the columns are checked from the header first
        assert problems[0].endswith("the file looks separated by ';': set data.csv: {sep: ';'}")
    (tmp_path / "semi.csv").write_text("a;b;color;kind;flag;value\n1;2;red;x;yes;3\n1;2;red;y;no;4\n")
    recipe.write_text(recipe.read_text().replace("train: euro.csv", "train: semi.csv"))
    assert refused(cli, recipe, tmp_path)[0] == (
        f"  - {recipe}:{recipe.read_text().splitlines().index('    a: numeric') + 1} data.inputs.a: column 'a' not found in {tmp_path / 'semi.csv'} (columns: "
        "'a;b;color;kind;flag;value'); the file looks separated by ';': set data.csv: {sep: ';'}"
    )


def test_a_path_source_may_name_a_package_file(tmp_path):
    from mtlcli.data import sources

    table = sources.read_source({"path": "pkg://mtlcli/data/penguins.csv", "encoding": "utf-8"}, tmp_path)
    assert "species" in table.columns and table.n_rows > 300


SHAPES = [
    "a,b,c\n1,2,3\n4,5,6\n",
    "a,b,c\r\n1,2,3\r\n4,5\r\n7,8,9,10\r\n",
    "\n\na,b,c\n1,2,3\n   \n\n4,5,6\n1\n",
    "a,b,c\n1,2,3\n4,5,6",  # no newline at the end
    "a,b,c\n",
    "",
    "\n  \n",
    "a;b;c\n1;2;3\n",  # read with ',': one column holding ';'
    "a\n1\n\n2\n",
    "x,y\n" + "".join(f"{i},{i}\n" if i % 13 else f"{i}\n" for i in range(1, 200)),  # 15 short rows
    "x,y\n" + "".join(f"{i},{i},{i}\n" for i in range(1, 40)),  # more than 20 bad rows: counted
]


@pytest.mark.parametrize("text", SHAPES)
@pytest.mark.parametrize("gz", [False, True])
def test_the_fast_byte_scan_finds_what_the_csv_reader_finds(tmp_path, monkeypatch, text, gz):
    from mtlcli.data import csvfiles
    from mtlcli.errors import DataError

    path = tmp_path / ("f.csv.gz" if gz else "f.csv")
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())

    def outcome():
        try:
            rows = csvfiles.check(path)
            return rows.count, rows.breaks.tolist(), rows.lines(0, rows.count).tolist()
        except DataError as exc:
            return [p.render() for p in exc.problems]

    monkeypatch.setattr(csvfiles, "BLOCK", 7)  # lines cut across blocks, lines longer than a block
    fast = outcome()
    monkeypatch.setattr(csvfiles, "scan_bytes", lambda *a: None)
    assert fast == outcome()


def test_a_quoted_file_is_scanned_by_the_csv_reader(tmp_path):
    from mtlcli.data import csvfiles
    from mtlcli.errors import DataError

    path = tmp_path / "q.csv"
    path.write_text('a,b\n1,"x,y"\n2,"multi\nline"\n3\n')
    assert csvfiles.scan_bytes(path, csvfiles.options(None), str(path), False) is None
    with pytest.raises(DataError) as info:
        csvfiles.check(path)
    assert [p.render() for p in info.value.problems] == [
        f"{path}:5: expected 2 fields (as in the header line), received 1: the row is cut short"
    ]


@pytest.mark.parametrize("mode", MODES)
def test_lines_are_physical_after_blank_lines_and_multi_line_cells(cli, tmp_path, mode):
    recipe = project(tmp_path, extra=MODES[mode])
    f = tmp_path / "tiny.csv"
    rows = f.read_text().splitlines()
    rows[3] = (
        rows[3].replace(",red,", ',"red",').replace(",blue,", ',"blue",').replace(",green,", ',"green",')
    )
    fields = rows[40].split(",")
    fields[2] = '"dark\nred"'  # a quoted cell over two lines: the row is lines 42-43 once a blank line is in
    rows[40] = ",".join(fields)
    fields = rows[100].split(",")
    fields[1] = "oops"
    rows[100] = ",".join(fields)
    f.write_text("\n".join(rows[:10] + [""] + rows[10:]) + "\n")  # a blank line after line 10
    assert refused(cli, recipe, tmp_path) == [f"  - {f}:103 column 'b': expected a number, received 'oops'"]


def test_every_label_outside_the_declared_classes_is_reported(cli, tmp_path):
    rows = ["a,b,digit"] + [f"{i / 10},{i % 3},{i % 4}" for i in range(40)]
    for i in (5, 17, 30):
        rows[i] = rows[i].rsplit(",", 1)[0] + ",7"
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "data:\n  train: d.csv\n  validation: null\n  inputs: {a: numeric, b: numeric}\n"
        "model:\n  tasks:\n    digit: {type: classification, classes: 5}\ntrain: {epochs: 1}\n"
    )
    f = tmp_path / "d.csv"
    message = "label 7 is outside the 5 classes declared by model.tasks.digit.classes (expected 0..4)"
    assert refused(cli, recipe, tmp_path) == [
        f"  - {f}:{line} column 'digit': {message}" for line in (6, 18, 31)
    ]


def test_every_bad_image_file_is_reported(cli, tmp_path):
    png = b"\x89PNG\r\n\x1a\n" + bytes(32)
    (tmp_path / "img").mkdir()
    rows = ["path,label"]
    for i in range(12):
        (tmp_path / "img" / f"{i}.png").write_bytes(png)
        rows.append(f"img/{i}.png,{i % 2}")
    (tmp_path / "img" / "3.png").write_bytes(b"not an image")
    rows[5] = "img/missing.png,0"
    rows[8] = ",1"
    (tmp_path / "images.csv").write_text("\n".join(rows) + "\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "data:\n  train: images.csv\n  validation: null\n  inputs: {path: {kind: image, shape: [8, 8, 1]}}\n"
        "model:\n  tasks:\n    label: {type: binary}\ntrain: {epochs: 1}\n"
    )
    f, img = tmp_path / "images.csv", tmp_path / "img"
    assert refused(cli, recipe, tmp_path) == [
        f"  - {f}:5 column 'path': not a PNG, JPEG, GIF or BMP image: {img / '3.png'}",
        f"  - {f}:6 column 'path': image file not found: {img / 'missing.png'}",
        f"  - {f}:9 column 'path': missing image path",
    ]
