"""Transport layer: async QMP sessions (qemu.qmp) with deadlines and events, and the QEMU launcher."""
