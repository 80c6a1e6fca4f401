#!/usr/bin/python3
"""Hotpot from Python: open (or create) a dataset, write, commit, read back.

    /usr/bin/python3 clients/python/example.py [ADDRESS]

ADDRESS is a node's gRPC endpoint ("host:port" or "unix:/path/grpc.sock"); default $HOTPOT_GRPC, else the unix
socket of the first node of `hotpot up` (.hotpot/node-1/grpc.sock).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hotpot  # noqa: E402


def main() -> int:
    address = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("HOTPOT_GRPC", "unix:.hotpot/node-1/grpc.sock")
    with hotpot.Client(address) as client:
        with client.open("python-example", create=True, size=1 << 20, replicas=1) as ds:
            message = b"hello from python"
            ds.write(0, message)
            result = ds.commit()
            back = ds.read(0, len(message))
            print(f"dataset {ds.id} ({ds.size} bytes): committed {result.bytes} byte(s) to {result.copies} node(s)")
            print(f"read back: {back.decode()}")
            if back != message:
                print("read back something else", file=sys.stderr)
                return 1
            try:
                ds.read(ds.size, 1)
            except hotpot.HotpotError as e:
                print(f"reading past the end fails with {e.code}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
