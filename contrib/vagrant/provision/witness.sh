#!/bin/bash
# Provision the Vagrant lab's witness: etcd over TLS with client certificates, and the site's role
# and users, as README "The witness over TLS" says (the certificates come from the stage, made by
# `coserver site certs` on the lab's host). Idempotent.
set -euo pipefail
address=$1
stage=/opt/coserver-stage
say() { echo "coserver-provision[witness]: $*"; }

say "network: management eth1 $address"
cat > /etc/systemd/network/20-mgmt.network <<NET
[Match]
Name=eth1
[Network]
Address=$address/24
LinkLocalAddressing=no
NET
networkctl reload
networkctl reconfigure eth1 2>/dev/null || systemctl restart systemd-networkd
for i in $(seq 60); do ip -4 addr show dev eth1 | grep -q "$address" && break; sleep 0.5; done

say "etcd on https://$address:2379 (client certificates of the site's CA only)"
install -d -m 0700 /etc/etcd/pki
cp -p "$stage/pki/witness-$address/"*.pem /etc/etcd/pki/
chown -R etcd:etcd /etc/etcd/pki
cat > /etc/default/etcd <<ETCD
# Written by the coserver Vagrant lab's provisioning (contrib/vagrant/provision/witness.sh).
ETCD_NAME=witness
ETCD_DATA_DIR=/var/lib/etcd/coserver
ETCD_LISTEN_CLIENT_URLS=https://$address:2379
ETCD_ADVERTISE_CLIENT_URLS=https://$address:2379
ETCD_LISTEN_PEER_URLS=http://127.0.0.1:2380
ETCD_INITIAL_ADVERTISE_PEER_URLS=http://127.0.0.1:2380
ETCD_INITIAL_CLUSTER=witness=http://127.0.0.1:2380
ETCD_CERT_FILE=/etc/etcd/pki/server-cert.pem
ETCD_KEY_FILE=/etc/etcd/pki/server-key.pem
ETCD_TRUSTED_CA_FILE=/etc/etcd/pki/ca-cert.pem
ETCD_CLIENT_CERT_AUTH=true
ETCD
systemctl enable etcd >/dev/null 2>&1 || true
systemctl restart etcd

say "users and the site's role (README 'The witness over TLS')"
export ETCDCTL_ENDPOINTS=https://$address:2379
export ETCDCTL_CACERT=$stage/pki/user.root/ca-cert.pem
export ETCDCTL_CERT=$stage/pki/user.root/client-cert.pem ETCDCTL_KEY=$stage/pki/user.root/client-key.pem
site=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$stage/site.toml" | head -1)
for i in $(seq 60); do etcdctl endpoint health >/dev/null 2>&1 && break; sleep 1; done
if ! etcdctl user get cs2 >/dev/null 2>&1; then   # set up once (etcdctl 3.4 has no `auth status`)
  etcdctl user add root --no-password >/dev/null 2>&1 || true
  etcdctl user grant-role root root >/dev/null
  etcdctl role add "coserver-$site" >/dev/null 2>&1 || true
  etcdctl role grant-permission --prefix "coserver-$site" readwrite "/coserver/$site/" >/dev/null
  for cs in cs1 cs2; do
    etcdctl user add "$cs" --no-password >/dev/null 2>&1 || true
    etcdctl user grant-role "$cs" "coserver-$site" >/dev/null
  done
  etcdctl auth enable
fi
etcdctl user get cs1
say "done"
