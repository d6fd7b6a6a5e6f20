"""A gRPC server from another implementation (Python grpcio), used by the
reflection tests: it serves a service of its own, pyrefl.v1.Greeter, plus
gRPC server reflection (grpcio-reflection, v1alpha only). The proto is
written and compiled at start (grpc_tools.protoc); it imports a well-known
type so that reflection clients must fetch an import.

Usage: reflection_server.py
Binds 127.0.0.1 on a free port, prints the port on one line, then serves
until its standard input closes (or it is killed).
"""
import os
import sys
import tempfile
from concurrent import futures

import grpc
from grpc_reflection.v1alpha import reflection
from stubs import load_stubs

PROTO = """
syntax = "proto3";
package pyrefl.v1;

import "google/protobuf/timestamp.proto";

// Says hello, from Python.
service Greeter {
  rpc SayHello(HelloRequest) returns (HelloReply);
}

message HelloRequest {
  string name = 1;
}

message HelloReply {
  string message = 1;
  google.protobuf.Timestamp at = 2;
}
"""


def load_greeter():
    src = tempfile.mkdtemp(prefix="pyrefl-")
    with open(os.path.join(src, "greeter.proto"), "w") as f:
        f.write(PROTO)
    return load_stubs(src, "greeter.proto")


def main():
    pb, pb_grpc = load_greeter()

    class Greeter(pb_grpc.GreeterServicer):
        def SayHello(self, request, context):
            context.send_initial_metadata((("x-server-id", "py"),))
            reply = pb.HelloReply(message=f"hello {request.name}")
            reply.at.GetCurrentTime()
            return reply

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_GreeterServicer_to_server(Greeter(), server)
    reflection.enable_server_reflection(
        (pb.DESCRIPTOR.services_by_name["Greeter"].full_name, reflection.SERVICE_NAME),
        server,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.read()
    server.stop(grace=None)


if __name__ == "__main__":
    main()
