"""A gRPC client from another implementation (Python grpcio), used by the
integration tests: a unary GetCodename and a bidi KeepGettingCodenames with a
category switch, through the gateway. Prints one JSON object.

Usage: grpcio_client.py HOST:PORT PROTO_DIR
"""
import json
import queue
import sys

import grpc
from stubs import load_stubs


def main():
    addr, proto_dir = sys.argv[1], sys.argv[2]
    pb, pb_grpc = load_stubs(proto_dir, "codename.proto")
    result = {}
    with grpc.insecure_channel(addr) as channel:
        stub = pb_grpc.CodenameCreatorStub(channel)
        reply, call = stub.GetCodename.with_call(pb.NameRequest(category="science"), timeout=10)
        result["unary"] = reply.name
        result["unary_server"] = dict(call.initial_metadata()).get("x-server-id")

        requests = queue.Queue()
        requests.put(pb.NameRequest(category="animals"))

        def request_iter():
            while True:
                item = requests.get()
                if item is None:
                    return
                yield item

        names = []
        stream = stub.KeepGettingCodenames(request_iter(), timeout=20)
        for reply in stream:
            names.append(reply.name)
            if len(names) == 3:
                requests.put(pb.NameRequest(category="space"))
            if len(names) >= 8:
                requests.put(None)
                break
        stream.cancel()
        result["stream"] = names
    print(json.dumps(result))


if __name__ == "__main__":
    main()
