"""A controller's configuration derived from the site file and the server's spec: no hand-written JSON.

On a real CoServer the systemd unit runs ``python -m coserver.controller.daemon --server NAME``;
the daemon reads /etc/coserver/site.toml (or $COSERVER_SITE) and the server's spec in the site's
servers_dir and builds its ControllerConfig here. Both hosts derive mirrored configurations from
the same two files: cs1's link i local address is cs2's link i peer, the ports are the server's
slot on both.

The lab is meant to use this too (its two hosts live on one machine until mount namespaces
land), so the per-host directories (state, run, overlays) and the key file can be overridden.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from coserver.controller.config import TIMING_KEYS, ControllerConfig, LinkConfig, WitnessConfig
from coserver.controller.errors import ConfigError
from coserver.controller.peercheck import site_digest
from coserver.errors import CoserverError
from coserver.hardware.spec import FTServerSpec, load_spec
from coserver.site.model import Site
from coserver.site.ports import allocate
from coserver.site.servers import check_spec_hosts, check_unique_macs

#: Linux interface names are at most 15 characters.
IFNAMSIZ = 15
WITNESS_TTL = 2


def site_timing(site: Site) -> dict[str, float]:
    """The timing keys the site file sets (TIMING_KEYS); the ones it leaves out are the controller's defaults."""
    return {k: getattr(site, k) for k in TIMING_KEYS if getattr(site, k) is not None}


def tap_name(server: str) -> str:
    """The guest NIC's tap on each host: 'ft-<server>', or a shortened name with a hash so two
    long server names never share a tap (Linux allows 15 characters)."""
    name = f"ft-{server}"
    if len(name) <= IFNAMSIZ:
        return name
    digest = hashlib.sha256(server.encode()).hexdigest()[:4]
    return f"ft-{server[:IFNAMSIZ - 8].rstrip('-')}-{digest}"


def _spec_disk(spec: FTServerSpec, host: str) -> str:
    if not spec.disks:
        raise ConfigError(f"spec {spec.file}: key disks: COLO replicates a disk: the FT server needs "
                          "at least one [[disks]]")
    return str(spec.disks[0].paths[host].value)


def _nic_bridge(spec: FTServerSpec, host: str) -> str | None:
    """The spec's bridge for the guest NIC on `host`, if it names one."""
    value = spec.nics[0].bridges.get(host) if spec.nics else None
    return str(value.value) if value is not None else None


def controller_config_for(site: Site, spec_path: Path, host: str, *, accel: str | None = None,
                          servers: Iterable[str] = (), state_dir: Path | None = None,
                          run_dir: Path | None = None, overlay_dir: Path | None = None,
                          key_file: Path | None = None) -> ControllerConfig:
    """What `host`'s controller of the FT server in `spec_path` needs, from the site and the spec.

    servers: the names of the site's other FT servers, whose port slots this one must not share.
    state_dir/run_dir/overlay_dir/key_file override the site's (the lab's hosts share a machine)."""
    me = site.coserver(host)
    peer = site.peer_of(host)
    try:
        spec = load_spec(spec_path)
        check_spec_hosts(site, spec)
        check_unique_macs(site, spec)
        ports = allocate(site, {spec.name, *servers})[spec.name]
    except CoserverError as exc:
        raise ConfigError(str(exc)) from None
    if not spec.nics:
        raise ConfigError(f"spec {spec.file}: key nics: COLO compares the guest's network output: "
                          "the FT server needs at least one [[nics]]")
    state = (state_dir or site.state_dir) / "servers" / spec.name
    run = run_dir or site.run_dir
    links: list[LinkConfig] = [
        {"name": f"sync{i + 1}", "local_ip": link.local, "peer_ip": link.peer, "port": ports.heartbeat,
         "device": link.device}
        for i, link in enumerate(me.links)]
    w_host, w_port = site.witness.hosts()[0]
    try:
        tls = site.witness_tls(me.name)   # this host's own files; refused without TLS unless insecure = true
    except CoserverError as exc:
        raise ConfigError(str(exc)) from None
    witness: WitnessConfig = {"host": w_host, "port": w_port, "site": site.name, "ttl": WITNESS_TTL}
    if tls is None:
        witness["insecure"] = True
    else:
        witness["ca"], witness["cert"], witness["key"] = (str(p) for p in tls)
    metrics_port = ports.metrics if site.metrics_port is None else site.metrics_port
    if site.metrics_port and set(servers) - {spec.name}:
        raise ConfigError(f"site {site.file}: key metrics_port: a fixed port ({site.metrics_port}) serves one FT "
                          f"server, and the site has {len(set(servers) | {spec.name})}: omit the key (each "
                          "server's slot port) or set 0")
    try:
        digest = site_digest(Path(site.file).read_bytes())   # the heartbeats compare it with the peer's
    except OSError as exc:
        raise ConfigError(f"site file {site.file}: cannot read: {exc.strerror}") from None
    timing = site_timing(site)
    try:
        return ControllerConfig(
            host=me.name, peer=peer.name, ftserver=spec.name,
            qemu_workdir=str(state), qemu_name=spec.name,
            control_socket=str(run / f"{spec.name}.sock"),
            log_file=str(state / "controller.log.jsonl"), journal_file=str(state / "controller.journal.json"),
            key_file=str(key_file or site.key_file), links=links,
            witness=witness,
            node={"sync_addr": me.replication, "tap": tap_name(spec.name), "disk": _spec_disk(spec, host),
                  "mac": spec.nics[0].mac, "overlay_dir": str(overlay_dir or run / spec.name),
                  "bridge": _nic_bridge(spec, host) or me.bridge},
            checkpoint_ms=site.checkpoint_ms, spec=str(spec.file), accel=accel or site.accel,
            peer_repl_addr=peer.replication,
            ports={"mirror": ports.mirror, "compare": ports.compare, "migration": ports.migration, "nbd": ports.nbd},
            reprotect=site.reprotect, sync_speed_mib_s=site.sync_speed_mib_s,
            protect_order=site.protect, preferred=me.name == site.preferred,
            boot_grace_s=float(site.boot_grace_s), stop_timeout_s=float(site.stop_timeout_s),
            remote_control={"address": me.management, "port": ports.control}, site_digest=digest,
            metrics={"address": me.management, "port": metrics_port} if metrics_port else {},
            alert_command=list(site.alert_command),
            tls_dir=str(site.tls_dir(me.name) or ""), backend=site.backend, libvirt_uri=site.libvirt_uri,
            **timing)
    except ConfigError as exc:   # the site's timing keys conflict: name the file
        raise ConfigError(f"site file {site.file}: {str(exc).removeprefix('controller config: ')}") from None
