"""Data sources (globs, Parquet, IDX, image folders, image-path CSVs, pkg://, MultiFashion), splits by
column and by group, and their errors. No TensorFlow here except where a test trains."""

from __future__ import annotations

import gzip
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from mtlcli import data
from mtlcli import recipe as R
from mtlcli.data import multifashion, sources
from mtlcli.errors import DataError

from .conftest import TINY_RECIPE, data_errors, load_recipe, write_tiny_csv

load = load_recipe
errors = data_errors


def write_png(path: Path, pixels: np.ndarray) -> Path:
    """A grayscale 8-bit PNG, written without any imaging library."""
    h, w = pixels.shape

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = b"".join(b"\x00" + pixels[r].astype(np.uint8).tobytes() for r in range(h))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    return path


def write_idx(path: Path, array: np.ndarray) -> Path:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())
    return path


# ------------------------------------------------------------------------------------------------
# Sources


def test_glob_joins_files_and_names_the_right_file_in_errors(tmp_path):
    write_tiny_csv(tmp_path / "all.csv", n=60)
    lines = (tmp_path / "all.csv").read_text().splitlines()
    (tmp_path / "part-1.csv").write_text("\n".join(lines[:31]) + "\n")
    (tmp_path / "part-2.csv").write_text("\n".join([lines[0], *lines[31:]]) + "\n")
    loaded = load(tmp_path, TINY_RECIPE.replace("train: tiny.csv", "train: part-*.csv"))
    prepared = data.prepare(loaded)
    assert sum(prepared.info["split_rows"].values()) == 60
    assert prepared.info["files"]["train"]["path"] == str(tmp_path / "part-*.csv")
    # a bad value in the second file is reported with that file and its own line number
    bad = (tmp_path / "part-2.csv").read_text().splitlines()
    bad[4] = "oops" + bad[4][bad[4].index(",") :]
    (tmp_path / "part-2.csv").write_text("\n".join(bad) + "\n")
    assert errors(loaded) == [f"{tmp_path / 'part-2.csv'}:5 column 'a': expected a number, received 'oops'"]


def test_glob_without_match_and_columns_that_differ(tmp_path):
    loaded = load(tmp_path, TINY_RECIPE.replace("train: tiny.csv", "train: nothing-*.csv"))
    assert errors(loaded) == [
        f"{tmp_path / 'nothing-*.csv'}: no file matches this pattern (data.train: 'nothing-*.csv')"
    ]
    (tmp_path / "p1.csv").write_text("a,b\n1,2\n")
    (tmp_path / "p2.csv").write_text("a,c\n1,2\n")
    loaded = load(tmp_path, TINY_RECIPE.replace("train: tiny.csv", "train: p?.csv"))
    assert errors(loaded) == [
        f"{tmp_path / 'p2.csv'}: columns differ from {tmp_path / 'p1.csv'} (extra: 'c'; missing: 'b') "
        "(data.train: 'p?.csv')"
    ]


def test_parquet_needs_the_extra_or_reads(tmp_path):
    (tmp_path / "d.parquet").write_bytes(b"PAR1")
    loaded = load(tmp_path, TINY_RECIPE.replace("train: tiny.csv", "train: d.parquet"))
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        assert errors(loaded) == [
            f"{tmp_path / 'd.parquet'}: reading Parquet needs pyarrow, from the optional extra 'parquet': "
            "pip install 'mtlcli[parquet]' (data.train: 'd.parquet')"
        ]
    else:
        import pandas as pd

        write_tiny_csv(tmp_path / "tiny.csv")
        pd.read_csv(tmp_path / "tiny.csv").to_parquet(tmp_path / "d.parquet")
        assert sum(data.prepare(loaded).info["split_rows"].values()) == 120


