"""lowpower.ship.pyz: the import scan (guards, statements and imports written as code, what it cannot
resolve), the vermin check; and lowpower.ship.runner.run_pyz."""
import os
import time
import zipapp

import pytest

from lowpower.ship.pyz import device_has, scan_folder, scan_source, vermin_check
from lowpower.ship.runner import run_pyz


def make_pyz(folder, source, name="prog"):
    src = folder / (name + "_src")
    src.mkdir(parents=True)
    (src / "__main__.py").write_text(source)
    target = folder / (name + ".pyz")
    zipapp.create_archive(str(src), str(target))
    return target


# ----------------------------------------------------------------------------- scan

def guarded_modules(source):
    imports, _ = scan_source(source)
    return {item.module: item.guarded for item in imports}


def test_guarded_means_in_a_try_body_whose_handler_catches_import_error():
    source = """
try:
    import a_plain
except ImportError:
    import b_in_handler
try:
    import c_tuple
except (ValueError, ModuleNotFoundError):
    pass
try:
    import d_bare
except:
    pass
try:
    import e_value
except ValueError:
    pass
else:
    import f_else
finally:
    import g_finally
def function():
    try:
        from h_nested import thing
    except Exception:
        pass
"""
    assert guarded_modules(source) == {
        "a_plain": True, "b_in_handler": False, "c_tuple": True, "d_bare": True, "e_value": False,
        "f_else": False, "g_finally": False, "h_nested": True}


def test_dynamic_imports_are_found_with_their_line():
    source = """import importlib
import importlib.util
from importlib import import_module as load
name = "ti" + "mm"
importlib.import_module(name)
__import__(name)
load(name)
importlib.util.spec_from_file_location("model", "model.py")
"""
    imports, dynamic = scan_source(source, "main.py")
    assert [(item.line, item.call) for item in dynamic] == [
        (5, "importlib.import_module(name)"), (6, "__import__(name)"), (7, "load(name)"),
        (8, "importlib.util.spec_from_file_location('model', 'model.py')")]
    assert "computed at run time" in dynamic[0].reason and "file path" in dynamic[3].reason
    assert str(dynamic[0]) == "main.py:5 importlib.import_module(name)"
    assert not any(item.dynamic for item in imports)


def test_a_literal_dynamic_import_is_an_ordinary_import():
    source = "import importlib\ntry:\n    importlib.import_module('yaml')\nexcept ImportError:\n    pass\n" \
             "__import__('timm.models')\nimportlib.import_module('.blocks', __package__)\n"
    imports, dynamic = scan_source(source)
    assert dynamic == []
    found = {item.module: item for item in imports if item.dynamic}
    assert set(found) == {"yaml", "timm.models", "blocks"}
    assert found["yaml"].guarded and not found["timm.models"].guarded
    assert found["timm.models"].top == "timm" and found["blocks"].level == 1


def test_the_scan_returns_imports_written_as_code_beside_the_statements():
    source = """import importlib, re
exec("import tensorflow")
try:
    __import__("yaml")
except ImportError:
    yaml = None
PATTERN = re.compile("x")
loader = getattr(importlib, name)
def run(model):
    model.eval()
"""
    imports, dynamic = scan_source(source, "m.py")
    assert [(str(item), item.dynamic, item.guarded) for item in imports] == [
        ("m.py:1 importlib", False, False), ("m.py:1 re", False, False),
        ("m.py:2 tensorflow", True, False), ("m.py:4 yaml", True, True)]
    assert [str(item) for item in dynamic] == ["m.py:8 getattr(importlib, name)"]  # not re.compile, model.eval


def test_an_import_inside_an_exec_string_is_found_once_at_the_exec():
    imports, dynamic = scan_source("exec('import os\\nfrom .blocks import conv')\n", "m.py")
    assert [(str(item), item.names, item.dynamic) for item in imports] == [
        ("m.py:1 .blocks", ("conv",), True), ("m.py:1 os", (), True)]
    assert dynamic == []


def test_device_has_the_36_stdlib_and_the_device_packages_only():
    for module in ("os", "json", "concurrent.futures", "cv2", "PIL.Image", "imageio", "pkg_resources", "torch"):
        assert device_has(module), module
    for module in ("yaml", "timm", "tomllib", "zoneinfo", "graphlib"):
        assert not device_has(module), module


