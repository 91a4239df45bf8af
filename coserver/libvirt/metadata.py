"""coserver's element in a libvirt domain's ``<metadata>``: which FT server a domain is a copy of.

libvirt lets each tool keep one top-level element per XML namespace in ``<metadata>``; coserver's
is::

    <metadata>
      <coserver:server xmlns:coserver="https://coserver.dev/xmlns/libvirt/1"
                       site="lab-cs" name="journal" role="primary" epoch="7" token="9f2c..."/>
    </metadata>

It marks a domain as an FT server's copy (the hook leaves every other domain alone), and says
which site, server, role and witness epoch the controller started it as, so ``virsh dumpxml``
shows an operator what the domain is. ``token`` is the per-start token (coserver.libvirt.starttoken);
a domain defined but never started by a controller has none.

Parsing is strict (a malformed element is a MetadataError naming the attribute), because the
hook's decisions rest on it; names follow the spec's and site's rules (hardware.spec.NAME), checked
here without importing hardware/ (the hook must start fast; a test keeps the patterns equal).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from coserver.errors import clip
from coserver.libvirt.errors import MetadataError

#: coserver's namespace in libvirt's <metadata>; "/1": the element's version (a new shape, a new URI).
NAMESPACE = "https://coserver.dev/xmlns/libvirt/1"
PREFIX = "coserver"
ELEMENT = "server"
TAG = f"{{{NAMESPACE}}}{ELEMENT}"
#: An FT server's or site's name: hardware.spec.NAME (tests/libvirt checks they stay equal).
NAME = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
#: The roles a controller starts a copy as: controller.roles.Role's values (checked by a test).
ROLES = ("primary", "secondary", "simplex", "none")
TOKEN = r"[0-9a-f]{32}"


class ServerTag:
    """What coserver's metadata element says about one domain (checked when made).

    A plain class rather than a dataclass: the hook imports this module, and dataclasses (through
    inspect) would add ~7 ms to every hook call libvirtd waits for."""

    __slots__ = ("site", "name", "role", "epoch", "token")

    def __init__(self, site: str, name: str, role: str, epoch: int, token: str | None = None) -> None:
        for key, value in (("site", site), ("name", name)):
            if not isinstance(value, str) or not re.fullmatch(NAME, value):
                raise MetadataError(f"coserver metadata: {key} must be 1 to 63 of [a-z0-9-], got "
                                    f"{clip(str(value), quote=repr)}")
        if role not in ROLES:
            raise MetadataError(f"coserver metadata: role must be one of {', '.join(ROLES)}, got "
                                f"{clip(str(role), quote=repr)}")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise MetadataError(f"coserver metadata: epoch must be a whole number >= 0, got {epoch!r}")
        if token is not None and not (isinstance(token, str) and re.fullmatch(TOKEN, token)):
            raise MetadataError("coserver metadata: token must be 32 lower-case hex digits")
        self.site, self.name, self.role, self.epoch, self.token = site, name, role, epoch, token

    def _key(self) -> tuple[str, str, str, int, str | None]:
        return (self.site, self.name, self.role, self.epoch, self.token)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ServerTag) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (f"ServerTag(site={self.site!r}, name={self.name!r}, role={self.role!r}, epoch={self.epoch}, "
                f"token={self.token!r})")


def element(tag: ServerTag) -> ET.Element:
    """The <coserver:server .../> element for a domain's <metadata>."""
    attrs = {"site": tag.site, "name": tag.name, "role": tag.role, "epoch": str(tag.epoch)}
    if tag.token is not None:
        attrs["token"] = tag.token
    return ET.Element(TAG, attrs)


def find(domain: ET.Element) -> ServerTag | None:
    """coserver's tag in a parsed <domain>, None if it has none; MetadataError if it is malformed."""
    found = domain.find(f"metadata/{TAG}")
    if found is None:
        return None
    attrs = dict(found.attrib)
    unknown = sorted(set(attrs) - {"site", "name", "role", "epoch", "token"})
    if unknown:
        raise MetadataError(f"coserver metadata: unknown attribute {clip(unknown[0], quote=repr)}")
    missing = [k for k in ("site", "name", "role", "epoch") if k not in attrs]
    if missing:
        raise MetadataError(f"coserver metadata: attribute {missing[0]} is missing")
    epoch = attrs["epoch"]
    if not re.fullmatch(r"[0-9]{1,18}", epoch):
        raise MetadataError(f"coserver metadata: epoch must be a whole number >= 0, got {clip(epoch, quote=repr)}")
    return ServerTag(site=attrs["site"], name=attrs["name"], role=attrs["role"], epoch=int(epoch),
                     token=attrs.get("token"))


def domain_root(domain_xml: str | bytes) -> ET.Element:
    """A domain's XML text parsed; MetadataError (a LibvirtError) in one line if it is not
    well-formed or not a <domain>."""
    try:
        root = ET.fromstring(domain_xml)
    except ET.ParseError as exc:
        raise MetadataError(f"domain XML: not well-formed ({exc})") from None
    if root.tag != "domain":
        raise MetadataError(f"domain XML: the root element is <{clip(str(root.tag))}>, not <domain>")
    return root


def parse(domain_xml: str | bytes) -> ServerTag | None:
    """coserver's tag in a domain's XML text; None without one; MetadataError if the XML is not a
    domain or the tag is malformed."""
    return find(domain_root(domain_xml))


def register_prefixes() -> None:
    """Write coserver's and libvirt's QEMU namespaces with their usual prefixes (ElementTree's
    prefix table is global: this only adds to it)."""
    ET.register_namespace(PREFIX, NAMESPACE)
