"""What a CoServer can give an FT server: CPUs and memory, and the check against a config.

Memory model (per QEMU process): the guest's RAM, plus a fixed overhead for QEMU itself. A COLO
*secondary* additionally keeps a full copy of the guest's RAM (its COLO RAM cache, filled at
every checkpoint), so a CoServer must be able to hold 2 x guest RAM + overhead: either side can
become the secondary after a failover and re-protection. In the one-machine lab both QEMUs run
on the same host (``qemus=2``): 3 x guest RAM + 2 x overhead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from coserver.hardware.config import MachineConfig
from coserver.hardware.errors import CapacityError, HardwareError

QEMU_OVERHEAD_MIB = 256


@dataclass(frozen=True)
class HostCapacity:
    """CPUs and memory of one host."""

    name: str
    cpus: int
    memory_mib: int


def local_host_capacity(name: str = "this host", proc: Path = Path("/proc")) -> HostCapacity:
    """CPUs (processor entries of /proc/cpuinfo) and MemTotal of /proc/meminfo, in MiB."""
    try:
        cpuinfo = (proc / "cpuinfo").read_text()
        meminfo = (proc / "meminfo").read_text()
    except OSError as exc:
        raise HardwareError(f"cannot read host capacity from {proc}: {exc.strerror or exc}") \
            from None
    cpus = sum(1 for line in cpuinfo.splitlines()
               if line.split(":", 1)[0].strip() == "processor")
    mem_kib = None
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                mem_kib = int(parts[1])
    if cpus < 1 or mem_kib is None:
        raise HardwareError(f"cannot read host capacity from {proc}: no processor entries in "
                            f"cpuinfo or no MemTotal in meminfo")
    return HostCapacity(name=name, cpus=cpus, memory_mib=mem_kib // 1024)


def required_memory_mib(config: MachineConfig, *, qemus: int = 1) -> int:
    """Memory one host needs for `qemus` QEMUs of this FT server, one of them the secondary."""
    return config.memory_mib * (qemus + 1) + QEMU_OVERHEAD_MIB * qemus


def check_capacity(config: MachineConfig, host: HostCapacity, *, qemus: int = 1) -> None:
    """CapacityError if the host cannot run `qemus` QEMUs of this FT server (1 on a CoServer,
    2 on the one-machine lab), counting the COLO secondary's RAM cache."""
    if config.cpu.vcpus > host.cpus:
        raise CapacityError(config.origin, "cpu",
                            f"{config.cpu.vcpus} vCPUs exceed the {host.cpus} CPUs of {host.name}")
    need = required_memory_mib(config, qemus=qemus)
    if need > host.memory_mib:
        copies = qemus + 1
        raise CapacityError(
            config.origin, "memory_mib",
            f"{config.memory_mib} MiB of guest RAM needs {need} MiB on {host.name} "
            f"({copies} x guest RAM, one being the COLO secondary's RAM cache, + {qemus} x "
            f"{QEMU_OVERHEAD_MIB} MiB QEMU overhead), which has {host.memory_mib} MiB")
