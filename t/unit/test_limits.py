"""The login memory limit: pam.login-memory-max on the user's slice."""

import pytest

from flux_pam_service.core import limits
from flux_pam_service.core.config import PamConfig

GIB = 2**30
CPUS = {"AllowedCPUs": "0-1", "AllowedMemoryNodes": "0"}


def test_sizes_percentages_and_infinity_are_parsed():
    assert limits.parse_memory("4G") == (4 * GIB, None)
    assert limits.parse_memory("512m") == (512 * 2**20, None)
    assert limits.parse_memory(1048576) == (1048576, None)
    assert limits.parse_memory("12.5%") == (None, 12.5)
    assert limits.parse_memory("infinity") == (None, None)


@pytest.mark.parametrize("bad", ["0", "0G", "4GB", "-1G", "0%", "101%", "%", "", 0])
def test_bad_sizes_are_refused(bad):
    with pytest.raises(ValueError):
        limits.parse_memory(bad)


def test_without_login_limits_the_mappers_properties_pass_unchanged():
    assert limits.login_properties(CPUS, PamConfig()) is CPUS
    assert limits.login_properties(None, PamConfig()) is None


def test_a_memory_cap_alone_limits_a_slice_that_is_not_constrained():
    cfg = PamConfig(login_memory_max="2G")
    assert limits.login_properties(None, cfg) == {"MemoryMax": str(2 * GIB)}


def test_the_smaller_of_the_mappers_memory_limit_and_the_cap_wins():
    cfg = PamConfig(login_memory_max="2G")
    scaled = dict(CPUS, MemoryMax=str(GIB))
    assert limits.login_properties(scaled, cfg)["MemoryMax"] == str(GIB)
    bigger = dict(CPUS, MemoryMax=str(8 * GIB))
    out = limits.login_properties(bigger, cfg)
    assert out == dict(CPUS, MemoryMax=str(2 * GIB))
    assert bigger["MemoryMax"] == str(8 * GIB)  # the mapper's dict is not changed


def test_a_percentage_is_of_the_nodes_memory(monkeypatch):
    monkeypatch.setattr(limits, "memtotal", lambda: 16 * GIB)
    out = limits.login_properties(CPUS, PamConfig(login_memory_max="25%"))
    assert out["MemoryMax"] == str(4 * GIB)
    # the mapper's own percentage is compared in bytes too
    mapped = dict(CPUS, MemoryMax="10%")
    out = limits.login_properties(mapped, PamConfig(login_memory_max="2G"))
    assert out["MemoryMax"] == str(int(16 * GIB * 0.10))


def test_memtotal_reads_meminfo(tmp_path):
    path = tmp_path / "meminfo"
    path.write_text("MemTotal:       16303932 kB\nMemFree: 1 kB\n")
    assert limits.memtotal(str(path)) == 16303932 * 1024
    path.write_text("MemFree: 1 kB\n")
    with pytest.raises(OSError):
        limits.memtotal(str(path))
