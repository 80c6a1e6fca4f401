/* Hotpot C example: open (or create) a dataset, write a message at offset 0, commit it to N nodes, read it back.
 *
 *   hotpot_example <dataset> [replicas] [socket]
 *
 * socket: argv[3], else $HOTPOT_SOCKET, else /run/hotpot/node.sock. Exit status 0 on success. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hotpot.h"

static int fail(const char* what, int rc) {
  fprintf(stderr, "hotpot_example: %s failed: %s (%s)\n", what, hotpot_status_name(rc), hotpot_last_error());
  return 1;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s <dataset> [replicas] [socket]\n", argv[0]);
    return 2;
  }
  const char* name = argv[1];
  uint32_t replicas = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 10) : 0;
  const char* socket_path = argc > 3 ? argv[3] : NULL;

  hotpot_conn* conn = NULL;
  int rc = hotpot_connect(socket_path, &conn);
  if (rc != 0) return fail("connect", rc);

  hotpot_create_opts create = {1 << 20, HOTPOT_MODE_MRMW, replicas > 0 ? replicas : 1};
  hotpot_dataset* ds = NULL;
  rc = hotpot_open(conn, name, &create, &ds);
  if (rc != 0) return fail("open", rc);
  hotpot_dataset_info info;
  hotpot_dataset_info(ds, &info);
  printf("dataset %s: id %llu, %llu bytes, mode %s, %u replicas by default\n", name, (unsigned long long)info.id,
         (unsigned long long)info.size, info.mode == HOTPOT_MODE_MRSW ? "MRSW" : "MRMW", info.replicas);

  void* addr = NULL;
  rc = hotpot_map(ds, 0, 0, &addr);
  if (rc != 0) return fail("map", rc);
  char* mem = (char*)addr;

  const char* msg = "hello from the hotpot C example";
  memcpy(mem, msg, strlen(msg) + 1); /* private until committed */

  hotpot_commit_result res;
  rc = hotpot_commit(ds, replicas, &res);
  if (rc == HOTPOT_ABORTED) {
    for (uint32_t i = 0; i < res.n_conflicts && i < HOTPOT_MAX_CONFLICTS; i++)
      fprintf(stderr, "conflict at %llu (+%u)\n", (unsigned long long)res.conflicts[i].offset, res.conflicts[i].len);
  }
  if (rc != 0) return fail("commit", rc);
  printf("committed: %u copies, %llu pages, %llu ranges, %llu bytes\n", res.copies, (unsigned long long)res.pages,
         (unsigned long long)res.ranges, (unsigned long long)res.bytes);

  /* A snapshot read: loads between begin and end saw every commit whole, or end says ABORTED and we read again. */
  char copy[64];
  hotpot_snapshot snap;
  int tries = 0;
  do {
    rc = hotpot_snapshot_begin(ds, &snap);
    if (rc != 0) return fail("snapshot_begin", rc);
    memcpy(copy, mem, sizeof copy);
    tries++;
  } while ((rc = hotpot_snapshot_end(ds, &snap)) == HOTPOT_ABORTED && tries < 100);
  if (rc != 0) return fail("snapshot_end", rc);
  copy[sizeof copy - 1] = 0;
  printf("read back: \"%s\" (snapshot, %d run%s)\n", copy, tries, tries == 1 ? "" : "s");
  if (strcmp(copy, msg) != 0) {
    fprintf(stderr, "hotpot_example: read-back mismatch\n");
    return 1;
  }
  rc = hotpot_close(ds);
  if (rc != 0) return fail("close", rc);
  hotpot_disconnect(conn);
  return 0;
}
