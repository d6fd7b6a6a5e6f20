"""N unary Echo calls on one grpcio channel (another gRPC implementation),
64 in flight at a time, to a listener that refuses them all at once
(`deny_unless`). Prints {"codes": {code name: count}} as JSON.

Usage: grpcio_refused_calls.py HOST:PORT PROTO_DIR N
"""
import collections
import json
import sys

import grpc
from stubs import load_stubs


def main():
    addr, proto_dir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    pb, pb_grpc = load_stubs(proto_dir, "echo.proto")
    codes = collections.Counter()
    with grpc.insecure_channel(addr) as channel:
        stub = pb_grpc.EchoStub(channel)
        request = pb.EchoRequest(message="x" * 256)
        done = 0
        while done < n:
            batch = [stub.Unary.future(request, timeout=10) for _ in range(min(64, n - done))]
            for f in batch:
                try:
                    f.result()
                    codes["OK"] += 1
                except grpc.RpcError as e:
                    codes[e.code().name] += 1
            done += len(batch)
    print(json.dumps({"codes": codes}))


if __name__ == "__main__":
    main()
