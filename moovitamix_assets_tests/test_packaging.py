"""What `pip install .` ships: every module of the package, and no web framework of the stand-in."""

import ast
from pathlib import Path

from setuptools import find_packages

REPO = Path(__file__).resolve().parents[1]


def test_every_folder_of_python_code_is_a_package_that_setup_ships() -> None:
    shipped = set(find_packages(where=str(REPO), exclude=["moovitamix_assets_tests*"]))
    folders = {
        ".".join(path.parent.relative_to(REPO).parts)
        for path in (REPO / "moovitamix_assets").rglob("*.py")
    }
    assert folders <= shipped, folders - shipped


def test_the_platform_does_not_depend_on_the_stand_ins_web_stack() -> None:
    setup = ast.parse((REPO / "setup.py").read_text())
    call = next(n for n in ast.walk(setup) if isinstance(n, ast.Call) and n.keywords)
    requires = next(k.value for k in call.keywords if k.arg == "install_requires")
    names = [ast.unparse(item) for item in requires.elts]
    assert not any("fastapi" in name or "uvicorn" in name for name in names), names


def test_every_data_file_the_package_reads_is_shipped() -> None:
    setup = ast.parse((REPO / "setup.py").read_text())
    call = next(n for n in ast.walk(setup) if isinstance(n, ast.Call) and n.keywords)
    package_data = ast.literal_eval(next(k.value for k in call.keywords if k.arg == "package_data"))
    shipped = {
        path
        for package, patterns in package_data.items()
        for pattern in patterns
        for path in (REPO / package.replace(".", "/")).glob(pattern)
    }
    data = {
        path
        for path in (REPO / "moovitamix_assets").rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc")
    }
    assert (REPO / "moovitamix_assets" / "warehouse" / "columns.yaml") in data
    assert data <= shipped, sorted(str(p.relative_to(REPO)) for p in data - shipped)
