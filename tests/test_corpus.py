"""The hostile-input corpus: every ``tests/corpus/<case>.yaml`` is a broken recipe (or a recipe whose data
file ``<case>.csv``/``.npz``/... is broken). ``mtl validate`` must exit 2 and print exactly
``<case>.expected`` (``{dir}`` stands for the corpus directory), with no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

CORPUS = Path(__file__).parent / "corpus"
CASES = sorted(p.stem for p in CORPUS.glob("*.yaml"))


def test_the_corpus_is_large_and_complete():
    assert len(CASES) >= 50
    assert sorted(p.stem for p in CORPUS.glob("*.expected")) == CASES


@pytest.mark.parametrize("case", CASES)
def test_broken_input_is_a_clear_error(cli, case):
    result = cli("validate", CORPUS / f"{case}.yaml")
    expected = (CORPUS / f"{case}.expected").read_text(encoding="utf-8").replace("{dir}", str(CORPUS))
    assert "Traceback" not in result.output
    assert result.exit_code == 2, result.output
    assert result.output == expected


def test_a_huge_file_is_refused_before_parsing(cli, tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * 120_000)
    result = cli("validate", big)
    assert result.exit_code == 2
    assert result.output == (
        f"error: 1 problem found\n  - {big}: the file is 1,200,000 bytes; a recipe is at most 1,048,576 bytes\n"
    )
