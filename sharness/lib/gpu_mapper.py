"""sdexec-mapper class for a node replica with GPUs that do not exist.

``node.py up --fake-gpus N`` gives the replica a resource config with GPUs
0..N-1 (``[resource] noverify``) and loads this mapper through ``[sdexec]
mapper = "gpu_mapper.FakeGpuMapper"`` and ``mapper-searchpath``.  Cores map
as flux-core's HwlocMapper maps them; GPU N maps to ``/dev/flux-pam-gpuN``,
a character device the tests make with mknod (major MAJOR, minor N).  No
driver owns that major, so opening the node answers ENXIO wherever the
cgroup's device filter lets the open through, and EPERM where it does not.
"""

from flux.idset import IDset
from flux.sdexec.map import HwlocMapper

#: char major 240-254 is for local/experimental use (devices.txt)
MAJOR = 240
PATH = "/dev/flux-pam-gpu{}"


class FakeGpuMapper(HwlocMapper):
    """HwlocMapper, with GPU N as /dev/flux-pam-gpuN."""

    def map_gpus(self, gpus: str) -> dict:
        if not gpus:
            return {}
        paths = [f"{PATH.format(i)} rw" for i in IDset(gpus)]
        return {"DeviceAllow": ",".join(paths)}
