"""docs/benchmarks.md is generated from bench/results/ (bench/make_benchmarks_doc.py): it fails
when a result file was added or changed without regenerating the page."""

from __future__ import annotations

from bench.make_benchmarks_doc import DOC, render


def test_benchmarks_doc_is_generated_from_the_results() -> None:
    assert DOC.read_text() == render(), (
        f"{DOC} is stale: run `python bench/make_benchmarks_doc.py`"
    )


def test_every_result_table_names_its_cpu_and_date() -> None:
    text = render()
    tables = [line for line in text.splitlines() if line.startswith("## ")]
    assert len(tables) >= 2, tables
    rows = [line for line in text.splitlines() if line.startswith("| 20")]
    assert rows and all(line.split("|")[1].strip()[:4].isdigit() for line in rows)
