"""solution/runtime.py: the switches, the wait policy and glibc's allocator settings."""
import subprocess
import sys

import pytest

from solution import runtime


class FakeLibc:
    """Records mallopt calls; returns ``result`` (glibc returns 1 on success, 0 on error)."""

    def __init__(self, result=1):
        self.calls, self.result = [], result

    def mallopt(self, parameter, value):
        self.calls.append((parameter, value))
        return self.result


@pytest.mark.parametrize("value, default, expected", [
    (None, True, True), ("", True, True), (None, False, False), ("0", True, False), (" Off ", True, False),
    ("no", True, False), ("false", True, False), ("1", False, True), ("yes", False, True)])
def test_switch_on_reads_the_off_words(value, default, expected):
    environ = {} if value is None else {"X": value}
    assert runtime.switch_on("X", environ, default=default) is expected


def test_the_wait_policy_defaults_to_passive_and_keeps_a_users_choice():
    environ = {}
    assert runtime.set_wait_policy(environ) == "PASSIVE" and environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert runtime.set_wait_policy({"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"


def test_keep_freed_memory_disables_mmap_and_trimming():
    libc = FakeLibc()
    assert runtime.keep_freed_memory({}, libc) is True
    assert sorted(libc.calls) == sorted([(runtime.M_MMAP_MAX, 0), (runtime.M_TRIM_THRESHOLD, runtime.NEVER_TRIM)])


@pytest.mark.parametrize("environ", [{"LOWPOWER_KEEP_HEAP": "0"}, {"MALLOC_MMAP_MAX_": "65536"},
                                     {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"}])
def test_keep_freed_memory_leaves_the_allocator_alone_when_told(environ):
    libc = FakeLibc()
    assert runtime.keep_freed_memory(environ, libc) is False and libc.calls == []


def test_keep_freed_memory_reports_a_refusal_or_a_missing_mallopt():
    refusing = FakeLibc(result=0)
    assert runtime.keep_freed_memory({}, refusing) is False and len(refusing.calls) == 2  # both were tried
    assert runtime.keep_freed_memory({}, object()) is False


FAULTS = """
import resource, sys
from solution import runtime
kept = runtime.keep_freed_memory({} if sys.argv[1] == 'keep' else {'LOWPOWER_KEEP_HEAP': '0'})
def faults_of_a_filled_64_mib_buffer():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buffer = bytearray(b'x') * (64 << 20)
    del buffer
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_a_filled_64_mib_buffer()
print(kept, faults_of_a_filled_64_mib_buffer())
"""


def second_buffer_faults(mode):
    result = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, timeout=60,
                            check=True)
    kept, faults = result.stdout.split()
    return kept == "True", int(faults)


def test_kept_memory_is_reused_without_page_faults():
    """glibc (this Linux's C library) maps a 64 MiB buffer afresh each time, unless told to keep it."""
    kept, faults_kept = second_buffer_faults("keep")
    default, faults_default = second_buffer_faults("default")
    assert kept and not default
    assert faults_default > 10000  # 64 MiB in 4 KiB pages is 16384
    assert faults_kept < 1000
