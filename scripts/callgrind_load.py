"""Load for scripts/callgrind-per-call.sh: KIND ADDR N makes N unary Echo
calls through the gateway at ADDR, as grpcio calls (KIND grpc) or JSON POSTs
over HTTP/1.1 keep-alive (KIND json: Echo/Unary; KIND nested: the bench's
json-unary-nested body to /v1/types:echo), from 4 threads."""
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
def nested_body(books=4):
    """bench/src/scenarios.rs's nested_json(4): 1,216 bytes, keys sorted as
    serde_json writes a `json!` object."""
    return json.dumps({
        "d": 3.5, "f": 1.25, "i32": -42, "i64": "-9000000000", "u32": 42, "u64": "18000000000",
        "s32": -7, "s64": "-70000000000", "fx32": 7, "fx64": "70000000000",
        "sfx32": -8, "sfx64": "-80000000000", "b": True,
        "s": "a string field of moderate length", "by": "AAECAwQFBgcICQoLDA0ODw==",
        "genre": "FICTION",
        "nested": {"name": "shelves/1", "theme": "science", "bookCount": "4"},
        "books": [{"name": f"shelves/1/books/{i}", "title": f"Benchmark volume {i}",
                   "author": "A. N. Author", "pages": 100 + i, "published": "2001-02-03T04:05:06Z",
                   "tags": ["bench", "nested", "repeated"], "genre": "SCIENCE"}
                  for i in range(1, books + 1)],
        "nums": [1, 2, 3, 5, 8, 13, 21, 34, 55, 89],
        "counts": {"alpha": "1", "beta": "2"},
        "ts": "2024-01-02T03:04:05Z",
        "dur": "1.500s",
        "snakeCaseField": "snake",
    }, separators=(",", ":"), sort_keys=True)
def json_worker(k):
    host, port = addr.split(":")
    c = http.client.HTTPConnection(host, int(port))
    if kind == "nested":
        path, body = "/v1/types:echo", nested_body()
    else:
        path, body = "/sample.echo.v1.Echo/Unary", json.dumps({"message": "x" * 64})
    for _ in range(k):
        c.request("POST", path, body, {"content-type": "application/json"})
        r = c.getresponse(); r.read()
        assert r.status == 200, r.status
w = grpc_worker if kind == "grpc" else json_worker
ts = [threading.Thread(target=w, args=(n // 4,)) for _ in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
