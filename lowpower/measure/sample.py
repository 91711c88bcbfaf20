"""Our packages against the official LPCVC 2023 sample solution's, run in turns on this machine.

    lowpower bench sample ~/src/23LPCVC_Segmentation_Track-Sample_Solution/solution \\
        --images data/synthetic/test/IMG -n 5

SAMPLE_DIR is the sample's ``solution`` folder from a clone of its public repository (main.py,
utils/fanet.py, utils/resnet.py); nothing of it is part of lowpower. The benchmark:

1. copies it to ``--out``, patched only to fall back to the CPU when CUDA is missing (its device,
   ``map_location``, CUDA events and synchronize), and writes a ``model.pkl`` of its own FANet with
   random weights (``--seed``);
2. converts that ``model.pkl`` with ``lowpower.compress.import_sample`` (the same random weights) and packages
   it with ``lowpower.ship.package`` at 512, as the sample runs, printing what the sample prints (``--timer
   network``: the network calls alone; ``--timer model`` adds our timed post-processing);
3. packages ``lraspp_mbv3_small`` (random weights) at 256;
4. runs the sample's pyz against each of ours in turns (``lowpower.measure.compare``: A B A B ...)
   and prints the tables: wall, printed model time and peak memory, B/A min/median/max, and the
   share of mask pixels equal to the sample's (the same weights should give the same masks).

Timings only; nothing here is a test. The pyz files stay in ``--out`` for ``bench compare``.
``--out`` is the benchmark's own folder, rebuilt on every run; it is checked before any work: it may
not be, or lie inside, the sample's folder (the copy and ``model.pkl`` would land in it), and neither
input may lie inside a folder the benchmark replaces (``sample/``, ``build/``, ``masks-*``).
"""
import argparse
import importlib.util
import shutil
import sys
import zipapp
from pathlib import Path

import torch

import networks
from evaluation.contract import CLASS_NAMES, NUM_CLASSES
from evaluation.readpng import read_label
from lowpower.checkpoint import save_checkpoint
from lowpower.compress.import_sample import import_sample
from lowpower.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from lowpower.measure.compare import CompareError, compare, report
from lowpower.measure.limits import RUNS, SEED
from lowpower.measure.report import check_result_folder
from lowpower.safe.write import OutputError
from lowpower.ship.build import build_package

# The sample's main.py assumes CUDA; these are the only edits, each must match once or more.
CPU_FALLBACK = (
    ('torch.device("cuda")', 'torch.device("cuda" if torch.cuda.is_available() else "cpu")'),
    ("torch.cuda.Event(enable_timing=True)", "_timing_event()"),
    ("torch.cuda.synchronize()", "_synchronize()"),
)
CPU_HELPERS = '''

# lowpower.measure.sample: CPU fallback of the CUDA events and synchronize above.
class _CpuEvent:
    def record(self):
        import time
        self.at = time.perf_counter()

    def elapsed_time(self, end):
        return (end.at - self.at) * 1000.0


def _timing_event():
    return torch.cuda.Event(enable_timing=True) if torch.cuda.is_available() else _CpuEvent()


def _synchronize():
    if torch.cuda.is_available():
        torch.cuda.synchronize()
'''
ENTRY = "from main import main\n\nmain()\n"


class SampleError(ValueError):
    """The sample folder is not what the benchmark expects; the message names the file."""


def patch_for_cpu(source, name="main.py"):
    """The sample's main.py text with the CPU fallback applied.

    Raises:
        SampleError: a pattern of CPU_FALLBACK is not in the text (another version of the sample).

    Example:
        >>> "_CpuEvent" in patch_for_cpu(open("sample/main.py").read())  # doctest: +SKIP
        True
    """
    for old, new in CPU_FALLBACK:
        if old not in source:
            raise SampleError("%s has no %r: not the folder-mode sample main.py this benchmark patches" % (name, old))
        source = source.replace(old, new)
    return source + CPU_HELPERS


