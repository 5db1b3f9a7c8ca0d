#!/usr/bin/env bash
# Installs what building, running and testing r8s needs on a fresh Debian machine (root):
# the node agent's runtime (containerd, runc, CNI plugins), protoc and a static libc for the
# build, and the clients and tools the tests use. Idempotent: installs only what is missing.
set -euo pipefail
need_apt=()
command -v kubectl >/dev/null || need_apt+=(kubectl)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
[ -e /usr/share/zoneinfo/Asia/Shanghai ] || need_apt+=(tzdata)   # CronJob timeZone tests
# The node agent: containerd + runc, the CNI plugins, protoc for the CRI bindings, a static libc
# for the pause program, busybox-static for the test image, iproute2/nsenter for the lab.
command -v containerd >/dev/null || need_apt+=(containerd)
command -v runc >/dev/null || need_apt+=(runc)
[ -x /usr/lib/cni/bridge ] || need_apt+=(containernetworking-plugins)
command -v protoc >/dev/null || need_apt+=(protobuf-compiler)
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || [ -e /usr/lib/aarch64-linux-gnu/libc.a ] || need_apt+=(libc6-dev)
command -v cc >/dev/null || need_apt+=(gcc)
[ -x /usr/bin/busybox ] && /usr/bin/busybox --list 2>/dev/null | grep -qx httpd || need_apt+=(busybox-static)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v nsenter >/dev/null || need_apt+=(util-linux)
command -v nft >/dev/null || need_apt+=(nftables)
command -v iptables >/dev/null || need_apt+=(iptables)
command -v conntrack >/dev/null || need_apt+=(conntrack)   # the proxy clears stale UDP flows
command -v openssl >/dev/null || need_apt+=(openssl)       # tests make TLS certificates
command -v curl >/dev/null || need_apt+=(curl)
command -v docker-registry >/dev/null || need_apt+=(docker-registry)   # the image pull tests' registry
command -v script >/dev/null || need_apt+=(bsdutils)                # kubectl exec -it on a pseudo-terminal
command -v pgrep >/dev/null || need_apt+=(procps)
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}"
fi
# The official Python client the compatibility tests use.
python3 -c 'import kubernetes' 2>/dev/null || python3 -m pip install -q 'kubernetes==32.*'
