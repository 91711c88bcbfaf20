"""The install files agree: environment.yml (cluster) pins what requirements.txt (make setup) pins."""
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def requirement_lines():
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_every_requirement_is_pinned_and_torch_is_the_local_build():
    requirements = requirement_lines()
    assert all("==" in line for line in requirements), requirements
    assert "torch==2.14.1" in requirements and "torchvision==0.29.1" in requirements


def test_environment_yml_has_python_311_and_the_same_pins():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["name"] == "lowpower"
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert sorted(pip) == sorted(requirement_lines())


def test_every_device_package_a_submission_may_import_is_importable_here():
    # presubmit runs a submission with this interpreter; a package the device has but this
    # environment lacks (imageio, setuptools' pkg_resources) would fail a known-good submission.
    # TensorRT is the exception: it comes with the device image and needs the device's GPU.
    import importlib.util

    from evaluation.contract import DEVICE_PACKAGES

    missing = sorted(name for name in DEVICE_PACKAGES - {"tensorrt"} if importlib.util.find_spec(name) is None)
    assert missing == []


def test_setuptools_pin_still_ships_pkg_resources():
    # setuptools 82 removed pkg_resources; the pin must stay below that.
    pins = dict(line.split("==") for line in requirement_lines())
    assert int(pins["setuptools"].split(".")[0]) < 82
    assert "imageio" in pins


def test_pyproject_dependencies_are_the_pinned_packages_and_their_pins_satisfy_them():
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = dict(line.split("==") for line in requirement_lines())
    declared = project["dependencies"] + project["optional-dependencies"]["dev"]
    names = [re.match(r"[A-Za-z0-9_.-]+", spec).group(0) for spec in declared]
    assert sorted(names) == sorted(pins), "pyproject.toml and requirements.txt name different packages"
    for spec, name in zip(declared, names):
        for op, version in re.findall(r"(>=|<)([0-9.]+)", spec):
            pinned = tuple(int(part) for part in pins[name].split(".")[:len(version.split("."))])
            bound = tuple(int(part) for part in version.split("."))
            assert pinned >= bound if op == ">=" else pinned < bound, (spec, pins[name])
    assert project["scripts"]["lowpower"] == "lowpower.cli:main"
