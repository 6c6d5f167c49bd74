"""Packaging: pyproject.toml declares what requirements.txt pins, and an installed copy of the
package (outside a checkout) resolves its folders from MER_HOME or the working directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from mer_utils import config

PACKAGE_DIR = Path(config.__file__).resolve().parent
REPO = PACKAGE_DIR.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
EXTRAS = ("embeddings", "notebooks", "dev", "scale", "app")


def requirement_lines(path: Path) -> list[Requirement]:
    """The requirements of a requirements.txt (comments and blank lines skipped)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def declared() -> dict[str, Requirement]:
    """Every package pyproject.toml declares (runtime and extras), by canonical name."""
    found = {}
    for text in PYPROJECT["dependencies"] + [
        r for e in EXTRAS for r in PYPROJECT["optional-dependencies"][e]
    ]:
        requirement = Requirement(text)
        if canonicalize_name(requirement.name) != canonicalize_name(PYPROJECT["name"]):
            found[canonicalize_name(requirement.name)] = requirement
    return found


def lowest_allowed(requirement: Requirement) -> Version:
    """The lowest version a pin allows (its ==, ~= or >= bound)."""
    bounds = [Version(s.version) for s in requirement.specifier if s.operator in ("==", "~=", ">=")]
    if not bounds:
        raise ValueError(f"requirements.txt: {requirement} has no lower bound")
    return max(bounds)


PINS = requirement_lines(REPO / "requirements.txt")


def test_pyproject_declares_runtime_dependencies_and_extras():
    runtime = {canonicalize_name(Requirement(r).name) for r in PYPROJECT["dependencies"]}
    assert {
        "tensorflow-cpu",
        "keras",
        "mtcnn",
        "librosa",
        "av",
        "ctranslate2",
        "scikit-learn",
        "pandas",
    } <= runtime
    assert set(EXTRAS) <= set(PYPROJECT["optional-dependencies"])
    notebooks = {
        canonicalize_name(Requirement(r).name) for r in PYPROJECT["optional-dependencies"]["notebooks"]
    }
    assert {"papermill", "nbclient", "ipykernel"} <= notebooks
    assert "mer" in PYPROJECT["scripts"]
    for text in declared().values():
        assert text.specifier, f"pyproject.toml: {text} needs a version range"


@pytest.mark.parametrize("pin", PINS, ids=[p.name for p in PINS])
def test_every_pin_is_declared_and_inside_its_range(pin):
    name = canonicalize_name(pin.name)
    assert name in declared(), (
        f"requirements.txt pins {pin.name}; declare it in pyproject.toml (runtime or an extra)"
    )
    declared_range = declared()[name].specifier
    assert declared_range.contains(lowest_allowed(pin), prereleases=True), (
        f"requirements.txt {pin} falls outside pyproject.toml's {declared()[name]}"
    )
    try:
        installed = metadata.version(pin.name)
    except metadata.PackageNotFoundError:
        return
    assert pin.specifier.contains(installed, prereleases=True) and declared_range.contains(
        installed, prereleases=True
    )


def test_every_runtime_dependency_is_pinned():
    pinned = {canonicalize_name(p.name) for p in PINS}
    runtime = [Requirement(r) for r in PYPROJECT["dependencies"]]
    assert [r.name for r in runtime if canonicalize_name(r.name) not in pinned] == []


def test_project_root_follows_mer_home_then_checkout_then_cwd(tmp_path, monkeypatch):
    checkout = tmp_path / "repo"
    (checkout / "notebooks").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text("")
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.chdir(tmp_path)
    assert config.checkout_root(checkout) == checkout
    assert config.checkout_root(site) is None
    assert config.project_root({}, checkout) == checkout
    assert config.project_root({}, site) == tmp_path.resolve()
    assert (
        config.project_root({"MER_HOME": str(tmp_path / "home")}, checkout) == (tmp_path / "home").resolve()
    )


@pytest.fixture(scope="module")
def installed_copy(tmp_path_factory) -> Path:
    """A copy of the package alone in a folder, as `pip install .` puts it into site-packages."""
    site = tmp_path_factory.mktemp("site-packages")
    shutil.copytree(PACKAGE_DIR, site / "mer_utils", ignore=shutil.ignore_patterns("__pycache__"))
    return site


def run_installed(site: Path, cwd: Path, args: list[str], **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MER_")}
    environment.update(PYTHONPATH=str(site), **env)
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=120
    )


PRINT_PATHS = (
    "import json; from mer_utils import config as c; print(json.dumps({k: str(getattr(c, k)) for k in "
    "('CHECKOUT_ROOT', 'PROJECT_ROOT', 'DATA_DIR', 'DEMO_DIR', 'RUNS_DIR', 'FIGURES_DIR', 'CACHE_DIR')}))"
)


def test_installed_package_resolves_folders_from_cwd_or_mer_home(installed_copy, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    done = run_installed(installed_copy, work, ["-c", PRINT_PATHS])
    paths = json.loads(done.stdout)
    root = work.resolve()
    assert paths["CHECKOUT_ROOT"] == "None"
    assert paths == {
        "CHECKOUT_ROOT": "None",
        "PROJECT_ROOT": str(root),
        "DATA_DIR": str(root / "data"),
        "DEMO_DIR": str(root / "data" / "demo"),
        "RUNS_DIR": str(root / "runs"),
        "FIGURES_DIR": str(root / "figures"),
        "CACHE_DIR": str(root / ".cache"),
    }
    home = tmp_path / "home"
    paths = json.loads(run_installed(installed_copy, work, ["-c", PRINT_PATHS], MER_HOME=str(home)).stdout)
    assert paths["RUNS_DIR"] == str(home.resolve() / "runs") and paths["CACHE_DIR"] == str(
        home.resolve() / ".cache"
    )
    paths = json.loads(
        run_installed(installed_copy, work, ["-c", PRINT_PATHS], MER_RUNS_DIR=str(tmp_path / "r")).stdout
    )
    assert paths["RUNS_DIR"] == str(tmp_path / "r")


def test_mer_notebooks_without_notebooks_fails_with_a_clear_error(installed_copy, tmp_path):
    done = run_installed(installed_copy, tmp_path, ["-m", "mer_utils.cli", "notebooks"])
    assert done.returncode != 0
    assert "no notebooks" in done.stderr and "checkout" in done.stderr
    assert "passed" not in done.stdout
    assert run_installed(installed_copy, tmp_path, ["-m", "mer_utils.cli", "--help"]).returncode == 0
