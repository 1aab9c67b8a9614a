"""The set-up promises of the README: pins that agree everywhere, two commands, and a JupyterLab that starts.

- constraints.txt (the tested lock), environment.yml (its mirror for conda) and pyproject.toml (ranges) agree;
- the running environment has exactly the pinned versions;
- the README's quick start is `make lab` and `make test`, and the Makefile has the targets it names;
- JupyterLab starts headless the way `make lab` starts it, and serves the lab page;
- with the course's own Lab settings (lab/overrides.json): no news prompt, no news or update requests.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from lab_settings import make_lab_options

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
CPU_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"


def constraint_lines() -> list[str]:
    lines = (line.strip() for line in (ROOT / "constraints.txt").read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def pins(lines: list[str]) -> dict[str, Version]:
    """{canonical name: version} of the ``name==version`` lines; anything else in ``lines`` is an error."""
    result = {}
    for line in lines:
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"not an exact pin: {line!r}"
        name = canonicalize_name(req.name)
        assert name not in result, f"{req.name} pinned twice"
        result[name] = Version(specs[0].version)
    return result


def environment_yml() -> dict:
    """environment.yml read by a small line parser (PyYAML is not a course dependency).

    Knows just the shape the file has: top-level ``key: value`` and ``key:`` followed by ``- item`` lists, with
    one nested ``- pip:`` list under ``dependencies``.
    """
    data: dict = {}
    key = None
    pip_indent = None
    for raw in (ROOT / "environment.yml").read_text().splitlines():
        line = raw.split(" #")[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        indent = len(line) - len(line.lstrip())
        text = line.strip()
        if indent == 0:
            pip_indent = None
            key, _, value = text.partition(":")
            data[key] = value.strip() or []
        elif text.startswith("- "):
            item = text[2:].strip()
            if pip_indent is not None and indent > pip_indent:
                data["pip"].append(item)
            elif item == "pip:":
                pip_indent = indent
                data["pip"] = []
            else:
                pip_indent = None
                data[key].append(item)
        else:
            raise AssertionError(f"environment.yml: unexpected line {raw!r}")
    return data


def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def declared_requirements() -> dict[str, Requirement]:
    """The direct dependencies: ``dependencies`` plus every optional-dependency group (dev includes lab)."""
    project = pyproject()["project"]
    lines = list(project["dependencies"])
    for group in project.get("optional-dependencies", {}).values():
        lines += group
    result: dict[str, Requirement] = {}
    for line in lines:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        if name in result:
            assert result[name].specifier == req.specifier, f"{req.name} declared with two different ranges"
        result[name] = req
    return result


# ---------------------------------------------------------------------------------------------------- the pins

def test_environment_yml_mirrors_constraints_exactly():
    env = environment_yml()
    assert env["name"] == "alignment-course"
    assert env["channels"] == ["conda-forge"]
    assert env["dependencies"] == ["python>=3.10", "pip"]
    assert env["pip"] == [CPU_INDEX, *constraint_lines(), "-e ."], (
        "environment.yml's pip list must be the CPU index, then constraints.txt line for line, then `-e .`")
    assert pins(env["pip"][1:-1]) == pins(constraint_lines())


def test_environment_yml_line_parser_agrees_with_yaml():
    yaml = pytest.importorskip("yaml")  # PyYAML comes with jupyter; a cross-check of the small parser above
    loaded = yaml.safe_load((ROOT / "environment.yml").read_text())
    parsed = environment_yml()
    assert loaded["name"] == parsed["name"] and loaded["channels"] == parsed["channels"]
    assert loaded["dependencies"][:-1] == parsed["dependencies"]
    assert loaded["dependencies"][-1] == {"pip": parsed["pip"]}


def test_every_direct_dependency_is_pinned_and_every_pin_is_a_direct_dependency():
    declared, pinned = set(declared_requirements()), set(pins(constraint_lines()))
    assert declared - pinned == set(), "declared in pyproject.toml but not pinned in constraints.txt"
    assert pinned - declared == set(), "pinned in constraints.txt but not declared in pyproject.toml"


def test_every_pin_satisfies_the_range_in_pyproject():
    declared = declared_requirements()
    outside = {name: (str(version), str(declared[name].specifier))
               for name, version in pins(constraint_lines()).items()
               if not declared[name].specifier.contains(version, prereleases=True)}
    assert outside == {}, f"pins outside pyproject.toml's ranges (pin, range): {outside}"


def test_installed_versions_are_the_pinned_ones():
    wrong = {}
    for name, pinned in pins(constraint_lines()).items():
        try:
            installed = Version(importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            wrong[name] = (str(pinned), "not installed")
            continue
        if Version(installed.public) != pinned:  # torch 2.13.0+cpu is torch 2.13.0
            wrong[name] = (str(pinned), str(installed))
    assert wrong == {}, f"(pinned, installed) differ; run `make setup`: {wrong}"


# ------------------------------------------------------------------------------------ README and the Makefile

def section(markdown: str, title: str) -> str:
    match = re.search(rf"^##\s+{re.escape(title)}\s*$(.*?)(?=^##\s|\Z)", markdown, re.M | re.S | re.I)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def test_readme_quick_start_is_make_lab_and_make_test():
    quick_start = section((ROOT / "README.md").read_text(), "Quick start")
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", quick_start, re.M | re.S)
    commands = [line.strip() for block in blocks for line in block.splitlines()
                if line.strip() and not line.strip().startswith("#")]
    assert commands == ["make lab", "make test"]


def make_env() -> dict[str, str]:
    # a make that runs this test passes its jobserver in MAKEFLAGS; a sub-make must not inherit it
    return {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"}}


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_makefile_has_the_targets_the_readme_names():
    result = subprocess.run(["make", "-n", "setup", "lab", "test", "artifacts", "bench"], cwd=ROOT,
                            env=make_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "jupyter lab notebooks/" in result.stdout
    assert "-m helpers bench" in result.stdout


# ----------------------------------------------------------------------------------------- JupyterLab starts

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jupyter_command() -> list[str]:
    """The jupyter that `make lab` runs: .venv/bin/jupyter, or this interpreter's when tests run elsewhere."""
    venv_jupyter = ROOT / ".venv" / "bin" / "jupyter"
    if venv_jupyter.exists() and Path(sys.prefix).resolve() == (ROOT / ".venv").resolve():
        return [str(venv_jupyter)]
    return [sys.executable, "-m", "jupyter"]


