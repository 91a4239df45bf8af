#!/bin/bash
# Provision one Vagrant CoServer the way README "Deploying on two hosts" sets up a real one:
# steps 1 (install), 2 (network), 3 (site file), 4 (the pair's key, made once on the lab's host
# and copied), 5 (the FT server's spec and disks), 6 (site check, the controller's unit). Step 7
# (`coserver server start`) needs both controllers running: `coserver vagrant up` runs it once
# both machines are provisioned. Idempotent: a re-provisioned machine ends in the same state.
#
# These machines reach no internet: the box has every apt package `make setup` wants, the stage
# (/opt/coserver-stage, made by `coserver vagrant stage` on the lab's host) has the Python wheels,
# the host's cached builds (the patched QEMU, the lab guest and their self-test verdicts: the same
# Debian, the same binaries), and the site's files.
set -euo pipefail
host=$1
stage=/opt/coserver-stage
n=${host#cs}
peer=cs$((3 - n))
pn=$((3 - n))
say() { echo "coserver-provision[$host]: $*"; }

# ---- 2. network (systemd-networkd, so a power cut and a boot bring it back) --------------------
say "network: management eth1, client LAN eth2 in br-lan, sync links eth3/eth4, replication address on lo"
net=/etc/systemd/network
cat > $net/20-mgmt.network <<NET
[Match]
Name=eth1
[Network]
Address=10.210.1.1$n/24
LinkLocalAddressing=no
NET
cat > $net/21-br-lan.netdev <<NET
[NetDev]
Name=br-lan
Kind=bridge
NET
cat > $net/21-br-lan.network <<NET
[Match]
Name=br-lan
[Network]
LinkLocalAddressing=no
ConfigureWithoutCarrier=yes
NET
cat > $net/22-lan-port.network <<NET
[Match]
Name=eth2
[Network]
Bridge=br-lan
LinkLocalAddressing=no
NET
for link in 1 2; do
  cat > $net/2$((2 + link))-sync$link.network <<NET
[Match]
Name=eth$((2 + link))
[Network]
Address=10.210.1$link.$n/24
LinkLocalAddressing=no
IPv6AcceptRA=no
[Route]
Destination=10.210.20.$pn/32
Gateway=10.210.1$link.$pn
Metric=$((link * 10))
PreferredSource=10.210.20.$n
NET
done
cat > $net/10-lo.network <<NET
[Match]
Name=lo
[Network]
Address=127.0.0.1/8
Address=10.210.20.$n/32
NET
networkctl reload
networkctl reconfigure lo eth1 eth2 eth3 eth4 br-lan 2>/dev/null || systemctl restart systemd-networkd
for i in $(seq 60); do
  ip -4 addr show dev eth3 | grep -q "10.210.11.$n" && ip -4 addr show dev lo | grep -q "10.210.20.$n" && break
  sleep 0.5
done
# the replication routes need the link addresses (PreferredSource): give networkd a moment
for i in $(seq 60); do ip route show 10.210.20.$pn | grep -q . && break; sleep 0.5; done
cat > /etc/hosts <<HOSTS
127.0.0.1 localhost
10.210.1.11 cs1
10.210.1.12 cs2
10.210.1.21 witness
HOSTS

# ---- 1. install (README step 1; pip and the cached builds from the stage) ----------------------
say "install: make setup in /opt/coserver (apt packages in the box, wheels and cached builds from the stage)"
install -d -m 0755 /root/.cache/coserver
rsync -a "$stage/cache/" /root/.cache/coserver/
cd /opt/coserver
# make setup's COLO self-test judges QEMU on the accelerator the site runs it with (its `accel`): a
# machine may offer a KVM that is no use for COLO (nested on emulated SVM: a probe boots, COLO stalls)
accel=$(sed -n 's/^accel *= *"\(kvm\|tcg\)".*/\1/p' "$stage/site.toml" | head -n 1)
COSERVER_ACCEL=$accel PIP_NO_INDEX=1 PIP_FIND_LINKS="$stage/wheels" make setup
ln -sf /opt/coserver/.venv/bin/coserver /usr/local/bin/coserver

# Debian's etcd-server (in make setup's packages: the namespace lab's witness) starts an etcd on
# localhost; a CoServer is no witness member.
systemctl disable --now etcd >/dev/null 2>&1 || true

# ---- 3-5. the site file, the key, the certificates, the spec, the disks -------------------------
say "site: /etc/coserver/site.toml, pair.key, pki/$host, servers/journal.toml, disks"
# what the controller read when it started: a re-provisioned machine restarts it if any of it changed
inputs() { cat /etc/coserver/site.toml /etc/coserver/pair.key /etc/coserver/servers/journal.toml \
             /etc/coserver/pki/"$host"/* 2>/dev/null | sha256sum; }
before=$(inputs)
install -d -m 0700 /etc/coserver /etc/coserver/servers /etc/coserver/pki
install -m 0644 "$stage/site.toml" /etc/coserver/site.toml
install -m 0600 "$stage/pair.key" /etc/coserver/pair.key
rm -rf "/etc/coserver/pki/$host"
cp -rp "$stage/pki/$host" /etc/coserver/pki/
chown -R root:root "/etc/coserver/pki/$host"    # the stage arrives as the vagrant user's files
install -m 0644 "$stage/servers/journal.toml" /etc/coserver/servers/journal.toml
install -d -m 0755 /var/lib/coserver/images/journal /var/lib/coserver/disks
install -m 0644 "$stage/guest/vmlinuz" "$stage/guest/initrd.img" /var/lib/coserver/images/journal/
disk=/var/lib/coserver/disks/journal-data.qcow2
if [ ! -e "$disk" ]; then
  if [ "$host" = cs1 ]; then
    install -m 0600 "$stage/guest/journal-data.qcow2" "$disk"     # cs1 holds the guest's disk
  else
    size=$(qemu-img info --output=json "$stage/guest/journal-data.qcow2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
    qemu-img create -q -f qcow2 "$disk" "$size"                   # cs2: a blank one the pair fills
  fi
fi
coserver hardware check /etc/coserver/servers/journal.toml >/dev/null

# ---- 6. check the host, then the controller -----------------------------------------------------
say "site check (before the controllers: the peer's is not heard yet)"
coserver site check || true
install -m 0644 contrib/systemd/coserver-controller@.service /etc/systemd/system/
systemctl daemon-reload
systemctl enable --now coserver-controller@journal
if [ "$(inputs)" != "$before" ]; then
  systemctl try-restart coserver-controller@journal   # it would go on with the old key and certificates
fi
say "done: coserver-controller@journal $(systemctl is-active coserver-controller@journal)"