def load_sample_fanet(folder):
    """The sample's FANet class, imported from ``folder/utils/fanet.py`` (its resnet beside it)."""
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location("utils.fanet", folder / "utils" / "fanet.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.FANet
    finally:
        sys.path.remove(str(folder))
        for name in [n for n in sys.modules if n == "utils" or n.startswith("utils.")]:
            del sys.modules[name]


def build_sample(sample_dir, out, seed):
    """Patched copy, random ``model.pkl`` and the zipped ``sample.pyz``; returns (pyz, model.pkl)."""
    sample_dir = Path(sample_dir)
    for needed in ("main.py", "utils/fanet.py"):
        if not (sample_dir / needed).is_file():
            raise SampleError("%s: no %s; give the sample repository's solution/ folder" % (sample_dir, needed))
    tree = out / "sample"
    shutil.rmtree(tree, ignore_errors=True)
    shutil.copytree(sample_dir, tree, ignore=shutil.ignore_patterns("*.pkl", "__pycache__"))
    (tree / "main.py").write_text(patch_for_cpu((tree / "main.py").read_text(), sample_dir / "main.py"))
    if not (tree / "__main__.py").is_file():
        (tree / "__main__.py").write_text(ENTRY)
    torch.manual_seed(seed)
    weights = out / "model.pkl"
    torch.save(load_sample_fanet(tree)().state_dict(), weights)
    shutil.copy(weights, tree / "model.pkl")
    pyz = out / "sample.pyz"
    zipapp.create_archive(tree, pyz, interpreter="/usr/bin/env python3")
    return pyz, weights


def random_checkpoint(arch, input_size, path, seed):
    """A checkpoint of ``arch`` with seeded random weights, packaged like a trained one."""
    torch.manual_seed(seed)
    model = networks.create_model(arch, num_classes=NUM_CLASSES)
    save_checkpoint({
        "arch": arch, "arch_kwargs": {"num_classes": NUM_CLASSES}, "model": model.state_dict(),
        "config": {"model": {"arch": arch, "kwargs": {}, "pretrained": False},
                   "data": {"num_classes": NUM_CLASSES, "input_size": input_size},
                   "eval": {"min_class_area": 0.0}},
        "epoch": 0, "metrics": {}, "input_size": input_size, "classes": list(CLASS_NAMES),
        "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "source": "random weights, seed %d" % seed,
    }, path)
    return path


def build_ours(weights, out, seed, timer="network"):
    """Our two packages: the sample's network from its own weights at 512, lraspp_mbv3_small at 256.

    ``timer`` is what they print; ``network`` times what the sample times (the network call alone).
    """
    fanet_ckpt, _ = import_sample(weights, out / "fanet_r18_sample.pt", force=True)  # this command's own file
    lraspp_ckpt = random_checkpoint("lraspp_mbv3_small", 256, out / "lraspp_mbv3_small_256.pt", seed)
    packages = {}
    for name, ckpt, size in (("fanet_r18_sample@512", fanet_ckpt, 512),
                             ("lraspp_mbv3_small@256", lraspp_ckpt, 256)):
        pyz = out / (name.replace("@", "_") + ".pyz")
        build_package(ckpt, pyz, input_size=size, timer=timer, verify=False, build_dir=out / "build" / pyz.stem)
        packages[name] = pyz
    return packages


def mask_agreement(first, second):
    """Share of pixels equal in the same-named PNGs of two folders (read as the referee reads them)."""
    equal = total = 0
    for path in sorted(Path(first).glob("*.png")):
        a, b = read_label(str(path))[0], read_label(str(Path(second) / path.name))[0]
        equal += int((a == b).sum())
        total += a.size
    return equal / total if total else float("nan")


# What the benchmark writes in --out: the files it rebuilds, and the folders it replaces whole.
PRODUCTS = ("sample.pyz", "model.pkl", "fanet_r18_sample.pt", "lraspp_mbv3_small_256.pt", "fanet_r18_sample_512.pyz",
            "lraspp_mbv3_small_256.pyz")
REPLACED = ("sample", "build", "masks-*")


def is_within(path, folder):
    """True when ``path`` is ``folder`` or lies inside it (links and ``..`` followed)."""
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def check_out(args):
    """Refuse, before any work, an ``--out`` that would write into the sample's folder or over an input.

    Raises:
        OutputError: one line naming the folders and the fix.

    Example:
        >>> check_out(argparse.Namespace(out="sol/runs", sample_dir="sol", images="IMG"))  # doctest: +SKIP
        Traceback (most recent call last):
        ...
        lowpower.safe.write.OutputError: --out sol/runs lies in the sample's folder sol: ...
    """
    out = Path(args.out)
    if is_within(out, args.sample_dir):
        raise OutputError("--out %s lies in the sample's folder %s: its copy and model.pkl would be written into "
                          "it; give a folder outside it" % (out, args.sample_dir))
    for source, what in ((args.sample_dir, "the sample's folder"), (args.images, "--images")):
        for name in REPLACED:
            for replaced in [out / name] if "*" not in name else out.glob(name):
                if is_within(source, replaced):
                    raise OutputError("%s %s lies in %s, which this benchmark replaces; give another --out"
                                      % (what, source, replaced))
    check_result_folder(out, inputs=[args.sample_dir, args.images], products=PRODUCTS)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="lowpower bench sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sample_dir", help="the sample repository's solution/ folder (main.py, utils/)")
    parser.add_argument("--images", required=True, help="folder of input PNGs (e.g. data/synthetic/test/IMG)")
    parser.add_argument("-n", "--runs", type=RUNS, default=5, help="runs per package and comparison (5)")
    parser.add_argument("--out", default="runs/bench_sample", help="where the packages are built (rebuilt on "
                                                                   "every run)")
    parser.add_argument("--seed", type=SEED, default=0, help="seed of the random weights")
    parser.add_argument("--timer", choices=("network", "model"), default="network",
                        help="what our packages print: network = the network calls alone, as the sample "
                             "times; model = with the post-processing too (default: network)")
    args = parser.parse_args(argv)
    check_out(args)  # before any work: a refusal costs nothing
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        sample_pyz, weights = build_sample(args.sample_dir, out, args.seed)
        ours = build_ours(weights, out, args.seed, args.timer)
        for name, pyz in ours.items():
            workdir = out / ("masks-" + pyz.stem)
            result = compare(sample_pyz, pyz, args.images, runs=args.runs, workdir=workdir)
            print("\n== B = our %s vs A = the sample's package (FANet, 512)" % name)
            print(report(result, "random weights, seed %d; ours timed: %s" % (args.seed, args.timer)))
            print("masks equal to the sample's: %.4f of pixels" % mask_agreement(workdir / "out-A", workdir / "out-B"))
    except (SampleError, CompareError) as error:
        print("lowpower bench sample: error: %s" % error, file=sys.stderr)
        return 2
    return 0
