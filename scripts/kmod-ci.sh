#!/usr/bin/env bash
# The kernel module's CI step, from a fresh Debian 12 machine as root (the host itself cannot load modules):
# installs Debian's kernel headers and qemu, builds kmod/hotpot_rdma.ko against linux-headers-amd64 (6.1) and the
# static test program, packs an initramfs with Debian's own kernel modules (Soft-RoCE), boots two qemu TCG guests
# joined by a virtual link and runs kmod/test/hotpot_rdma_test between them (server in one, client in the other).
# Ends with "kmod: N passed, N failed"; exit status 0 only when nothing failed.
#
#   bash scripts/kmod-ci.sh [WORKDIR]     # WORKDIR default ${TMPDIR:-/tmp}/hotpot-kmod-ci; ITERS=N (default 1000)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-${TMPDIR:-/tmp}/hotpot-kmod-ci}
iters=${ITERS:-1000}
t0=$(date +%s)
stamp() { echo "[kmod-ci +$(($(date +%s) - t0))s] $*"; }

need=()
for p in linux-headers-amd64 qemu-system-x86 busybox-static cpio kmod iproute2 gcc g++ make libc6-dev libssl-dev; do
  dpkg -s "$p" > /dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" > /dev/null
fi
# The kernel the headers are for (not the running one): linux-headers-amd64 depends on linux-headers-<release>.
kver=$(dpkg-query -W -f='${Depends}' linux-headers-amd64 | grep -o 'linux-headers-[^ ,]*' | head -1)
kver=${kver#linux-headers-}
stamp "packages ready; guest kernel $kver"

rm -rf "$work/build" "$work/stage"
mkdir -p "$work/build" "$work/stage"
# The image package is only unpacked (kernel + modules for the guests), never installed on the host.
if [ ! -f "$work/kroot/boot/vmlinuz-$kver" ]; then
  rm -rf "$work/kroot" "$work"/linux-image-*.deb
  (cd "$work" && apt-get download -qq "linux-image-$kver" 2> /dev/null && dpkg -x linux-image-"$kver"_*.deb kroot)
  depmod -b "$work/kroot" "$kver"
fi
stamp "linux-image-$kver unpacked"

cp "$root"/kmod/Kbuild "$root"/kmod/Makefile "$root"/kmod/*.c "$root"/kmod/*.h "$work/build/"
make -s -C "$work/build" KDIR="/usr/src/linux-headers-$kver" > "$work/build.log" 2>&1 || {
  cat "$work/build.log"
  echo "kmod: 0 passed, 1 failed"
  exit 1
}
gcc -O2 -Wall -Wextra -Werror -static -o "$work/build/hotpot_rdma_test" "$root/kmod/test/hotpot_rdma_test.c"
# The engine's RDMA transport tests (conformance suite + RDMA cases) and the engine tests (their RdmaDevice cases:
# pages fetched by READ, commits, latency beside tcp); reuses native/test's objects when the native test step built
# them already.
make -s -C "$root/native/test" -j2 out/rel/rdma_transport_test out/rel/engine_test
stamp "hotpot_rdma.ko, hotpot_rdma_test, rdma_transport_test and engine_test built"

# initramfs: busybox, the modules Soft-RoCE and virtio-net need (with their dependencies, from modules.dep),
# the module under test, the test programs and iproute2's rdma tool with their libraries.
st=$work/stage
mkdir -p "$st"/{bin,proc,sys,dev,tmp,lib64,lib/x86_64-linux-gnu,lib/modules/"$kver"}
cp /bin/busybox "$st/bin/"
mods=$work/kroot/lib/modules/$kver
for m in crc32_generic rdma_rxe virtio_pci virtio_net virtio_rng; do
  # file names use '-' or '_' (virtio-rng.ko); modprobe takes either
  grep -E "/${m//_/[-_]}\.ko(\.[a-z]+)?:" "$mods/modules.dep" | tr -d ':' | tr ' ' '\n' ||
    { echo "kmod: module $m not in linux-image-$kver" >&2; exit 1; }
done | sort -u | while read -r f; do
  [ -n "$f" ] && install -D -m 0644 "$mods/$f" "$st/lib/modules/$kver/$f"
done
cp "$mods"/modules.order "$mods"/modules.builtin "$mods"/modules.builtin.modinfo "$st/lib/modules/$kver/" 2> /dev/null || true
depmod -b "$st" "$kver"
cp "$work/build/hotpot_rdma.ko" "$work/build/hotpot_rdma_test" "$st/"
cp "$root/kmod/test/guest-init.sh" "$st/init"
cp "$root/native/test/out/rel/rdma_transport_test" "$st/"
strip -o "$st/engine_test" "$root/native/test/out/rel/engine_test"  # 34 MB of debug info otherwise
cp "$(command -v rdma)" "$st/bin/rdma"
for b in "$(command -v rdma)" "$st/rdma_transport_test" "$st/engine_test"; do
  for l in $(ldd "$b" | awk '/=>/{print $3}'); do cp -n "$l" "$st/lib/x86_64-linux-gnu/"; done
done
cp /lib64/ld-linux-x86-64.so.2 "$st/lib64/"
(cd "$st" && find . | cpio -o -H newc --quiet | gzip -1 > "$work/initramfs.cpio.gz")
cp "$work/kroot/boot/vmlinuz-$kver" "$work/vmlinuz"
stamp "initramfs built ($(du -k "$work/initramfs.cpio.gz" | cut -f1) KiB)"

# Two guests, one vCPU each (TCG: the host has no usable KVM), virtio-net joined by a UDP datagram link on
# 127.0.0.1 (ports from this shell's pid so parallel runs do not collide).
port=$((30000 + ($$ % 10000) * 2))
guest() { # name role ip mac local_port remote_port [peer]
  timeout 420 qemu-system-x86_64 -accel tcg -smp 1 -m 512 -nographic -no-reboot -kernel "$work/vmlinuz" \
    -initrd "$work/initramfs.cpio.gz" \
    -netdev "dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port=$5,remote.type=inet,remote.host=127.0.0.1,remote.port=$6" \
    -device "virtio-net-pci,romfile=,netdev=n0,mac=$4" -device virtio-rng-pci \
    -append "console=ttyS0 panic=-1 quiet loglevel=3 hotpot_role=$2 hotpot_ip=$3 hotpot_peer=${7:-} hotpot_iters=$iters" \
    < /dev/null 2>&1 | tr -d '\r' > "$work/$1.log"
}
guest server server 10.77.0.1 52:54:00:77:00:01 "$port" $((port + 1)) 10.77.0.2 &
srv=$!
guest client client 10.77.0.2 52:54:00:77:00:02 $((port + 1)) "$port" 10.77.0.1 &
cli=$!
wait "$srv" || true
wait "$cli" || true
stamp "guests done (logs: $work/server.log $work/client.log)"

pass=0 fail=0
for g in server client; do
  log=$work/$g.log
  grep -E '^(ok|FAIL) |^HOTPOT (ok|FAIL)|^measure:|^(client|server): ' "$log" | sed "s/^/[$g] /"
  p=$(grep -cE '^ok |^HOTPOT ok ' "$log" || true)
  f=$(grep -cE '^FAIL |^HOTPOT FAIL ' "$log" || true)
  # a guest that never reached its end (crash, hang, timeout) fails
  grep -q '^HOTPOT done' "$log" || { f=$((f + 1)); echo "[$g] FAIL guest did not finish; tail of its log:"; tail -20 "$log"; }
  pass=$((pass + p)) fail=$((fail + f))
done
stamp "total"
echo "kmod: $pass passed, $fail failed"
[ "$fail" = 0 ]
