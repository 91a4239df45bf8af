"""The QEMU process: start, attach, signal and stop it (apart from QMP, as qemu.machine is apart from qemu.qmp)."""
