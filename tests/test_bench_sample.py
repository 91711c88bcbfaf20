"""lowpower.measure.sample: the CPU patch of the sample's program, the folder check, mask agreement."""
import numpy as np
import pytest
from PIL import Image

from lowpower.measure.sample import CPU_FALLBACK, CPU_HELPERS, SampleError, build_sample, mask_agreement, patch_for_cpu

CUDA_MAIN = '''import torch
def main():
    device = torch.device("cuda")
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    x = torch.ones(3, device=device) * 2
    end.record()
    torch.cuda.synchronize()
    print(start.elapsed_time(end) >= 0, float(x.sum()))
'''


def test_patched_program_runs_on_a_cpu_and_times_with_the_event_shim(capsys):
    patched = patch_for_cpu(CUDA_MAIN)
    body = patched[:-len(CPU_HELPERS)]  # the helpers themselves call CUDA when it is there
    for old, _ in CPU_FALLBACK:
        assert old not in body
    namespace = {}
    exec(compile(patched, "main.py", "exec"), namespace)
    namespace["main"]()
    assert capsys.readouterr().out.split() == ["True", "6.0"]


def test_a_main_without_the_cuda_lines_is_refused_by_name():
    with pytest.raises(SampleError, match="main.py has no 'torch.device"):
        patch_for_cpu("print('hello')\n")


def test_a_folder_without_the_samples_files_is_refused(tmp_path):
    with pytest.raises(SampleError, match="no main.py"):
        build_sample(tmp_path, tmp_path / "out", seed=0)


def test_mask_agreement_counts_equal_pixels(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    mask = np.zeros((512, 512), np.uint8)
    Image.fromarray(mask).save(first / "x.png")
    mask[:128] = 3  # a quarter differs
    Image.fromarray(mask).save(second / "x.png")
    assert mask_agreement(first, second) == pytest.approx(0.75)
