// RDMA transport tests. Everywhere: a node without /dev/hotpot-rdma gets a clear FAILED_PRECONDITION. Where the
// module is loaded and an RDMA device exists (the qemu guests of scripts/kmod-ci.sh; the development and CI hosts
// cannot load modules): the transport conformance suite, then RDMA cases — pages fetched by one-sided READ carry
// the owner's bytes without its handler running, unexposed regions and ranges are refused, an unauthenticated peer
// gets no QP, a peer gone mid-read is UNAVAILABLE and a restarted peer is read again.
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "transport/rdma_transport.h"
#include "transport_conformance.h"

using namespace hotpot;
using namespace hotpot::transport;
using namespace hotpot_test::conformance;

namespace {

constexpr const char* kDevice = "/dev/hotpot-rdma";
constexpr size_t kPage = 4096;

std::unique_ptr<Transport> MakeRdma(TransportOptions o) {
  Status st;
  auto t = NewRdmaTransport(o, RdmaOptions{}, &st);
  if (!t) std::fprintf(stderr, "%s\n", st.ToString().c_str());
  return t;
}

bool DeviceUsable() {
  Status st;
  return NewRdmaTransport(TransportOptions{}, RdmaOptions{}, &st) != nullptr;
}

const bool kRdma = DeviceUsable();
const bool kRegistered = kRdma && hotpot_test::RegisterTransportConformance("rdma", MakeRdma);

}  // namespace

