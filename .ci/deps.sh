#!/usr/bin/env bash
# Installs what l2tpu's tests need on a fresh Debian machine (root).
# Idempotent: installs only what is missing.
set -euo pipefail
need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v ping >/dev/null 2>&1 || need+=(iputils-ping)
command -v sysctl >/dev/null 2>&1 || need+=(procps)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
# The modprobe shim hands over to the system's (cmd/l2tpu/modprobe_test.go).
PATH=$PATH:/usr/sbin:/sbin command -v modprobe >/dev/null 2>&1 || need+=(kmod)
# promtool lints the daemon's /metrics (daemon/metrics_test.go).
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# `deps.sh interop`: what make interop needs as well.
if [ "${1:-}" = bench ]; then
	command -v iperf3 >/dev/null 2>&1 || need+=(iperf3)
	command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
	# wg configures the wireguard-go row (built from the Go module proxy).
	command -v wg >/dev/null 2>&1 || need+=(wireguard-tools)
	command -v ss >/dev/null 2>&1 || need+=(iproute2)
fi
if [ "${1:-}" = interop ]; then
	command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
	[ -e /usr/share/qemu/qboot.rom ] || need+=(qemu-system-data)
	command -v tcpdump >/dev/null 2>&1 || need+=(tcpdump)
	command -v tshark >/dev/null 2>&1 || need+=(tshark)
	command -v xz >/dev/null 2>&1 || need+=(xz-utils)
	command -v dpkg-deb >/dev/null 2>&1 || need+=(dpkg)
fi
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "deps: missing ${need[*]}; run as root to install them" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
go mod download
