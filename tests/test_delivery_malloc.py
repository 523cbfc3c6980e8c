"""The delivery child keeps its big buffers' pages (agent/delivery_child.py, `keep_malloc_pages`): with glibc's
own thresholds, a batch's frames and lines are given back to the kernel when freed and the next batch faults
in fresh zeroed pages; with the child's, the same pages serve batch after batch."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# a file batch's shape in the child's worker thread: five frames' bodies (~700 kB each) and the lines (~3.4 MB),
# all freed before the next batch; the minor page faults of batches 6-30
_BATCHES = """
import resource, sys, threading
from agent import delivery_child
tuned = delivery_child.keep_malloc_pages() if sys.argv[1] == "1" else None
def batches(out):
    for i in range(30):
        if i == 5:
            start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        bodies = [b"x" * (700 << 10) for _ in range(5)]
        lines = b"y" * (3400 << 10)
        del bodies, lines
    out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
out = []
worker = threading.Thread(target=batches, args=(out,))
worker.start()
worker.join()
print(tuned, out[0])
"""

# main() on a control pipe already at its end: it exits where it would read the config
_MAIN = """
import os, sys
from agent import delivery_child
delivery_child.keep_malloc_pages = lambda: print("tuned", flush=True) or True
r, w = os.pipe()
os.close(w)
wake, reports = os.pipe()
delivery_child.main(os.fdopen(r, "rb"), wake, reports, os.getppid())
"""


def _run(code: str, *args: str) -> str:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=True, env={**os.environ, "PYTHONPATH": ROOT}).stdout


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's thresholds are glibc's")
def test_the_childs_batches_reuse_their_pages_instead_of_faulting_in_fresh_ones():
    tuned, faults = _run(_BATCHES, "1").split()
    assert tuned == "True"
    pages = 25 * (5 * 700 + 3400) // 4          # what 25 batches touch, in 4 kB pages
    assert int(faults) < pages // 100, f"{faults} page faults in 25 batches of {pages // 25} pages"


def test_the_child_sets_its_malloc_thresholds_before_anything_else():
    assert _run(_MAIN).split() == ["tuned"]
