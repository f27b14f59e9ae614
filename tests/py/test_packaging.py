"""The distribution ships every package of the tree."""

import tomllib

from cajex import ROOT


def test_pyproject_lists_every_package_folder():
    """A package folder missing from pyproject.toml would be absent from a wheel."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {"cajex": ROOT / "cajex", "cajex.web": ROOT / "web", "cajex.jobs": ROOT / "jobs"}
    found = set()
    for name, folder in folders.items():
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder).parts
            found.add(".".join((*name.split("."), *rel)))
    assert found == set(config["packages"])
