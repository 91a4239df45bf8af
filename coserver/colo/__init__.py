"""Mechanism layer: COLO roles, QEMU argv per role, start, failover, re-protection."""