def test_idx_pair_source(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(30, 6, 6), dtype=np.uint8)
    labels = np.arange(30) % 3
    write_idx(tmp_path / "img.gz", images)
    write_idx(tmp_path / "lab.gz", labels)
    loaded = load(
        tmp_path,
        """\
data:
  train: {idx: img.gz, labels: lab.gz}
  inputs: {image: {kind: image, shape: [6, 6, 1]}}
model: {tasks: {label: {type: classification}}}
""",
    )
    prepared = data.prepare(loaded)
    assert prepared.prep.targets["label"].classes == [0, 1, 2]
    x = prepared.splits["train"].x["image"]
    assert x.shape[1:] == (6, 6, 1) and x.max() <= 1.0
    # a truncated file is refused with the sizes
    raw = gzip.decompress((tmp_path / "img.gz").read_bytes())
    with gzip.open(tmp_path / "img.gz", "wb") as fh:
        fh.write(raw[:-5])
    assert errors(loaded) == [
        f"{tmp_path / 'img.gz'}: IDX header announces shape [30, 6, 6] (1080 bytes) but the file holds 1075 "
        "bytes of data (data.train: '{idx: img.gz, labels: lab.gz}')"
    ]


def test_idx_label_count_mismatch(tmp_path):
    write_idx(tmp_path / "img.gz", np.zeros((5, 2, 2)))
    write_idx(tmp_path / "lab.gz", np.zeros(4))
    with pytest.raises(DataError) as info:
        sources.read_source({"idx": "img.gz", "labels": "lab.gz"}, tmp_path)
    assert info.value.problems[0].render() == (
        f"{tmp_path / 'lab.gz'}: 4 labels for 5 images in {tmp_path / 'img.gz'}; expected one label per image"
    )


def image_folder(tmp_path: Path, n: int = 8) -> Path:
    rng = np.random.default_rng(1)
    for cls, level in (("dark", 30), ("light", 220)):
        for i in range(n):
            write_png(tmp_path / "imgs" / cls / f"{i}.png", rng.integers(level - 20, level + 20, size=(5, 7)))
    return tmp_path / "imgs"


def test_image_folder_one_folder_per_class(tmp_path):
    image_folder(tmp_path)
    loaded = load(
        tmp_path,
        """\
data:
  train: imgs
  validation: 0.25
  inputs: {image: {kind: image, shape: [4, 4, 1]}}
model: {tasks: {label: {type: binary}}}
""",
    )
    prepared = data.prepare(loaded)
    assert prepared.prep.targets["label"].classes == ["dark", "light"]
    train = prepared.splits["train"]
    assert train.images == {"image": {"shape": [4, 4, 1], "scale": 1 / 255}}
    assert all(Path(p).exists() for p in train.x["image"])  # paths now, decoded by tf.data at training


def test_image_csv_with_relative_paths_and_errors(tmp_path):
    image_folder(tmp_path)
    rows = ["file,label,size"]
    for i in range(8):
        rows.append(f"imgs/dark/{i}.png,dark,{i}")
        rows.append(f"imgs/light/{i}.png,light,{i + 5}")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    text = """\
data:
  train: list.csv
  validation: 0.25
  inputs: {image: {kind: image, shape: [4, 4, 1], column: file}}
model: {tasks: {label: {type: binary}, size: {type: regression}}}
"""
    loaded = load(tmp_path, text)
    prepared = data.prepare(loaded)
    assert prepared.splits["train"].x["image"][0].startswith(str(tmp_path / "imgs"))
    (tmp_path / "imgs" / "light" / "3.png").write_text("not an image")
    (tmp_path / "imgs" / "dark" / "5.png").unlink()
    assert sorted(errors(loaded)) == [
        f"{tmp_path / 'list.csv'}:12 column 'file': image file not found: {tmp_path / 'imgs' / 'dark' / '5.png'}",
        f"{tmp_path / 'list.csv'}:9 column 'file': not a PNG, JPEG, GIF or BMP image: "
        f"{tmp_path / 'imgs' / 'light' / '3.png'}",
    ]