def get(url: str, timeout: float = 5) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy
    with opener.open(url, timeout=timeout) as response:
        return response.status, response.read().decode("utf-8", "replace")


@pytest.fixture
def jupyterlab(tmp_path):
    """JupyterLab on a free loopback port, started like `make lab` (from the repo root, on notebooks/, with the
    options the Makefile gives it)."""
    port = free_port()
    command = [*jupyter_command(), "lab", "notebooks/", *(make_lab_options() if shutil.which("make") else []),
               "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
               "--IdentityProvider.token=", "--ServerApp.password="]
    env = {**os.environ,
           # keep the user's Jupyter config and runtime files out of the test (and the test's out of them)
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings")}
    log_path = tmp_path / "jupyterlab.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        yield f"http://127.0.0.1:{port}", process, log_path
    finally:
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue


def wait_until_up(base: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + 60
    status = None
    while time.monotonic() < deadline:
        assert process.poll() is None, f"JupyterLab exited with {process.returncode}:\n{log_path.read_text()[-3000:]}"
        try:
            status, _ = get(f"{base}/api/status", timeout=2)
            if status == 200:
                break
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    assert status == 200, f"no answer from {base}/api/status in 60 s:\n{log_path.read_text()[-3000:]}"


@pytest.mark.slow
def test_jupyterlab_starts_headless_on_the_notebooks_folder(jupyterlab):
    base, process, log_path = jupyterlab
    wait_until_up(base, process, log_path)
    status, page = get(f"{base}/lab", timeout=30)
    assert status == 200 and "JupyterLab" in page

    # the file browser opens on notebooks/, as the README says
    status, body = get(f"{base}/api/contents", timeout=10)
    listed = {item["name"] for item in json.loads(body)["content"]}
    assert listed <= {p.name for p in NOTEBOOKS.iterdir()}, f"not the notebooks folder: {sorted(listed)}"
    assert {p.name for p in NOTEBOOKS.glob("*.ipynb")} <= listed


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_lab_never_asks_for_or_fetches_news(jupyterlab):
    """lab/overrides.json sets the notification plugin's defaults (JupyterLab's own are: ask whether to fetch news,
    and check for updates), and the server's news and update endpoints answer without the network."""
    base, process, log_path = jupyterlab
    wait_until_up(base, process, log_path)
    plugin = "@jupyterlab/apputils-extension:notification"
    assert json.loads((ROOT / "lab" / "overrides.json").read_text())[plugin] == {"fetchNews": "false",
                                                                                 "checkForUpdates": False}
    status, body = get(f"{base}/lab/api/settings/{plugin}", timeout=30)
    settings = json.loads(body)
    assert settings["raw"].strip() in ("", "{}")  # no user setting: what follows are the course's defaults
    defaults = settings["schema"]["properties"]
    assert defaults["fetchNews"]["default"] == "false"  # "none" would show the "official Jupyter news?" prompt
    assert defaults["checkForUpdates"]["default"] is False
    assert json.loads(get(f"{base}/lab/api/news", timeout=30)[1]) == {"news": []}
    assert json.loads(get(f"{base}/lab/api/update", timeout=30)[1]) == {"notification": None}