def test_scan_folder_names_files_relative_and_reports_what_does_not_parse(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "__main__.py").write_text("import pkg.helpers\n")
    (tmp_path / "pkg" / "helpers.py").write_text("import importlib\nimportlib.import_module(x)\n")
    (tmp_path / "pkg" / "broken.py").write_text("def (:\n")
    scan = scan_folder(tmp_path)
    assert [str(item) for item in scan.imports] == ["__main__.py:1 pkg.helpers", "pkg/helpers.py:1 importlib"]
    assert [str(item) for item in scan.dynamic] == ["pkg/helpers.py:2 importlib.import_module(x)"]
    assert len(scan.unparsable) == 1 and scan.unparsable[0].startswith("pkg/broken.py: ")


def test_vermin_names_file_and_line_of_a_python_38_construct(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "ok.py").write_text("import os\nprint(os.sep)\n")
    (tmp_path / "sub" / "new.py").write_text("x = 1\nif (y := x):\n    pass\n")
    result = vermin_check(tmp_path)
    assert result.ok is False
    assert result.violations == ["sub/new.py:L2 named expressions require 3.8"]
    assert vermin_check(tmp_path, [tmp_path / "ok.py"]).ok is True


# ----------------------------------------------------------------------------- run

PROGRAM = """
import argparse, os, sys, warnings
parser = argparse.ArgumentParser()
parser.add_argument("-i")
parser.add_argument("-o")
args = parser.parse_args()
os.makedirs(args.o, exist_ok=True)
for name in sorted(os.listdir(args.i)):
    with open(os.path.join(args.o, name), "wb") as handle:
        handle.write(b"mask")
with open("left_behind.txt", "w") as handle:
    handle.write("x")
sys.stderr.write("isolated=%d warnoptions=%s cwd=%s FOO=%s\\n" % (
    sys.flags.isolated, sys.warnoptions, os.getcwd(), os.environ.get("FOO")))
print("%.6f" % 1.5)
sys.exit(int(os.environ.get("EXIT", "0")))
"""


@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "img"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes(b"image")
    return folder


def test_run_pyz_runs_like_the_referee_and_reports_what_happened(tmp_path, images):
    pyz = make_pyz(tmp_path, PROGRAM)
    run = run_pyz(pyz, images, tmp_path / "out", env=dict(os.environ, FOO="bar"), timeout=60)
    assert run.ok and run.exit_code == 0 and not run.timed_out
    assert run.stdout == "1.500000\n"
    assert "isolated=1 warnoptions=['ignore']" in run.stderr and "FOO=bar" in run.stderr
    assert sorted(run.outputs) == ["a.png", "b.png"]
    assert all(run.started - 1 <= mtime <= run.started + run.wall_seconds + 1 for mtime in run.outputs.values())
    assert run.strays == ["left_behind.txt"]
    assert run.command[1:4] == ["-I", "-W", "ignore"]
    cwd = run.stderr.split("cwd=")[1].split()[0]
    assert not os.path.exists(cwd)  # a fresh empty folder, removed afterwards


def test_run_pyz_reports_a_failure_and_keeps_stderr(tmp_path, images):
    pyz = make_pyz(tmp_path, PROGRAM)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "already_here.txt").write_text("")
    run = run_pyz(pyz, images, tmp_path / "out", cwd=cwd, env=dict(os.environ, EXIT="3"), timeout=60)
    assert run.exit_code == 3 and not run.ok
    assert run.strays == ["left_behind.txt"]  # only what the run added
    assert run.stderr_tail(1)[0].startswith("isolated=1")


@pytest.mark.slow  # waits out a timeout
def test_run_pyz_stops_the_whole_group_at_the_timeout(tmp_path, images):
    source = ("import subprocess, sys, time\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              "sys.stderr.write('child=%d\\n' % child.pid)\nsys.stderr.flush()\ntime.sleep(60)\n")
    run = run_pyz(make_pyz(tmp_path, source), images, tmp_path / "out", timeout=2)
    assert run.timed_out and not run.ok and run.wall_seconds < 20
    child = int(run.stderr.split("child=")[1].split()[0])
    deadline = time.time() + 5
    while time.time() < deadline and os.path.exists("/proc/%d" % child):
        time.sleep(0.1)
    assert not os.path.exists("/proc/%d" % child)


def test_run_pyz_measures_peak_memory_of_the_program_not_of_the_caller(tmp_path, images):
    source = "import time\nblock = b'x' * (200 << 20)\ntime.sleep(0.5)\nprint('0.1')\n"
    run = run_pyz(make_pyz(tmp_path, source), images, tmp_path / "out", timeout=60)
    assert run.ok
    assert 200 << 20 <= run.peak_process < 1 << 30
    assert run.peak_memory == max(run.peak_process, run.peak_group)
