"""A gRPC backend of another implementation (Python grpcio, C-core) for the
integration tests: sample.echo.v1.Echo, answering every call shape with the
status the request asks for, so the error path through the gateway is
tested against a server that is not tonic.

- `status_code` != 0: fail with that code and `status_message`
  (unary: before any message; server stream: after `fail_after` messages,
  or at once; client stream: after reading the whole stream; bidi: at the
  first request that carries a code).
- `message == "details"`: the status also carries `grpc-status-details-bin`
  (a google.rpc.Status with an ErrorInfo), through grpcio-status.
- `message == "traceparent"` (unary): the reply's message is the call's
  `traceparent` metadata ("" without one).
- `message == "headers-first"`: initial metadata is sent before the status,
  so the answer is HEADERS then trailers with no DATA in between.

Also `mirror.v1.Mirror/Grouped` (server streaming, raw bytes, any request):
two `mirror.v1.Holder` messages whose `payload` is an `Any` of
`mirror.v1.Grouped { G { x: 5 } }` (a proto2 group: a type the gateway's
codec leaves to prost-reflect), written by hand (the test registers the
protos with the gateway).

Usage: grpcio_echo_server.py PROTO_DIR; prints the bound port on the first
line of standard output, then serves until killed.
"""
import sys
from concurrent import futures

import grpc
from grpc_status import rpc_status
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from stubs import load_stubs

CODES = {c.value[0]: c for c in grpc.StatusCode}


pb, pb_grpc = load_stubs(sys.argv[1], "echo.proto")


def fail(req, context):
    if req.message == "details":
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.ErrorInfo(
            reason="PY_REASON", domain="grpcio.example", metadata={"code": str(req.status_code)}))
        st = status_pb2.Status(code=req.status_code, message=req.status_message, details=[detail])
        context.abort_with_status(rpc_status.to_status(st))
    if req.message == "headers-first":
        context.send_initial_metadata((("x-server-id", "py"),))
    context.abort(CODES[req.status_code], req.status_message)


class Echo(pb_grpc.EchoServicer):
    def Unary(self, req, context):
        if req.status_code:
            fail(req, context)
        if req.message == "traceparent":
            # The W3C trace context the call arrived with.
            seen = dict(context.invocation_metadata()).get("traceparent", "")
            return pb.EchoResponse(message=seen, server_id="py")
        return pb.EchoResponse(message=req.message, server_id="py",
                               received_bytes=len(req.payload))

    def ServerStream(self, req, context):
        for i in range(req.count):
            if req.status_code and req.fail_after and i == req.fail_after:
                fail(req, context)
            yield pb.EchoResponse(message=req.message, server_id="py", seq=i)
        if req.status_code:
            fail(req, context)

    def ClientStream(self, reqs, context):
        n = 0
        first = None
        for r in reqs:
            first = first or r
            n += 1
        if first is not None and first.status_code:
            fail(first, context)
        return pb.EchoResponse(server_id="py", seq=n)

    def BidiStream(self, reqs, context):
        for i, r in enumerate(reqs):
            if r.status_code:
                fail(r, context)
            yield pb.EchoResponse(message=r.message, server_id="py", seq=i)

    def Slow(self, req, context):
        return pb.EchoResponse(server_id="py")


def grouped_holder():
    """mirror.v1.Holder { payload: Any(mirror.v1.Grouped { G { x: 5 } }) }."""
    url = b"type.googleapis.com/mirror.v1.Grouped"
    grouped = b"\x0b\x10\x05\x0c"  # group G (1) { x (2) = 5 }
    any_ = b"\x0a" + bytes([len(url)]) + url + b"\x12" + bytes([len(grouped)]) + grouped
    return b"\x0a" + bytes([len(any_)]) + any_


def grouped(request, context):
    for _ in range(2):
        yield grouped_holder()


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_EchoServicer_to_server(Echo(), server)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "mirror.v1.Mirror", {"Grouped": grpc.unary_stream_rpc_method_handler(grouped)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
