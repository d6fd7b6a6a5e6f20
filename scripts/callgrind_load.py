"""Load for scripts/callgrind-per-call.sh: KIND ADDR N makes N unary Echo
calls through the gateway at ADDR, as grpcio calls (KIND grpc) or JSON POSTs
over HTTP/1.1 keep-alive (KIND json), from 4 threads."""
import http.client
import json
import os
import sys
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
import grpc  # noqa: E402
from stubs import load_stubs  # noqa: E402

kind, addr, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
pb, pb_grpc = load_stubs(os.path.join(ROOT, "sample-services", "proto"), "echo.proto")
def grpc_worker(k):
    ch = grpc.insecure_channel(addr)
    stub = pb_grpc.EchoStub(ch)
    for _ in range(k):
        stub.Unary(pb.EchoRequest(message="x" * 64))
def json_worker(k):
    host, port = addr.split(":")
    c = http.client.HTTPConnection(host, int(port))
    body = json.dumps({"message": "x" * 64})
    for _ in range(k):
        c.request("POST", "/sample.echo.v1.Echo/Unary", body, {"content-type": "application/json"})
        r = c.getresponse(); r.read()
        assert r.status == 200, r.status
w = grpc_worker if kind == "grpc" else json_worker
ts = [threading.Thread(target=w, args=(n // 4,)) for _ in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
