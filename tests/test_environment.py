"""The cluster's conda environment and the package ask for the same things."""

import tomllib

import yaml
from helpers import ROOT


def _environment():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict) and "pip" in item)
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    return env, conda, pip


def test_environment_yml_lists_the_same_requirements_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]).union(*project["optional-dependencies"].values())
    env, conda, pip = _environment()
    listed = {line for line in pip if not line.startswith("-")}
    assert listed == wanted
    assert "-e ." in pip  # the package itself, from the repository
    # the cluster's Python is one the package accepts (the tests import tomllib: 3.11 or newer)
    python = next(d for d in conda if d.startswith("python="))
    minimum = project["requires-python"].removeprefix(">=")
    assert tuple(map(int, python.removeprefix("python=").split("."))) >= tuple(map(int, minimum.split(".")))
    assert minimum == "3.11"


def test_the_cluster_environment_has_node_for_the_report_and_only_conda_forge():
    env, conda, pip = _environment()
    assert any(d.startswith("nodejs") for d in conda)  # npm fetches the report's widget script
    assert env["channels"] == ["conda-forge", "nodefaults"]
    # the same torch as on the CPU machines, as a CUDA build that still runs on the V100s
    assert "torch==2.13.0" in pip and any("cu126" in line for line in pip)


def test_the_package_declares_what_the_notebooks_import_and_its_command():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert any(d.startswith("myst-nb") for d in extras["notebooks"])  # analysis.ipynb: from myst_nb import glue
    assert any(d.startswith("papermill") for d in extras["notebooks"])
    assert any(d.startswith("jupyter-book>=1.0,<2") for d in extras["book"])
    assert project["scripts"]["imginav"] == "imginav_core.__main__:main"
