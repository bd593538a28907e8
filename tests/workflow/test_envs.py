"""Each rule's conda env provides every module its script can import, read statically, at the
versions uv.lock pins.

No conda channel is reachable here, so the envs are checked by reading: the rules (.smk) name
a script and an env, the script and the reprogrid modules it reaches name their imports (ast),
and every import outside the standard library must be a package the env file lists. Every
package an env file pins must have that version in uv.lock, for the Python the env pins.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.markers import Marker

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
RULE_FILES = sorted((REPO / "workflow/rules").glob("*.smk"))
ENV_FILES = sorted((REPO / "envs").glob("*.yaml"))

# Conda package names that provide an import name, where the two differ.
CONDA_NAMES = {
    "torch": {"pytorch", "pytorch-gpu", "pytorch-cpu"},
    "yaml": {"pyyaml"},
    "sklearn": {"scikit-learn"},
    "PIL": {"pillow"},
    "matplotlib": {"matplotlib", "matplotlib-base"},
    "seaborn": {"seaborn", "seaborn-base"},
}

# PyPI names (as uv.lock spells them) of conda packages, where the two differ.
PYPI_NAMES = {
    "pytorch": "torch",
    "pytorch-gpu": "torch",
    "pytorch-cpu": "torch",
    "matplotlib-base": "matplotlib",
    "seaborn-base": "seaborn",
}

# pandas methods that import an optional package on call, invisible to an import scan.
OPTIONAL_BY_METHOD = {"to_markdown": "tabulate", "style": "jinja2"}

RULE = re.compile(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", re.MULTILINE)
DIRECTIVE = r"^\s+{}:\s*\n\s+\"([^\"]+)\""


# A rule whose shell runs a module of the package: `... -m reprogrid.jobs.train ...`.
MODULE_COMMAND = re.compile(r"-m (reprogrid[\w.]*)")


def rules() -> dict[str, tuple[Path, Path | None]]:
    """Every rule that runs Python (a script, or a package module from its shell command):
    that source file and its conda env file (None if it has none)."""
    found = {}
    for smk in RULE_FILES:
        for name, body in RULE.findall(smk.read_text()):
            script = re.search(DIRECTIVE.format("script"), body, re.MULTILINE)
            module = MODULE_COMMAND.search(body)
            if script is not None:
                source = (smk.parent / script.group(1)).resolve()
            elif module is not None:
                source = module_file(module.group(1))
            else:
                continue
            conda = re.search(DIRECTIVE.format("conda"), body, re.MULTILINE)
            env = (smk.parent / conda.group(1)).resolve() if conda else None
            found[name] = (source, env)
    return found


def module_file(name: str) -> Path | None:
    """The source of a reprogrid module (or package), or None for anything else."""
    if name.split(".")[0] != "reprogrid":
        return None
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_of(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Modules `path` imports anywhere (lazy imports inside functions too) and by literal
    `importlib.import_module("...")`, plus optional packages its pandas calls load."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_of(path) if path.is_relative_to(SRC) else ""
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.add(node.args[0].value)
        elif isinstance(node, ast.Attribute) and node.attr in OPTIONAL_BY_METHOD:
            found.add(OPTIONAL_BY_METHOD[node.attr])
    return found


def third_party_imports(script: Path) -> dict[str, set[str]]:
    """Top-level third-party import names the script can reach, each with the files that import
    it; reprogrid modules are followed, their parent packages included."""
    needed: dict[str, set[str]] = {}
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imports_of(path):
            top = name.split(".")[0]
            if top == "reprogrid":
                parts = name.split(".")
                todo.extend(
                    found
                    for depth in range(1, len(parts) + 1)
                    if (found := module_file(".".join(parts[:depth]))) is not None
                )
            elif top not in sys.stdlib_module_names:
                needed.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return needed


def env_packages(env: Path) -> dict[str, str]:
    """Package name to pinned version of a conda env file; fails on an unpinned entry."""
    spec = yaml.safe_load(env.read_text())
    packages = {}
    for entry in spec["dependencies"]:
        assert isinstance(entry, str), f"{env.name}: only conda packages, no pip section"
        name, _, version = entry.partition("=")
        version = version.lstrip("=").strip()
        assert version, f"{env.name}: {name.strip()} has no pinned version"
        packages[name.strip()] = version
    return packages


def missing_packages(script: Path, env: Path) -> dict[str, list[str]]:
    """Third-party imports the script can reach that `env` does not list, with their files."""
    provided = set(env_packages(env))
    return {
        name: sorted(files)
        for name, files in third_party_imports(script).items()
        if not CONDA_NAMES.get(name, {name.lower().replace("_", "-")}) & provided
    }


def test_every_rule_with_a_script_has_an_env():
    found = rules()
    assert {"prepare_data", "train", "aggregate", "figures", "tables"} <= set(found)
    for name, (script, env) in found.items():
        assert script.is_file(), f"rule {name}: no script {script}"
        assert env is not None and env.is_file(), f"rule {name}: no conda env file"


@pytest.mark.parametrize("rule", sorted(rules()))
def test_rule_env_provides_every_import(rule):
    script, env = rules()[rule]
    assert script.is_file() and env is not None, f"rule {rule}: no script or no conda env"
    missing = missing_packages(script, env)
    assert not missing, f"rule {rule}: {env.name} lacks {missing}"


def lock_versions(lock: Path, python: str) -> dict[str, set[str]]:
    """Package name to the versions uv.lock installs on CPython `python` (e.g. "3.11") on
    x86-64 Linux: a package the lock resolves differently per Python counts only in the
    resolutions whose markers admit that one."""
    target = {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
    }
    versions: dict[str, set[str]] = {}
    for package in tomllib.loads(lock.read_text())["package"]:
        markers = package.get("resolution-markers")
        if markers and not any(Marker(marker).evaluate(target) for marker in markers):
            continue
        versions.setdefault(package["name"], set()).add(package["version"])
    return versions


def lock_disagreements(env: Path, lock: Path) -> dict[str, tuple[str, list[str]]]:
    """Packages `env` pins at a version uv.lock does not install for the env's Python: name to
    (the env's version, the lock's versions, empty if the lock lacks the package)."""
    pins = env_packages(env)
    locked = lock_versions(lock, pins["python"])
    wrong = {}
    for conda_name, version in pins.items():
        if conda_name == "python":
            continue
        name = PYPI_NAMES.get(conda_name, conda_name)
        if version not in locked.get(name, set()):
            wrong[name] = (version, sorted(locked.get(name, set())))
    return wrong


@pytest.mark.parametrize("env", ENV_FILES, ids=lambda p: p.name)
def test_env_pins_agree_with_the_lock(env):
    wrong = lock_disagreements(env, REPO / "uv.lock")
    assert not wrong, f"{env.name} pins differ from uv.lock (env, lock): {wrong}"


def test_the_lock_check_sees_a_version_that_differs(tmp_path):
    # The training env with numpy one release off, and a package the lock lacks, must fail.
    env = REPO / "envs/train.yaml"
    spec = yaml.safe_load(env.read_text())
    spec["dependencies"] = [
        "numpy =2.4.5" if d.startswith("numpy") else d for d in spec["dependencies"]
    ] + ["no-such-package =1.0"]
    other = tmp_path / "train.yaml"
    other.write_text(yaml.safe_dump(spec))
    assert lock_disagreements(env, REPO / "uv.lock") == {}
    assert lock_disagreements(other, REPO / "uv.lock") == {
        "numpy": ("2.4.5", ["2.4.6"]),
        "no-such-package": ("1.0", []),
    }


def test_the_lock_is_read_for_the_envs_python():
    # numpy 2.5 needs Python 3.12: the lock holds both, and 3.11 (the envs' Python) gets 2.4.
    assert lock_versions(REPO / "uv.lock", "3.11")["numpy"] == {"2.4.6"}
    assert lock_versions(REPO / "uv.lock", "3.12")["numpy"] != {"2.4.6"}


@pytest.mark.parametrize("env", ENV_FILES, ids=lambda p: p.name)
def test_envs_state_channels_and_pin_python(env):
    spec = yaml.safe_load(env.read_text())
    assert spec["channels"][0] == "conda-forge"
    assert "nodefaults" in spec["channels"]
    assert "python" in env_packages(env)


def test_the_check_sees_a_missing_package(tmp_path):
    # The analysis env without scipy must fail the check that it passes in full.
    script, env = rules()["aggregate"]
    spec = yaml.safe_load(env.read_text())
    spec["dependencies"] = [d for d in spec["dependencies"] if not d.startswith("scipy")]
    lacking = tmp_path / "analysis.yaml"
    lacking.write_text(yaml.safe_dump(spec))
    assert missing_packages(script, env) == {}
    assert missing_packages(script, lacking) == {"scipy": ["src/reprogrid/analysis/stats.py"]}


def test_lazy_and_dynamic_imports_are_seen():
    needed = third_party_imports(rules()["prepare_data"][0])
    assert "torchvision" in needed  # importlib.import_module("torchvision.datasets")
    tables = third_party_imports(rules()["tables"][0])
    assert {"tabulate", "jinja2"} <= set(tables)  # DataFrame.to_markdown, Styler.to_latex
