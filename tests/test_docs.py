"""Docs stay true: the README's configuration table is generated from the Config fields."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_configuration_table_is_current():
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    from config_table import table

    readme = (ROOT / "README.md").read_text()
    start, end = readme.index("<!-- config:start -->"), readme.index("<!-- config:end -->")
    assert readme[start:end].strip().removeprefix("<!-- config:start -->").strip() == table().strip(), (
        "README configuration table is stale: regenerate with python scripts/config_table.py"
    )


def test_readme_setup_is_make_serve_and_make_test():
    readme = (ROOT / "README.md").read_text()
    assert "make serve" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
