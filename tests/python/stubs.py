"""Generates and imports the grpcio stubs of one sample proto at run time
(grpc_tools' protoc, into a temporary directory), for the Python clients
and servers used by the integration tests."""
import importlib
import os
import sys
import tempfile

import grpc_tools
from grpc_tools import protoc


def load_stubs(proto_dir, proto_file, includes=()):
    """Returns the (messages, services) modules of PROTO_DIR/PROTO_FILE;
    the well-known types (google/protobuf/*.proto) resolve as imports, and
    so do the files under INCLUDES (their Python modules must be importable:
    google/api's come with googleapis-common-protos)."""
    out = tempfile.mkdtemp(prefix="grpcio-stubs-")
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main([
        "protoc",
        f"-I{proto_dir}",
        f"-I{well_known}",
        *(f"-I{d}" for d in includes),
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        os.path.join(proto_dir, proto_file),
    ])
    if rc != 0:
        raise SystemExit(f"protoc failed: {rc}")
    sys.path.insert(0, out)
    stem = os.path.splitext(proto_file)[0]
    return importlib.import_module(f"{stem}_pb2"), importlib.import_module(f"{stem}_pb2_grpc")
