"""coserver: fault-tolerant virtual servers on QEMU COLO.

Layers (arrows point down only): cli -> bench -> lab, doctor -> pair -> controller
-> colo, images, hardware -> machine -> qmp -> sys.
Shared at the top level: errors, paths, log — things every layer needs and
that know nothing of any layer.
"""

__version__ = "0.1.0"
