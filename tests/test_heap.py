"""toolkit/pytorch/heap.py: retained_heap() sets glibc's allocator up for reuse and restores it, and
inside it a freed block's pages are reused instead of faulted in anew."""

import json
import resource
import subprocess
import sys

import pytest

from toolkit.pytorch import heap

SCRIPT = """
import json, resource, torch
from toolkit.pytorch.heap import retained_heap

def faults(blocks=6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(blocks):
        buffer = torch.empty(64 << 20, dtype=torch.uint8)
        buffer.fill_(1)
        del buffer
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

out = {"before": faults()}
with retained_heap() as active:
    faults()                                      # the heap grows to its working size
    out["active"], out["inside"] = active, min(faults(), faults())
print(json.dumps(out))
"""


class FakeLibc:
    def __init__(self):
        self.calls = []

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return 1


def test_retained_heap_sets_once_restores_once_and_nests(monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(heap, "_glibc", lambda: libc)
    with heap.retained_heap() as active:
        assert active and libc.calls == list(heap._RETAINED.items())
        with heap.retained_heap() as inner:                 # nested: the outer block owns the setting
            assert inner
        assert libc.calls == list(heap._RETAINED.items())
    assert libc.calls == list(heap._RETAINED.items()) + list(heap._DEFAULTS.items())
    with pytest.raises(RuntimeError), heap.retained_heap():   # restored on the way out of an error too
        raise RuntimeError
    assert libc.calls[-3:] == list(heap._DEFAULTS.items()) and heap._depth == 0


def test_retained_heap_is_a_no_op_without_glibc(monkeypatch):
    monkeypatch.setattr(heap, "_glibc", lambda: None)
    with heap.retained_heap() as active:
        assert not active


@pytest.mark.slow
@pytest.mark.skipif(heap._glibc() is None, reason="glibc's mallopt only")
def test_freed_pages_are_reused_inside_the_block():
    # A fresh interpreter, as the training commands run: minor page faults while 64 MiB buffers
    # are allocated, written and freed in turn, with glibc's defaults and inside the block.
    pages = (64 << 20) // resource.getpagesize()
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=True)
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["active"]
    assert out["before"] > 4 * pages            # glibc's default: every block mapped and faulted anew
    assert out["inside"] < 2 * pages            # inside: the heap's pages are reused
