#!/usr/bin/env bash
# make demo: an L2TPv3 pseudowire between two network namespaces, set up
# with l2tpu commands only, traffic across it, and what both ends report.
# Needs root. Everything it makes starts with the prefix below and is
# removed at the end, including the two l2tpu daemons (by PID).
set -euo pipefail
L2TPU=${L2TPU:-$(cd "$(dirname "$0")/.." && pwd)/bin/l2tpu}
P=l2demo$$
A=${P}a B=${P}b
[ "$(id -u)" -eq 0 ] || { echo "make demo needs root (namespaces, TAP devices)" >&2; exit 1; }
[ -x "$L2TPU" ] || { echo "no l2tpu binary at $L2TPU (make build)" >&2; exit 1; }

cleanup() {
	for ns in $A $B; do
		ip netns exec "$ns" "$L2TPU" daemon stop 2>/dev/null || true
		ip netns del "$ns" 2>/dev/null || true
	done
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '%s$ %s\n' "$1" "${*:2}"; ip netns exec "$1" "${@:2}"; }

step "two hosts: namespaces $A and $B joined by veth (192.0.2.1 <-> 192.0.2.2)"
ip netns add $A; ip netns add $B
ip link add ${P}va netns $A type veth peer name ${P}vb netns $B
ip -n $A addr add 192.0.2.1/24 dev ${P}va; ip -n $A link set ${P}va up; ip -n $A link set lo up
ip -n $B addr add 192.0.2.2/24 dev ${P}vb; ip -n $B link set ${P}vb up; ip -n $B link set lo up

step "the pseudowire, exactly as with ip l2tp (the first add starts each namespace's daemon)"
run $A "$L2TPU" add tunnel tunnel_id 3000 peer_tunnel_id 4000 encap udp \
	local 192.0.2.1 remote 192.0.2.2 udp_sport 5000 udp_dport 6000
run $A "$L2TPU" add session name l2tpeth0 tunnel_id 3000 session_id 1000 peer_session_id 2000 \
	cookie 0123456789abcdef peer_cookie fedcba98 seq both
run $B "$L2TPU" add tunnel tunnel_id 4000 peer_tunnel_id 3000 encap udp \
	local 192.0.2.2 remote 192.0.2.1 udp_sport 6000 udp_dport 5000
run $B "$L2TPU" add session name l2tpeth0 tunnel_id 4000 session_id 2000 peer_session_id 1000 \
	cookie fedcba98 peer_cookie 0123456789abcdef seq both

step "addresses on the Ethernet pseudowire interfaces"
run $A ip addr add 203.0.113.1/24 dev l2tpeth0
run $A ip link set l2tpeth0 up
run $B ip addr add 203.0.113.2/24 dev l2tpeth0
run $B ip link set l2tpeth0 up
run $A ip -br link show l2tpeth0

step "ping across the pseudowire"
run $A ping -c 5 -i 0.2 203.0.113.2

for ns in $A $B; do
	step "$ns: l2tpu show tunnel / show session / -s show session (counters)"
	run $ns "$L2TPU" show tunnel
	run $ns "$L2TPU" show session
	run $ns "$L2TPU" -s show session
done
step "$A: the same as JSON"
run $A "$L2TPU" -j -p -s show session

step "clean up: stop both daemons (their interfaces go with them), delete the namespaces"