def test_pkg_source_reads_a_file_inside_an_installed_package(tmp_path):
    loaded = load(
        tmp_path,
        """\
data:
  train: pkg://mtlcli/data/penguins.csv
  inputs: {bill_length_mm: numeric}
model: {tasks: {species: {type: classification}}}
""",
    )
    assert sum(data.prepare(loaded).info["split_rows"].values()) == 344
    loaded = load(
        tmp_path,
        "data: {train: 'pkg://no_such_pkg_xyz/a.csv', inputs: {a: numeric}}\n"
        "model: {tasks: {t: {type: regression}}}\n",
    )
    assert errors(loaded) == [
        "pkg://no_such_pkg_xyz/a.csv: Python package 'no_such_pkg_xyz' is not installed; install it (pip install "
        "no_such_pkg_xyz) or point the recipe at a copy of the file (data.train: 'pkg://no_such_pkg_xyz/a.csv')"
    ]


def test_multifashion_overlay_construction():
    images = np.zeros((3, 28, 28), np.uint8)
    images[0, :, :] = 10
    images[1, 0, 0] = 200
    images[2, 27, 27] = 255
    out = multifashion.overlay(images, np.array([0, 1, 2]), seed=0)
    partner = np.random.default_rng(0).integers(0, 3, size=3)
    assert out["image"].shape == (3, 28, 28, 1) and out["image"].dtype == np.uint8
    assert out["right"].tolist() == partner.tolist() and out["left"].tolist() == [0, 1, 2]
    idx = np.floor((np.arange(28) + 0.5) * 36 / 28).astype(int)
    canvas = np.zeros((36, 36), np.uint8)
    canvas[0:28, 0:28] = images[1]
    canvas[6:34, 6:34] = np.maximum(canvas[6:34, 6:34], images[partner[1]])
    assert np.array_equal(out["image"][1, :, :, 0], canvas[idx][:, idx])


FASHION = multifashion.DEFAULT_DIR


