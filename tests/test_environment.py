"""The cluster's conda environment and the package ask for the same things."""

import tomllib

import yaml

from helpers import ROOT


def test_environment_yml_lists_the_same_requirements_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict) and "pip" in item)
    listed = {line for line in pip if not line.startswith("-")}
    assert listed == wanted
    assert "-e ." in pip  # the package itself, from the repository
    assert any(str(d).startswith("python=") for d in env["dependencies"] if isinstance(d, str))
    assert project["requires-python"] == ">=3.10"
