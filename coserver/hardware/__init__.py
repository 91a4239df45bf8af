"""Data layer: ProLiant-like hardware profiles and FT server specs -> QEMU machine, SMBIOS, devices.

Knows nothing of QMP, COLO or the controller: it reads TOML, validates, and builds argv lists.

- ``profile``: the shipped profiles (profiles/<family>.toml: dl360, dl380, dl580 by generation).
  A profile has the real box's *identity* (SMBIOS) and a deliberately small *default guest*
  (1 vCPU, 256 MiB, virtio) so two COLO copies run under TCG on a 2-core lab machine.
- ``spec``: one TOML file per protected server (schema in its docstring; example in
  examples/lab-journal.toml), validated before anything starts.
- ``config``: a spec resolved for one CoServer; comparison of the two CoServers' configs.
- ``host``: host capacity and the capacity check (counting COLO's secondary RAM cache).
- ``argv``: QEMU argv for the machine, SMBIOS, and devices on the COLO layer's nodes/netdevs.
- ``check``: every check at once (what ``coserver hardware check`` runs).
- ``devices``: known device models, and the device types COLO cannot keep in step.
"""

from coserver.hardware.argv import (
                                    ConfigGuestHardware,
                                    boot_args,
                                    cdrom_device_args,
                                    disk_device_args,
                                    extra_device_args,
                                    guest_args,
                                    machine_args,
                                    nic_device_args,
                                    smbios_args,
                                    storage_controller_args,
)
from coserver.hardware.check import CheckReport, check_profile, check_spec
from coserver.hardware.config import (
                                    MachineConfig,
                                    compare_configs,
                                    config_differences,
                                    config_digest,
                                    default_config,
                                    guest_view,
                                    measure,
                                    resolve,
                                    to_dict,
)
from coserver.hardware.errors import (
                                    CapacityError,
                                    ColoIncompatibleError,
                                    ConfigMismatchError,
                                    FileDigestError,
                                    HardwareError,
                                    ProfileNotFound,
                                    SchemaError,
                                    SpecError,
                                    TopologyError,
)
from coserver.hardware.host import HostCapacity, check_capacity, local_host_capacity, required_memory_mib
from coserver.hardware.profile import Profile, get_profile, list_profiles, profile_names
from coserver.hardware.spec import FTServerSpec, load_spec

__all__ = [
    "Profile", "get_profile", "list_profiles", "profile_names",
    "FTServerSpec", "load_spec",
    "MachineConfig", "resolve", "measure", "default_config", "guest_view", "to_dict",
    "compare_configs", "config_differences", "config_digest",
    "HostCapacity", "local_host_capacity", "check_capacity", "required_memory_mib",
    "machine_args", "smbios_args", "boot_args", "storage_controller_args", "disk_device_args",
    "cdrom_device_args", "nic_device_args", "extra_device_args", "guest_args",
    "ConfigGuestHardware",
    "CheckReport", "check_spec", "check_profile",
    "HardwareError", "ProfileNotFound", "SpecError", "SchemaError", "TopologyError",
    "ColoIncompatibleError", "CapacityError", "FileDigestError", "ConfigMismatchError",
]
