"""A process that cannot call ``membarrier`` (here a seccomp filter makes it fail, as a
sandbox's profile or an old kernel would) turns the queue to real fences when it joins:
``Queue.uses_real_fences()`` says so in every process, and messages still go through."""

from __future__ import annotations

import platform

import pytest

import shmq

from conftest import run_python

# The child installs a four-instruction filter (membarrier fails with ENOSYS, everything else
# is allowed), then joins the queue and reports what its handle sees.
_CHILD = r"""
import ctypes, platform, sys
import shmq

SYS_MEMBARRIER = {"x86_64": 324, "aarch64": 283}[platform.machine()]

class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]

class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

LOAD_NR, JUMP_IF_EQUAL, RETURN = 0x20, 0x15, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_RET|K
ERRNO_ENOSYS, ALLOW = 0x00050000 | 38, 0x7FFF0000  # SECCOMP_RET_ERRNO | ENOSYS, RET_ALLOW
program = (SockFilter * 4)(
    SockFilter(LOAD_NR, 0, 0, 0),
    SockFilter(JUMP_IF_EQUAL, 0, 1, SYS_MEMBARRIER),
    SockFilter(RETURN, 0, 0, ERRNO_ENOSYS),
    SockFilter(RETURN, 0, 0, ALLOW),
)
fprog = SockFprog(4, program)
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
one, zero = ctypes.c_ulong(1), ctypes.c_ulong(0)
if (libc.prctl(PR_SET_NO_NEW_PRIVS, one, zero, zero, zero) != 0
        or libc.prctl(PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER),
                      ctypes.byref(fprog)) != 0):
    print("refused", ctypes.get_errno())
    sys.exit(2)
q = shmq.Queue.connect(sys.argv[1])
print("joined", q.uses_real_fences())
q.close()
"""


@pytest.mark.skipif(
    platform.machine() not in ("x86_64", "aarch64"),
    reason="the child's filter knows membarrier's number on x86_64 and aarch64 only",
)
def test_a_process_without_membarrier_turns_the_queue_to_real_fences(qname: str) -> None:
    q = shmq.Queue.create(qname, 4, 32)
    try:
        before = q.uses_real_fences()  # False unless this process cannot call membarrier
        child = run_python(_CHILD, qname)
        if child.returncode == 2:
            pytest.skip(f"the kernel refused the seccomp filter ({child.stdout.strip()})")
        assert child.returncode == 0, child.stderr
        assert child.stdout.split() == ["joined", "True"], child.stdout
        assert q.uses_real_fences(), f"was {before} before the child joined"
        q.put(b"m1")
        assert q.get(timeout=5) == b"m1"
    finally:
        q.close()
