"""Disk images and overlays (qemu-img), initial sync, and the lab guest image."""
