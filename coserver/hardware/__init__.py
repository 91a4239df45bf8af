"""Data layer: ProLiant-like device profiles -> QEMU machine, devices and SMBIOS."""
