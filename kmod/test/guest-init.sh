#!/bin/busybox sh
# /init of the test guests (scripts/kmod-ci.sh): load Soft-RoCE and hotpot_rdma.ko, bring up rxe0 on the
# virtio-net link to the other guest, run hotpot_rdma_test in the role the kernel command line names, unload the
# module and power off. Kernel command line: hotpot_role=server|client hotpot_ip=A.B.C.D [hotpot_peer=A.B.C.D]
# [hotpot_iters=N] (the server is told its peer too, for the engine pair). Every line the host checks starts with "HOTPOT".
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p"; }
ROLE=$(arg hotpot_role) IP=$(arg hotpot_ip) PEER=$(arg hotpot_peer) ITERS=$(arg hotpot_iters)
check() { if [ "$1" = 0 ]; then echo "HOTPOT ok   $2"; else echo "HOTPOT FAIL $2"; fi; }

# No duplicate-address detection, set before eth0 exists: a tentative link-local address makes Soft-RoCE fail
# the first packets with "local QP operation error" (no route from it).
echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad
echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad
for m in crc32_generic rdma_rxe virtio_pci virtio_net virtio_rng; do modprobe $m || echo "HOTPOT: modprobe $m failed"; done
# The tests' handshakes need random nonces: wait (bounded) until virtio-rng has seeded the kernel's generator, so a
# blocking getrandom() in a fresh guest cannot eat a 2 s handshake timeout.
for i in $(seq 1 100); do dmesg | grep -q "crng init done" && break; sleep 0.1; done
echo "HOTPOT random: $(dmesg | grep -o 'crng init done' || echo 'crng not ready after 10 s')"
insmod /hotpot_rdma.ko
check $? "[$ROLE] hotpot_rdma.ko loads on $(uname -r)"
echo 0 > /proc/sys/net/ipv6/conf/eth0/accept_dad
ip link set lo up
ip link set eth0 up
ip addr add "$IP/24" dev eth0
rdma link add rxe0 type rxe netdev eth0
check $? "[$ROLE] rxe0 on eth0"
for i in $(seq 1 50); do grep -q ACTIVE /sys/class/infiniband/rxe0/ports/1/state 2>/dev/null && break; sleep 0.1; done
for i in $(seq 1 50); do ip -6 addr show dev eth0 scope link | grep -q inet6 && ! ip -6 addr show dev eth0 | grep -q tentative && break; sleep 0.1; done
echo "HOTPOT eth0: $(ip -6 addr show dev eth0 scope link | grep inet6)"

# Node 1 (server guest) and node 2 (client guest) of one dataset, over the module across the link: each READs the
# other's page, node 2 commits into node 1's page, node 1 gets node 2's next commit by push (engine_test).
pair() { # self addrs
  HOTPOT_RDMA_PAIR_SELF=$1 HOTPOT_RDMA_PAIR_ADDRS=$2 HOTPOT_TEST_FILTER=RdmaDevicePair /engine_test > /tmp/pair.log 2>&1
  prc=$?
  sed "s/^/HOTPOT pair: /" /tmp/pair.log | grep -E "OK|CHECK|cases passed|Abort|never saw|rdma" | tail -20
  grep '^measure:' /tmp/pair.log
  grep -q "engine: 1 cases passed" /tmp/pair.log
  check $? "[$ROLE] engine node $1 of 2 across the guests: pages READ from the other guest, commits to its owner and pushes"
  [ $prc = 0 ] || tail -30 /tmp/pair.log | sed 's/^/HOTPOT pair tail: /'
}

if [ "$ROLE" = server ]; then
  /hotpot_rdma_test server 7000
  check $? "[$ROLE] hotpot_rdma_test exits 0"
  # The engine's transport over the module: conformance suite + RDMA cases, both nodes in this guest (rxe loopback).
  /rdma_transport_test > /tmp/rt.log 2>&1
  rc=$?
  sed 's/^/HOTPOT rdma_transport_test: /' /tmp/rt.log | grep -E "OK|CHECK|cases passed|unexpected|Abort" | tail -40
  check $rc "[$ROLE] rdma_transport_test (conformance suite over rdma + RDMA cases) exits 0"
  # The engine over the module: three nodes (engines) fetch committed pages by one-sided READ and commit, bytes
  # checked; then fetch and commit latency over rdma beside tcp (engine_test's RdmaDevice cases; pools in /dev/shm).
  mkdir -p /dev/shm && mount -t tmpfs -o size=256m tmpfs /dev/shm
  HOTPOT_TEST_LOG=1 HOTPOT_TEST_FILTER=RdmaDevice /engine_test > /tmp/et.log 2>&1
  rc=$?
  sed "s/^/HOTPOT engine_test: /" /tmp/et.log | grep -E "OK|CHECK|cases passed|Abort|FAILED|node [0-9]|rdma" | tail -40
  grep '^measure:' /tmp/et.log
  grep -q "engine: 2 cases passed" /tmp/et.log
  check $? "[$ROLE] engine_test: pages fetched by RDMA READ and commits over the module (both device cases ran)"
  check $rc "[$ROLE] engine_test RdmaDevice cases exit 0"
  [ $rc = 0 ] || dmesg | tail -30 | sed 's/^/HOTPOT dmesg tail: /'
  pair 1 "$IP:7100,$PEER:7100"
else
  /hotpot_rdma_test client "$PEER" 7000 "${ITERS:-1000}" rxe0
  check $? "[$ROLE] hotpot_rdma_test exits 0"
  mkdir -p /dev/shm && mount -t tmpfs -o size=256m tmpfs /dev/shm
  # hotpot_rdma_test ends by deleting rxe0 under an open session: add it again for the engine.
  rdma link show rxe0 > /dev/null 2>&1 || rdma link add rxe0 type rxe netdev eth0
  for i in $(seq 1 50); do grep -q ACTIVE /sys/class/infiniband/rxe0/ports/1/state 2>/dev/null && break; sleep 0.1; done
  pair 2 "$PEER:7100,$IP:7100"
fi
echo "HOTPOT counters: $(cd /sys/class/misc/hotpot-rdma/counters && for f in *; do printf '%s=%s ' $f $(cat $f); done)"
rmmod hotpot_rdma
check $? "[$ROLE] hotpot_rdma unloads after the test"
dmesg | grep -E "BUG|WARNING|Oops|leaking|hotpot_rdma" | sed 's/^/HOTPOT dmesg: /'
! dmesg | grep -q -E "BUG|WARNING|Oops|leaking"
check $? "[$ROLE] no kernel warning, oops or leak"
echo "HOTPOT done"
poweroff -f
