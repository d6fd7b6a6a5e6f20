"""The error matrix from a gRPC client of another implementation (Python
grpcio, C-core): every status code with a unicode message, for every call
shape of sample.echo.v1.Echo, plus error details and unknown methods and
services. Prints one JSON list: {case, code, message, received, reason}.

Usage: grpcio_error_matrix.py HOST:PORT PROTO_DIR
"""
import json
import os
import sys
import tempfile

import grpc
from grpc_tools import protoc
from grpc_status import rpc_status
from google.rpc import error_details_pb2


def load_stubs(proto_dir):
    out = tempfile.mkdtemp(prefix="grpcio-matrix-stubs-")
    rc = protoc.main([
        "protoc",
        f"-I{proto_dir}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        os.path.join(proto_dir, "echo.proto"),
    ])
    if rc != 0:
        raise SystemExit(f"protoc failed: {rc}")
    sys.path.insert(0, out)
    import echo_pb2  # noqa: E402
    import echo_pb2_grpc  # noqa: E402
    return echo_pb2, echo_pb2_grpc


def message_for(code):
    return f"ünïcödé ✓ code {code}: 100% sûr"


def run(case, fn):
    """Runs fn, which returns the replies it read before failing."""
    got = {"case": case, "code": 0, "message": "", "received": 0, "reason": ""}
    replies = []
    try:
        for r in fn():
            replies.append(r)
    except grpc.RpcError as e:
        got["code"] = e.code().value[0]
        got["message"] = e.details() or ""
        status = rpc_status.from_call(e)
        if status is not None:
            for d in status.details:
                info = error_details_pb2.ErrorInfo()
                if d.Unpack(info):
                    got["reason"] = info.reason
    got["received"] = len(replies)
    return got


def main():
    addr, proto_dir = sys.argv[1], sys.argv[2]
    pb, pb_grpc = load_stubs(proto_dir)
    out = []
    with grpc.insecure_channel(addr) as channel:
        stub = pb_grpc.EchoStub(channel)
        t = 10
        for code in range(1, 17):
            msg = message_for(code)
            fail = pb.EchoRequest(status_code=code, status_message=msg)
            out.append(run(f"unary/{code}", lambda: [stub.Unary(fail, timeout=t)]))
            out.append(run(f"server_stream_at_once/{code}",
                           lambda: stub.ServerStream(fail, timeout=t)))
            after = pb.EchoRequest(status_code=code, status_message=msg, count=3, fail_after=2)
            out.append(run(f"server_stream_after_data/{code}",
                           lambda: stub.ServerStream(after, timeout=t)))
            out.append(run(f"client_stream/{code}",
                           lambda: [stub.ClientStream(iter([fail, pb.EchoRequest(), pb.EchoRequest()]),
                                                      timeout=t)]))
            out.append(run(f"bidi/{code}",
                           lambda: stub.BidiStream(iter([pb.EchoRequest(message="a"), fail]),
                                                   timeout=t)))
            hf = pb.EchoRequest(status_code=code, status_message=msg, message="headers-first")
            out.append(run(f"headers_first/{code}", lambda: [stub.Unary(hf, timeout=t)]))
            det = pb.EchoRequest(status_code=code, status_message=msg, message="details")
            out.append(run(f"details/{code}", lambda: [stub.Unary(det, timeout=t)]))
        ok = pb.EchoRequest(message="fine")
        out.append(run("ok/unary", lambda: [stub.Unary(ok, timeout=t)]))
        out.append(run("ok/server_stream",
                       lambda: stub.ServerStream(pb.EchoRequest(count=3), timeout=t)))
        ident = (lambda b: b)
        nope = channel.unary_unary("/sample.echo.v1.Echo/Nope",
                                   request_serializer=ident, response_deserializer=ident)
        out.append(run("unknown_method", lambda: [nope(b"", timeout=t)]))
        nosvc = channel.unary_unary("/nope.v1.Nope/Call",
                                    request_serializer=ident, response_deserializer=ident)
        out.append(run("unknown_service", lambda: [nosvc(b"", timeout=t)]))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
