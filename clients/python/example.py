#!/usr/bin/env python3
"""Hotpot from Python: create a dataset, write, commit, read back, a counter transaction, list, remove.

    python3 example.py [ADDRESS]

With the package installed (docs/python.md), run it in the directory where `hotpot up` runs: the client finds the
node, the dispatcher and the TLS files through ./.hotpot/cluster.json. ADDRESS overrides the node's gRPC endpoint
("host:port" or "unix:/path/grpc.sock"; default $HOTPOT_GRPC, else the cluster file's first node).
"""

import sys

import hotpot

NAME = "python-example"


def main() -> int:
    address = sys.argv[1] if len(sys.argv) > 1 else None
    with hotpot.Client(address) as client:
        try:
            client.create(NAME, size=1 << 20)
        except hotpot.AlreadyExistsError:
            pass
        with client.open(NAME) as ds:
            message = b"hello from python"
            ds.write(0, message)
            result = ds.commit()
            back = ds.read(0, len(message))
            print(f"dataset {ds.id} ({ds.size} bytes): committed {result.bytes} byte(s) to {result.copies} node(s)")
            print(f"read back: {back.decode()}")
            if back != message:
                print("read back something else", file=sys.stderr)
                return 1

            # A read-modify-write that is retried when another commit changed the counter meanwhile.
            for attempt in ds.transaction():
                with attempt:
                    n = int.from_bytes(ds.read(4096, 8), "little")
                    ds.write(4096, (n + 1).to_bytes(8, "little"))
            print(f"counter: {n + 1} (after {attempt.number + 1} attempt(s))")

            try:
                ds.read(ds.size, 1)
            except hotpot.OutOfRangeError as e:
                print(f"reading past the end fails with {e.code}")
        print("datasets:", ", ".join(d.name for d in client.ls()))
        client.rm(NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
