"""Python's view of the C ABI must match include/shmq.h, the single source of truth."""

from __future__ import annotations

import ctypes
import re
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = None

import pytest

import shmq
from shmq import _lib, _status
from conftest import HEADER, REPO


@pytest.fixture(scope="module")
def header() -> str:
    return HEADER.read_text()


def test_status_codes_match_the_header(header: str) -> None:
    body = re.search(r"typedef enum shmq_status \{(.*?)\} shmq_status;", header, re.S)
    assert body, "enum shmq_status not found in the header"
    text = re.sub(r"/\*.*?\*/", "", body.group(1), flags=re.S)
    in_header = {name: int(value) for name, value in re.findall(r"(SHMQ_\w+)\s*=\s*(\d+)", text)}
    in_python = {status.c_name: int(status) for status in shmq.Status}
    assert in_header == in_python
    assert len(in_header) == 17
    assert in_header["SHMQ_ERR_ROLE_TAKEN"] == 16 == shmq.Status.ERR_ROLE_TAKEN


def test_flags_match_the_header(header: str) -> None:
    defines = {name: int(value) for name, value in re.findall(r"#define (SHMQ_\w+) (\d+)u?\b", header)}
    for name in (
        "CREATE_NO_CHECKSUM",
        "CREATE_OPEN_EXISTING",
        "CREATE_REPLACE",
        "CREATE_SINGLE_PRODUCER_SINGLE_CONSUMER",
        "MESSAGE_REDELIVERED",
    ):
        assert defines[f"SHMQ_{name}"] == getattr(_status, name), name


def _fields(header: str, struct: str) -> list[str]:
    body = re.search(r"typedef struct %s \{(.*?)\} %s;" % (struct, struct), header, re.S)
    assert body, f"struct {struct} not found in the header"
    text = re.sub(r"/\*.*?\*/", "", body.group(1), flags=re.S)
    return re.findall(r"(\w+);", text)


@pytest.mark.parametrize(
    "struct, ctype", [("shmq_queue_stats", _lib.StatsStruct), ("shmq_message_info", _lib.QueueInfo)]
)
def test_struct_layouts_match_the_header(header: str, struct: str, ctype: type) -> None:
    assert _fields(header, struct) == [name for name, _ in ctype._fields_]  # type: ignore[attr-defined]


def test_every_status_has_a_library_text_and_an_exception() -> None:
    texts = {shmq.status_str(s) for s in shmq.Status}
    assert len(texts) == len(shmq.Status), "each status has its own text"
    assert shmq.status_str(9999) == "unknown status"
    for status in shmq.Status:
        if status == shmq.Status.OK:
            continue
        exc = shmq.errors.error_for(status, "m")
        assert type(exc).STATUS == status and exc.status == status
    # A code from a newer library is still an Error.
    exc = shmq.errors.error_for(99, "new")
    assert type(exc) is shmq.Error and exc.status == 99


def test_versions_agree(header: str) -> None:
    cargo = (REPO / "Cargo.toml").read_text()
    crate_version = re.search(r'^version = "([^"]+)"', cargo, re.M).group(1)  # type: ignore[union-attr]
    header_version = re.search(r'#define SHMQ_VERSION "([^"]+)"', header).group(1)  # type: ignore[union-attr]
    assert shmq.library_version() == crate_version == header_version == shmq.__version__
    if tomllib is not None:
        with open(REPO / "bindings" / "python" / "pyproject.toml", "rb") as f:
            assert tomllib.load(f)["project"]["version"] == crate_version


def test_checksum_implementation_is_named() -> None:
    name = shmq.checksum_implementation()
    assert name.startswith("CRC32C, ") and shmq.checksum_implementation() == name
    # An x86-64 CPU with the crc32 instruction gets a hardware path, not the portable one.
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    if {"sse4_2", "pclmulqdq"} <= flags:
        assert "crate" not in name, name


def test_struct_sizes_are_what_c_sees() -> None:
    # shmq_queue_stats: 2 x u32 + 15 x u64; shmq_message_info: 2 x u64, size_t, u32 (+pad).
    assert ctypes.sizeof(_lib.StatsStruct) == 8 + 15 * 8
    assert ctypes.sizeof(_lib.QueueInfo) == 32
