"""sdexec-mapper class for tests whose R has more cores than the host.

``[sdexec] mapper = "perilog_mapper.IdentityMapper"`` with
``mapper-searchpath`` pointing here maps logical core N to CPU N and every
core to memory node 0, so a fake R (``[resource] noverify``) can hold 50
cores on a 2-CPU machine.  systemd stores AllowedCPUs as given; this VM does
not enforce cpusets (doc/design.rst, "Facts measured"), so nothing runs
differently.
"""

from flux.sdexec.map import ResourceMapper


class IdentityMapper(ResourceMapper):
    """Core N is CPU N."""

    def __init__(self, xml: str, rank: int = 0) -> None:
        super().__init__(rank)

    def map_cores(self, cores: str) -> dict:
        return {"AllowedCPUs": cores, "AllowedMemoryNodes": "0"}
