#!/bin/bash
# Idle sessions in one daemon: the time to add each 1,000 (by -batch), memory
# per session, idle CPU, and the time to remove them all. Run as root:
# scripts/idle-sessions.sh [l2tpu binary] [queues per TAP] [sessions].
set -eu
L=${1:-bin/l2tpu}; Q=${2:-1}; N=${3:-1000}
L=$(readlink -f "$L")
ns=l2idle$$
ip netns add $ns
pid=
batch=$(mktemp)
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
	ip netns exec $ns "$L" daemon stop 2>/dev/null || true
	ip netns del $ns 2>/dev/null || true
	rm -f "$batch"
}
trap cleanup EXIT
ip -n $ns link set lo up
ip -n $ns link add v0 type veth peer name v1
ip -n $ns addr add 192.0.2.1/24 dev v0
ip -n $ns link set v0 up
ip -n $ns link set v1 up
ip netns exec $ns setsid "$L" daemon -tap-queues "$Q" >/dev/null 2>&1 </dev/null &
for _ in $(seq 50); do
	# the daemon is the only process in the namespace
	pid=$(ip netns pids $ns | head -n 1)
	[ -n "$pid" ] && ip netns exec $ns "$L" show tunnel >/dev/null 2>&1 && break
	sleep 0.1
done
ip netns exec $ns "$L" add tunnel tunnel_id 1 peer_tunnel_id 1 local 192.0.2.1 remote 192.0.2.2 udp_sport 1701 udp_dport 1701
sleep 1
rss() { awk '/VmRSS/{print $2}' /proc/$pid/status; }
cpu() { awk '{print $14+$15}' /proc/$pid/stat; }
secs() { awk "BEGIN{printf \"%.1f\", $1 - $2}"; }
r0=$(rss)
chunk=1000
[ "$N" -lt $chunk ] && chunk=$N
times=()
t0=$(date +%s.%N)
for ((i = 1; i <= N; i += chunk)); do
	for ((j = i; j < i + chunk && j <= N; j++)); do echo "add session tunnel_id 1 session_id $j peer_session_id $j name s$j"; done >"$batch"
	c0=$(date +%s.%N)
	ip netns exec $ns "$L" -batch "$batch"
	times+=("$(secs "$(date +%s.%N)" "$c0")")
done
t1=$(date +%s.%N)
sleep 3
r1=$(rss)
c0=$(cpu); sleep 10; c1=$(cpu)
hz=$(getconf CLK_TCK)
echo "$N sessions, $Q queue(s) each: added in $(secs "$t1" "$t0") s (seconds per $chunk: ${times[*]}); RSS $r0 -> $r1 KiB, $(((r1 - r0) * 1024 / N)) bytes a session; idle CPU over 10 s: $(awk "BEGIN{printf \"%.2f\", ($c1 - $c0) * 100 / $hz / 10}")% of a core"
t0=$(date +%s.%N)
kill "$pid"
while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
pid=
t1=$(date +%s.%N)
echo "daemon stopped, its $N interfaces removed, in $(secs "$t1" "$t0") s"
