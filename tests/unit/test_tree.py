"""tests/unit mirrors the source tree: tests/unit/<package>/…/test_<name>.py tests the module
<package>/…/<name>.py (or the package <package>/…/<name>/); the files at tests/unit's top test the
project as a whole (layering, doctests, deploy files, the rules every user shares)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "tests" / "unit"


def test_every_unit_test_file_names_the_module_it_tests() -> None:
    orphans = []
    for test in sorted(UNIT.rglob("test_*.py")):
        folder = test.parent.relative_to(UNIT)
        if folder == Path("."):
            continue
        name = test.stem.removeprefix("test_")
        source = ROOT / folder / name
        if not (source.with_suffix(".py").is_file() or source.is_dir()):
            orphans.append(str(test.relative_to(ROOT)))
    assert orphans == [], f"unit tests that mirror no source module: {orphans}"


def test_each_folder_is_a_package_of_the_source_tree() -> None:
    for folder in sorted(p for p in UNIT.rglob("*") if p.is_dir() and p.name != "__pycache__"):
        rel = folder.relative_to(UNIT)
        assert (ROOT / rel / "__init__.py").is_file(), f"tests/unit/{rel} mirrors no package"
        assert (folder / "__init__.py").is_file(), f"tests/unit/{rel} needs an __init__.py"
