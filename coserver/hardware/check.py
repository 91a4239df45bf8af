"""All the checks before an FT server starts, in one call (what `coserver hardware check` runs).

For a spec: load and validate it (schema, topology, COLO compatibility), resolve it for both
CoServers, measure the read-only inputs (ISO, kernel, initrd) of the CoServers whose files are on
this machine, require both configs to be equal in everything the guest sees, refuse two local
CoServers sharing one disk image, and check this host's capacity for the QEMUs it will run.

For a profile: load it and check its default machine fits this host twice (the lab runs the
primary and the secondary on one machine).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from coserver.errors import clip
from coserver.hardware.config import (
    MachineConfig,
    compare_configs,
    config_digest,
    default_config,
    guest_view,
    measure,
    resolve,
)
from coserver.hardware.errors import SchemaError
from coserver.hardware.host import HostCapacity, check_capacity, local_host_capacity, required_memory_mib
from coserver.hardware.profile import Profile, get_profile
from coserver.hardware.spec import FTServerSpec, load_spec


@dataclass
class CheckReport:
    """What was checked and found good."""

    kind: str  # "spec" or "profile"
    origin: str
    name: str
    profile: str
    config: MachineConfig
    capacity: HostCapacity
    qemus: int
    local_hosts: tuple[str, ...] = ()
    measured: bool = False
    digest: str = ""

    def summary(self) -> str:
        c = self.config
        parts = [f"ok {self.kind} {self.name}: {c.smbios.manufacturer} {c.smbios.product}",
                 f"{c.machine}", f"{c.cpu.vcpus} vCPU", f"{c.memory_mib} MiB"]
        if self.kind == "spec":
            parts += [f"{len(c.disks)} disk(s)", f"{len(c.nics)} NIC(s)"]
        line = ", ".join(parts)
        line += (f"; fits {self.capacity.name} ({self.capacity.cpus} CPUs, "
                 f"{self.capacity.memory_mib} MiB) x{self.qemus} QEMU")
        if self.kind == "spec":
            line += f"; config {self.digest[:12]}"
        return line

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "kind": self.kind,
            "origin": self.origin,
            "name": self.name,
            "profile": self.profile,
            "local_hosts": list(self.local_hosts),
            "files_measured": self.measured,
            "capacity": {"host": self.capacity.name, "cpus": self.capacity.cpus,
                         "memory_mib": self.capacity.memory_mib, "qemus": self.qemus,
                         "required_memory_mib": required_memory_mib(self.config,
                                                                    qemus=self.qemus)},
            "digest": self.digest,
            "config": guest_view(self.config),
        }


def check_spec(path: str | Path, *, local_hosts: Sequence[str] | None = None,
               capacity: HostCapacity | None = None, measure_files: bool = True) -> CheckReport:
    """Every check of a spec; the first failure raises its one-line SpecError.

    local_hosts: the CoServers of the spec that run on this machine (default: both, as in the
    lab); their files are measured and this host's capacity must hold one QEMU per local host.
    """
    spec: FTServerSpec = load_spec(path)
    if local_hosts is None:
        local = tuple(spec.coservers)
    else:
        local = tuple(dict.fromkeys(local_hosts))
        for h in local:
            if h not in spec.coservers:
                raise SchemaError(spec.origin, "coservers",
                                  f"{clip(h, quote=repr)} is not one of this spec's coservers "
                                  f"({', '.join(spec.coservers)})")
    configs = {h: resolve(spec, h) for h in spec.coservers}
    if measure_files:
        for h in local:
            configs[h] = measure(configs[h])
    # Compare what can be compared here: both CoServers unless only one's files were measured
    # (then its peer's measured view must be compared by the controller: compare_configs()).
    compared = [h for h in spec.coservers if h in local] if measure_files else list(spec.coservers)
    if len(compared) == 2:
        compare_configs(configs[compared[0]], configs[compared[1]],
                        names=(compared[0], compared[1]), origin=spec.origin)
    mine = configs[local[0]] if local else configs[spec.coservers[0]]
    if len(local) > 1:
        for d_a, d_b in zip(configs[local[0]].disks, configs[local[1]].disks, strict=False):
            if d_a.path == d_b.path:
                raise SchemaError(spec.origin, d_b.path_key,
                                  f"{local[0]} and {local[1]} both use {d_b.path} on this "
                                  f"machine; each QEMU needs its own copy of the image")
    cap = capacity or local_host_capacity()
    qemus = max(1, len(local))
    check_capacity(mine, cap, qemus=qemus)
    return CheckReport(kind="spec", origin=spec.origin, name=spec.name,
                       profile=spec.profile.name, config=mine, capacity=cap, qemus=qemus,
                       local_hosts=local, measured=measure_files and bool(local),
                       digest=config_digest(mine))


def check_profile(profile: str | Profile, *, capacity: HostCapacity | None = None,
                  qemus: int = 2) -> CheckReport:
    """A profile loads and its default machine fits this host `qemus` times (lab: 2)."""
    p = get_profile(profile) if isinstance(profile, str) else profile
    config = default_config(p)
    cap = capacity or local_host_capacity()
    check_capacity(config, cap, qemus=qemus)
    return CheckReport(kind="profile", origin=p.origin, name=p.name, profile=p.name,
                       config=config, capacity=cap, qemus=qemus, digest=config_digest(config))
