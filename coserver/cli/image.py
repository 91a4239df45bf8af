"""`coserver image build` (the lab guest) and `coserver image vagrant-box` (the Vagrant lab's box):
build them, or find them in the cache."""

from __future__ import annotations

import json

import click

from coserver.images.labguest import build_lab_guest


@click.group()
def image() -> None:
    """Disk images and the lab guest."""


@image.command("build")
@click.option("--force", is_flag=True, help="Rebuild even if the cache has this guest.")
@click.option("--json", "as_json", is_flag=True, help="Print the built guest's paths as JSON.")
def image_build(force: bool, as_json: bool) -> None:
    """Build the lab guest (Debian kernel, busybox initramfs, journal service, ext4 data disk)."""
    guest = build_lab_guest(force=force, progress=None if as_json else lambda m: click.echo(f"  .. {m}", err=True))
    info = {"key": guest.key, "directory": str(guest.directory), "kernel": str(guest.vmlinuz),
            "initrd": str(guest.initrd), "data_disk": str(guest.data_template),
            "kernel_release": guest.kernel_release}
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            click.echo(f"{k:<15} {v}")


@image.command("vagrant-box")
@click.option("--force", is_flag=True, help="Rebuild even if the cache has this box.")
@click.option("--json", "as_json", is_flag=True, help="Print the box's path and facts as JSON.")
def image_vagrant_box(force: bool, as_json: bool) -> None:
    """Build the Vagrant lab's box: Debian 12 for vagrant-libvirt with every package a CoServer needs.

    Needs root (mmdebstrap --mode=root) and takes minutes the first time; then it comes from the
    cache until an input changes (deps/apt-*.txt, the kernel apt offers, coserver/images/vagrant/).
    """
    from coserver.images.vagrantbox import build_vagrant_box

    box = build_vagrant_box(force=force, progress=None if as_json else lambda m: click.echo(f"  .. {m}", err=True))
    info = box.facts()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for k, v in info.items():
        click.echo(f"{k:<17} {v}")
    click.echo(f"add it with:      vagrant box add --name coserver/debian12 {box.box}")