@pytest.mark.skipif(
    not (FASHION / "t10k-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST IDX files absent (apt-get install dataset-fashion-mnist)",
)
def test_multifashion_source_builds_and_caches(tmp_path):
    spec = {"multifashion": str(FASHION), "split": "test", "cache": str(tmp_path)}
    table = sources.read_source(spec)
    assert table.n_rows == 10_000 and table.columns["image"].shape == (10_000, 28, 28, 1)
    cached = list(tmp_path.glob("multifashion-test-seed0-*.npz"))
    assert len(cached) == 1
    again = sources.read_source(spec)
    assert again.file == str(cached[0]) and np.array_equal(again.columns["right"], table.columns["right"])


def test_multifashion_missing_files_name_the_package(tmp_path):
    with pytest.raises(DataError) as info:
        sources.read_source({"multifashion": str(tmp_path / "none")})
    assert info.value.problems[0].render() == (
        f"{tmp_path / 'none' / 'train-images-idx3-ubyte.gz'}: Fashion-MNIST file not found"
    )


# ------------------------------------------------------------------------------------------------
# Splits


FOLD_RECIPE = """\
seed: 1
data:
  train: folds.csv
  split: {column: fold, train: [0, 1, 2], validation: [3], test: [4]}
  inputs: {a: numeric}
model: {tasks: {t: {type: regression}}}
"""


def write_folds(tmp_path, n=50, school=None):
    lines = ["a,t,fold,school"]
    for i in range(n):
        lines.append(f"{i * 0.1},{i * 0.2},{i % 5},{(school or (lambda j: j // 5))(i)}")
    (tmp_path / "folds.csv").write_text("\n".join(lines) + "\n")


def test_split_by_column(tmp_path):
    write_folds(tmp_path)
    prepared = data.prepare(load(tmp_path, FOLD_RECIPE))
    assert prepared.info["split_rows"] == {"train": 30, "validation": 10, "test": 10}
    assert prepared.info["fraction_indices"]["validation"] == list(range(3, 50, 5))


def test_split_by_column_errors(tmp_path):
    write_folds(tmp_path)
    (tmp_path / "folds.csv").write_text(
        (tmp_path / "folds.csv").read_text().replace("\n0.5,1.0,0,", "\n0.5,1.0,7,")
    )
    assert errors(load(tmp_path, FOLD_RECIPE)) == [
        f"{tmp_path / 'folds.csv'}:7 column 'fold': value 7 is in none of data.split.train/validation/test "
        "(train: [0, 1, 2], ...); list it in one of them"
    ]
    write_folds(tmp_path)
    assert errors(load(tmp_path, FOLD_RECIPE.replace("test: [4]", "test: [9]"))) == [
        f"{tmp_path / 'folds.csv'}:6 column 'fold': value 4 is in none of data.split.train/validation/test "
        "(train: [0, 1, 2], ...); list it in one of them"
    ]
    prepared = data.prepare(load(tmp_path, FOLD_RECIPE.replace("test: [4]", "test: [4, 9]")))
    assert prepared.info["split_rows"]["test"] == 10


def test_split_by_column_empty_split(tmp_path):
    write_folds(tmp_path)
    text = FOLD_RECIPE.replace("validation: [3], test: [4]", "validation: [3, 4], test: [9]")
    assert errors(load(tmp_path, text)) == [
        f"{tmp_path / 'folds.csv'} column 'fold': the test split is empty: no row has a value in "
        "data.split.test [9]"
    ]


def test_group_by_keeps_groups_in_one_split(tmp_path):
    write_folds(tmp_path, n=100, school=lambda i: i % 13)
    text = "seed: 4\ndata:\n  train: folds.csv\n  validation: 0.2\n  test: 0.2\n  group_by: school\n" + (
        "  inputs: {a: numeric}\nmodel: {tasks: {t: {type: regression}}}\n"
    )
    prepared = data.prepare(load(tmp_path, text))
    idx = prepared.info["fraction_indices"]
    schools = {k: {int(i) % 13 for i in v} for k, v in idx.items()}
    train_rows = sorted(set(range(100)) - set(idx["validation"]) - set(idx["test"]))
    schools["train"] = {i % 13 for i in train_rows}
    assert not schools["train"] & schools["validation"] and not schools["train"] & schools["test"]
    assert not schools["validation"] & schools["test"]
    assert sum(prepared.info["split_rows"].values()) == 100


def test_group_by_straddling_files_is_an_error(tmp_path):
    write_folds(tmp_path, n=20)
    (tmp_path / "val.csv").write_text("a,t,fold,school\n1,2,0,9\n1,2,0,3\n")
    text = "data:\n  train: folds.csv\n  validation: val.csv\n  group_by: school\n" + (
        "  inputs: {a: numeric}\nmodel: {tasks: {t: {type: regression}}}\n"
    )
    assert errors(load(tmp_path, text)) == [
        f"{tmp_path / 'val.csv'}:3 column 'school': group 3 is in both the train split "
        f"({tmp_path / 'folds.csv'}:17) and the validation split; rows sharing data.group_by must stay in one split"
    ]


def test_group_by_missing_key(tmp_path):
    write_folds(tmp_path, n=20)
    (tmp_path / "folds.csv").write_text((tmp_path / "folds.csv").read_text().replace(",0,0\n", ",0,\n", 1))
    text = "data:\n  train: folds.csv\n  group_by: school\n  inputs: {a: numeric}\n" + (
        "model: {tasks: {t: {type: regression}}}\n"
    )
    assert errors(load(tmp_path, text)) == [
        f"{tmp_path / 'folds.csv'}:2 column 'school': missing group key; every row needs a value in the "
        "data.group_by column"
    ]


def test_split_spec_recipe_errors(tmp_path):
    text = """\
data:
  train: folds.csv
  validation: 0.2
  split: {colum: fold, train: [0], test: [0]}
  train_extra: 1
  inputs: {a: numeric}
model: {tasks: {t: {type: regression}}}
"""
    with pytest.raises(R.RecipeError) as info:
        load(tmp_path, text)
    got = [p.render() for p in info.value.problems]
    assert (
        f"{tmp_path / 'recipe.yaml'}:3 data.validation: data.validation cannot be combined with data.split "
        "(the split column assigns the validation rows); remove one" in got
    )
    assert (
        f"{tmp_path / 'recipe.yaml'}:4 data.split.colum: unknown key 'colum'; did you mean 'column'?; "
        "expected column, train, validation, test" in got
    )
    assert (
        f"{tmp_path / 'recipe.yaml'}:4 data.split.test: value 0 is in both split.train and split.test" in got
    )


def test_source_mapping_recipe_errors(tmp_path):
    text = "data:\n  train: {idx: a.gz, split: train, labls: b.gz}\n  inputs: {a: numeric}\n" + (
        "model: {tasks: {t: {type: regression}}}\n"
    )
    with pytest.raises(R.RecipeError) as info:
        load(tmp_path, text)
    assert [p.render() for p in info.value.problems] == [
        f"{tmp_path / 'recipe.yaml'}:2 data.train.labls: unknown key 'labls'; did you mean 'labels'?; a data "
        "source is a path, a glob, {path: FILE, sep: ';'}, {idx: IMAGES, labels: LABELS} or "
        "{multifashion: DIR, split: train}",
        f"{tmp_path / 'recipe.yaml'}:2 data.train.split: split applies to multifashion sources only",
    ]


def test_validate_does_not_import_tensorflow(tmp_path):
    import subprocess

    image_folder(tmp_path)
    (tmp_path / "recipe.yaml").write_text(
        "data:\n  train: imgs\n  inputs: {image: {kind: image, shape: [4, 4, 1]}}\n"
        "model: {tasks: {label: {type: binary, class_weight: balanced}}}\n"
    )
    code = (
        "import sys; from mtlcli import data; from mtlcli import recipe as recipe; "
        f"data.prepare(recipe.load({str(tmp_path / 'recipe.yaml')!r})); "
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------------------
# The bundled recipes and the CLI


RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_diamonds_recipe_validates():
    prepared = data.prepare(R.load(RECIPES / "diamonds.yaml"))
    assert prepared.info["split_rows"] == {"train": 43152, "validation": 5394, "test": 5394}
    assert prepared.prep.targets["cut"].classes == ["Fair", "Good", "Ideal", "Premium", "Very Good"]


@pytest.mark.skipif(
    not (FASHION / "train-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST IDX files absent (apt-get install dataset-fashion-mnist)",
)
def test_multifashion_recipe_validates():
    prepared = data.prepare(R.load(RECIPES / "multifashion.yaml"))
    assert prepared.info["split_rows"] == {"train": 54000, "validation": 6000, "test": 10000}
    assert prepared.prep.targets["left"].classes == list(range(10))


def test_yeast_recipe_validates_or_names_the_package():
    import importlib.util

    loaded = R.load(RECIPES / "yeast.yaml")
    if importlib.util.find_spec("river") is None:
        assert [p.message for p in pytest.raises(DataError, data.prepare, loaded).value.problems] == [
            "Python package 'river' is not installed; install it (pip install river) or point the recipe at a "
            "copy of the file (data.train: 'pkg://river/datasets/yeast.csv.gz')"
        ]
    else:
        prepared = data.prepare(loaded)
        assert (
            prepared.prep.targets["functions"].units == 14
            and sum(prepared.info["split_rows"].values()) == 2417
        )


def test_validate_cli_reports_data_errors_with_exit_2(cli, tmp_path):
    write_tiny_csv(tmp_path / "tiny.csv")
    text = TINY_RECIPE.replace(
        "value: {type: regression, metrics: [mae]}",
        "value: {type: regression, metrics: [mae], when: {column: colour, equals: red}}",
    )
    (tmp_path / "recipe.yaml").write_text(text)
    result = cli("validate", tmp_path / "recipe.yaml")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert (
        f"{tmp_path / 'recipe.yaml'}:16 model.tasks.value.when: when column 'colour' not found in "
        f"{tmp_path / 'tiny.csv'}; did you mean 'color'?" in " ".join(result.output.split())
    )
