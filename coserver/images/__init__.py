"""Disk images: qemu-img and COLO overlays, cached guest builds (the lab guest, the Debian guest), the guest's journal client."""