// A case that needs a usable device: registered (and reported) only where there is one.
#define RDMA_TEST(name)                                                                              \
  static void name();                                                                                \
  static const bool HP_CONCAT(reg_, name) =                                                          \
      kRdma && (::hotpot_test::Registry().push_back({"rdma_" #name, name}), true);                   \
  static void name()

namespace {

RdmaTransport* Rdma(Node* n) { return static_cast<RdmaTransport*>(n->t.get()); }

uint8_t PageByte(uint32_t seed, size_t i) { return uint8_t(seed * 131u + i * 7u + (i >> 10)); }

// A page file: a memfd of `pages` pages, shared-mapped, filled from `seed`.
struct PageFile {
  int fd = -1;
  uint8_t* map = nullptr;
  size_t len = 0;
  PageFile(size_t pages, uint32_t seed) : len(pages * kPage) {
    fd = ::memfd_create("hotpot-rdma-transport-test", MFD_CLOEXEC);
    CHECK(fd >= 0 && ::ftruncate(fd, off_t(len)) == 0);
    map = static_cast<uint8_t*>(::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    CHECK(map != MAP_FAILED);
    for (size_t i = 0; i < len; i++) map[i] = PageByte(seed, i);
  }
  ~PageFile() {
    ::munmap(map, len);
    ::close(fd);
  }
};

Env RdmaEnv() {
  Env e;
  e.factory = MakeRdma;
  e.host = "127.0.0.1";
  return e;
}

}  // namespace

TEST(absent_device_fails_at_start_saying_what_is_missing) {
  Status st;
  RdmaOptions r;
  r.device_path = "/nonexistent/hotpot-rdma";
  auto t = NewRdmaTransport(TransportOptions{}, r, &st);
  CHECK(t == nullptr);
  CHECK(st.code() == Code::kFailedPrecondition);
  CHECK(st.message().find("/nonexistent/hotpot-rdma does not exist") != std::string::npos);
  CHECK(st.message().find("kernel module") != std::string::npos);
  if (!kRdma)
    std::fprintf(stderr, "rdma_transport_test: %s unusable here; the RDMA cases run in the qemu guests "
                         "(scripts/kmod-ci.sh)\n", kDevice);
}

RDMA_TEST(pages_fetched_by_read_carry_the_owners_bytes_and_skip_its_handler) {
  Env env = RdmaEnv();
  auto owner = env.Start(1), reader = env.Start(2);
  PageFile file(16, 5);
  CHECK_OK(Rdma(owner.get())->ExposeRegion(7, file.map, file.len, file.fd));
  CHECK(Rdma(owner.get())->ExposeRegion(7, file.map, file.len, file.fd).code() == Code::kAlreadyExists);
  reader->t->SetPeer(1, owner->address);
  std::vector<uint8_t> page(kPage);
  for (uint32_t p = 0; p < 16; p++) {
    std::fill(page.begin(), page.end(), 0);
    CHECK_OK(Rdma(reader.get())->ReadRemote(1, 7, p * kPage, page.data(), kPage, DeadlineIn(10000ms)));
    for (size_t i = 0; i < kPage; i++) CHECK(page[i] == PageByte(5, p * kPage + i));
  }
  // An unaligned range across pages, as large as the bounce buffer allows here.
  std::vector<uint8_t> big(10 * kPage + 123);
  CHECK_OK(Rdma(reader.get())->ReadRemote(1, 7, 3 * kPage + 17, big.data(), big.size(), DeadlineIn(10000ms)));
  for (size_t i = 0; i < big.size(); i++) CHECK(big[i] == PageByte(5, 3 * kPage + 17 + i));
  // The owner's handler never ran: the connect is the transport's own, the pages came from its device.
  CHECK(owner->handled.load() == 0);
  auto rs = Rdma(reader.get())->RdmaCounters(), os = Rdma(owner.get())->RdmaCounters();
  CHECK(rs.reads == 17 && rs.read_failures == 0 && rs.qps_connected == 1 && os.qps_served == 1);
  // A byte the owner changes is what the next read sees (pinned pages, no copy on the owner's side).
  file.map[5 * kPage] ^= 0xFF;
  CHECK_OK(Rdma(reader.get())->ReadRemote(1, 7, 5 * kPage, page.data(), 1, DeadlineIn(10000ms)));
  CHECK(page[0] == uint8_t(PageByte(5, 5 * kPage) ^ 0xFF));
  // The reserved message type cannot be sent by the engine.
  std::vector<uint8_t> resp;
  CHECK(reader->t->Call(1, kRdmaConnect, nullptr, 0, &resp, DeadlineIn(1000ms)).code() == Code::kInvalidArgument);
}

RDMA_TEST(reads_of_unexposed_regions_and_ranges_are_refused) {
  Env env = RdmaEnv();
  auto owner = env.Start(1), reader = env.Start(2);
  PageFile file(4, 9);
  CHECK_OK(Rdma(owner.get())->ExposeRegion(1, file.map, file.len, file.fd));
  reader->t->SetPeer(1, owner->address);
  std::vector<uint8_t> buf(2 * kPage);
  auto read = [&](uint32_t region, uint64_t off, size_t len) {
    return Rdma(reader.get())->ReadRemote(1, region, off, buf.data(), len, DeadlineIn(10000ms));
  };
  CHECK(read(2, 0, kPage).code() == Code::kNotFound);
  CHECK(read(1, 4 * kPage, 1).code() == Code::kOutOfRange);
  CHECK(read(1, 3 * kPage + 1, kPage).code() == Code::kOutOfRange);
  CHECK(read(1, ~uint64_t(0) - 5, 100).code() == Code::kOutOfRange);
  CHECK(read(1, 0, 0).code() == Code::kInvalidArgument);
  std::vector<uint8_t> huge(RdmaOptions{}.bounce_bytes + 1);
  CHECK(Rdma(reader.get())->ReadRemote(1, 1, 0, huge.data(), huge.size(), DeadlineIn(1000ms)).code() ==
        Code::kInvalidArgument);
  // A region exposed after the reader connected is found (the reader asks again).
  PageFile later(2, 11);
  CHECK_OK(Rdma(owner.get())->ExposeRegion(2, later.map, later.len, later.fd));
  CHECK_OK(read(2, kPage, kPage));
  CHECK(buf[0] == PageByte(11, kPage));
  // A region the owner may not expose: a private mapping of its file.
  void* priv = ::mmap(nullptr, kPage, PROT_READ, MAP_PRIVATE, file.fd, 0);
  CHECK(priv != MAP_FAILED);
  CHECK(Rdma(owner.get())->ExposeRegion(3, priv, kPage, file.fd).code() == Code::kInvalidArgument);
  ::munmap(priv, kPage);
  CHECK_OK(read(1, 0, kPage));  // refusals never broke the connection
}

RDMA_TEST(an_unauthenticated_peer_gets_no_qp) {
  Env env = RdmaEnv();
  auto owner = env.Start(1), intruder = env.Start(3, "another-cluster");
  PageFile file(1, 3);
  CHECK_OK(Rdma(owner.get())->ExposeRegion(1, file.map, file.len, file.fd));
  intruder->t->SetPeer(1, owner->address);
  std::vector<uint8_t> page(kPage);
  CHECK(Rdma(intruder.get())->ReadRemote(1, 1, 0, page.data(), kPage, DeadlineIn(5000ms)).code() ==
        Code::kUnauthenticated);
  CHECK(Rdma(owner.get())->RdmaCounters().qps_served == 0);
}

RDMA_TEST(peer_gone_mid_read_is_unavailable_and_its_restart_is_read_again) {
  Env env = RdmaEnv();
  auto owner = env.Start(1), reader = env.Start(2);
  PageFile file(8, 21);
  CHECK_OK(Rdma(owner.get())->ExposeRegion(1, file.map, file.len, file.fd));
  reader->t->SetPeer(1, owner->address);
  std::vector<uint8_t> page(kPage);
  CHECK_OK(Rdma(reader.get())->ReadRemote(1, 1, 0, page.data(), kPage, DeadlineIn(10000ms)));
  // Reads keep going from another thread while the owner shuts down (its device session, QPs and regions go).
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, unavailable{0}, other{0};
  std::thread t([&] {
    std::vector<uint8_t> buf(kPage);
    while (!stop.load()) {
      Status st = Rdma(reader.get())->ReadRemote(1, 1, kPage, buf.data(), kPage, DeadlineIn(20000ms));
      if (st.ok()) {
        ok++;
      } else if (st.code() == Code::kUnavailable) {
        unavailable++;
        return;
      } else {
        std::fprintf(stderr, "unexpected: %s\n", st.ToString().c_str());
        other++;
        return;
      }
    }
  });
  CHECK(WaitUntil([&] { return ok.load() >= 3; }));
  owner->t->Shutdown();
  CHECK(WaitUntil([&] { return unavailable.load() + other.load() > 0; }, 30000ms));
  stop = true;
  t.join();
  CHECK(unavailable.load() == 1 && other.load() == 0);
  // The owner comes back (a restarted daemon, or the module reloaded): same node id, new address, new bytes.
  auto again = env.Start(1);
  PageFile file2(8, 22);
  CHECK_OK(Rdma(again.get())->ExposeRegion(1, file2.map, file2.len, file2.fd));
  reader->t->SetPeer(1, again->address);
  CHECK_OK(Rdma(reader.get())->ReadRemote(1, 1, 2 * kPage, page.data(), kPage, DeadlineIn(10000ms)));
  for (size_t i = 0; i < kPage; i++) CHECK(page[i] == PageByte(22, 2 * kPage + i));
  CHECK(Rdma(reader.get())->RdmaCounters().qps_connected == 2);
}

// More readers than read slots (4): each gets its own page's bytes, whoever reaps the completions.
RDMA_TEST(concurrent_readers_get_their_own_pages) {
  Env env = RdmaEnv();
  auto owner = env.Start(1), reader = env.Start(2);
  PageFile file(32, 17);
  CHECK_OK(Rdma(owner.get())->ExposeRegion(4, file.map, file.len, file.fd));
  reader->t->SetPeer(1, owner->address);
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (uint32_t th = 0; th < 8; th++) {
    threads.emplace_back([&, th] {
      std::vector<uint8_t> page(kPage);
      for (uint32_t i = 0; i < 25; i++) {
        uint32_t p = (th * 7 + i * 3) % 32;
        if (!Rdma(reader.get())->ReadRemote(1, 4, p * kPage, page.data(), kPage, DeadlineIn(20000ms)).ok()) return;
        bool same = true;
        for (size_t b = 0; b < kPage; b++) same = same && page[b] == PageByte(17, p * kPage + b);
        if (same) good++;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(good.load() == 200);
}

TEST_MAIN("rdma_transport_test")
