"""Is this host fit for COLO: host checks, the COLO self-test, and choosing the QEMU to use."""
