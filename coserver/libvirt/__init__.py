"""libvirt: FT servers as libvirt domains that libvirt users can see, without giving libvirt the say.

libvirt has no COLO. coserver's controllers stay in charge of an FT server's life; libvirt is
a way to run and show each CoServer's copy of it. Modules, one job each:

- ``metadata``: coserver's ``<metadata>`` element (site, FT server, role, epoch, start token).
- ``starttoken``: how the hook tells a controller's start from an operator's ``virsh start``.
- ``domainxml``: an FT spec resolved for one CoServer -> that CoServer's domain XML.
- ``importer`` (+ ``spectext``): an existing domain's XML -> an FT server spec, or the reasons not.
- ``hook``: /etc/libvirt/hooks/qemu.d/50-coserver's logic; it tells the controller, never libvirt.

Beside hardware/ (floor 4): it may use hardware/, machine/'s option quoting, sys/ and errors.
This package stays light on purpose: ``hook`` runs while libvirtd waits for it, so nothing here
imports hardware/ at module level except the modules that build or read specs.
"""
