"""The proto3 JSON mapping of Google's protobuf for Python (json_format, upb)
as the oracle of the gateway's JSON codec: random AllTypes messages (every
scalar at its edges, unicode and control characters, unknown enum numbers,
maps, a oneof, optional, Timestamp, Duration, FieldMask, Struct/Value/
ListValue, wrappers, Empty, Any of several types) are written as JSON by
json_format, with their keys shuffled and spaced out at times, POSTed to the
gateway's EchoTypes route (JSON -> protobuf, an echo backend, protobuf ->
JSON), and the reply is read back by json_format: it must be the same
message, and the reply the same JSON as json_format writes (numbers by
value).

    json_format_oracle.py GATEWAY_ADDR PROTO_DIR GOOGLEAPIS_DIR COUNT SEED [OPTIONS]

OPTIONS: the gateway's [transcoding.json] options that are on, comma-
separated (emit_unpopulated, preserve_proto_field_names, enums_as_ints):
json_format writes the expected reply with the same ones.

Prints one JSON line: {"checked": N, "mismatches": [...]} and exits 1 on a
mismatch."""
import http.client
import json
import math
import random
import struct
import sys

from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf import any_pb2, duration_pb2, struct_pb2, timestamp_pb2, wrappers_pb2

from stubs import load_stubs

PATH = "/sample.library.v1.LibraryService/EchoTypes"

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)
DOUBLES = [0.0, 1.0, -1.5, 0.1, 1e21, 1e-7, 123456789.125, 5e-324,
           1.7976931348623157e308, 2.2250738585072014e-308, 1e300, -3.0e-300,
           float("inf"), float("-inf"), float("nan"), 164.0, 1e15, 1e16, 9007199254740993.0]
TEXT = ["", "a", "é", "日本語", "\U0001F600", "\"", "\\", "/", "\b\f\n\r\t", "\x00\x01\x1f",
        "\x7f", "\u2028\u2029", "<script>", "&amp;", "\ufeff", "a\"b\\c"]


def rand_int(rng, lo_hi):
    lo, hi = lo_hi
    return rng.choice([lo, hi, 0, 1, -1 if lo < 0 else 2, rng.randint(lo, hi),
                       rng.randint(max(lo, -1000), min(hi, 1000))])


def rand_double(rng):
    v = rng.choice(DOUBLES + [rng.uniform(-1e6, 1e6), rng.uniform(-1, 1) * 10 ** rng.randint(-300, 300)])
    # Not -0.0: prost, and so the gateway, leaves a proto3 field of -0.0 off
    # the wire as the default (protobuf's docs say -0 is to be written), and
    # json_format reads the "-0" that it prints for a Value or a wrapper as
    # the integer 0.
    return 0.0 if v == 0 else v


def rand_float32(rng):
    v = rand_double(rng)
    if math.isfinite(v) and abs(v) > 3.4e38:
        v = rng.choice([3.4e38, -3.4e38])
    v = struct.unpack("<f", struct.pack("<f", v))[0]
    return 0.0 if v == 0 else v


def rand_text(rng):
    return "".join(rng.choice(TEXT) for _ in range(rng.randint(0, 4)))


def rand_timestamp(rng, ts):
    ts.seconds = rng.choice([-62135596800, 253402300799, 0, rng.randint(-62135596800, 253402300799)])
    ts.nanos = rng.choice([0, 1, 999999999, 500000000, 123000000, 123456000, rng.randint(0, 999999999)])


def rand_duration(rng, d):
    seconds = rng.choice([0, 1, 315576000000, rng.randint(0, 315576000000), rng.randint(0, 100)])
    nanos = rng.choice([0, 1, 999999999, 500000000, 1000, rng.randint(0, 999999999)])
    sign = rng.choice([1, -1])
    d.seconds, d.nanos = sign * seconds, sign * nanos


def rand_value(rng, v, depth):
    kinds = ["null", "number", "string", "bool"] + (["struct", "list"] if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "null":
        v.null_value = struct_pb2.NULL_VALUE
    elif kind == "number":
        x = rand_double(rng)
        v.number_value = x if math.isfinite(x) else 2.5
    elif kind == "string":
        v.string_value = rand_text(rng)
    elif kind == "bool":
        v.bool_value = rng.random() < 0.5
    elif kind == "struct":
        v.struct_value.SetInParent()  # set, even with no fields
        rand_struct(rng, v.struct_value, depth + 1)
    else:
        v.list_value.SetInParent()
        rand_list(rng, v.list_value, depth + 1)


def rand_struct(rng, s, depth):
    for _ in range(rng.randint(0, 3)):
        rand_value(rng, s.fields[rand_text(rng)], depth)


def rand_list(rng, lv, depth):
    for _ in range(rng.randint(0, 3)):
        rand_value(rng, lv.values.add(), depth)


def rand_shelf(rng, lib, shelf):
    if rng.random() < 0.7:
        shelf.name = rand_text(rng)
    if rng.random() < 0.5:
        shelf.theme = rand_text(rng)
    if rng.random() < 0.5:
        shelf.book_count = rand_int(rng, INT64)


def rand_bytes(rng, most):
    return bytes(rng.randint(0, 255) for _ in range(rng.randint(0, most)))


# AllTypes' scalar fields and wrapper fields, each with its value maker.
SCALARS = [
    ("d", rand_double), ("f", rand_float32),
    ("i32", lambda r: rand_int(r, INT32)), ("i64", lambda r: rand_int(r, INT64)),
    ("u32", lambda r: rand_int(r, UINT32)), ("u64", lambda r: rand_int(r, UINT64)),
    ("s32", lambda r: rand_int(r, INT32)), ("s64", lambda r: rand_int(r, INT64)),
    ("fx32", lambda r: rand_int(r, UINT32)), ("fx64", lambda r: rand_int(r, UINT64)),
    ("sfx32", lambda r: rand_int(r, INT32)), ("sfx64", lambda r: rand_int(r, INT64)),
    ("b", lambda r: r.random() < 0.5), ("s", rand_text), ("by", lambda r: rand_bytes(r, 40)),
]
WRAPPERS = [
    ("w_i64", lambda r: rand_int(r, INT64)), ("w_s", rand_text), ("w_b", lambda r: r.random() < 0.5),
    ("w_by", lambda r: rand_bytes(r, 8)), ("w_d", rand_double), ("w_u32", lambda r: rand_int(r, UINT32)),
]


def rand_message(rng, lib):
    m = lib.AllTypes()
    maybe = lambda: rng.random() < 0.6  # noqa: E731
    for name, make in SCALARS:
        if maybe():
            setattr(m, name, make(rng))
    if maybe():
        m.genre = rng.choice([0, 1, 2, 3, 7, -5, 2**31 - 1])
    if maybe():
        rand_shelf(rng, lib, m.nested)
    for _ in range(rng.randint(0, 3)):
        b = m.books.add()
        b.name, b.title, b.author = rand_text(rng), rand_text(rng), rand_text(rng)
        b.pages = rand_int(rng, INT32)
        if maybe():
            rand_timestamp(rng, b.published)
        b.tags.extend(rand_text(rng) for _ in range(rng.randint(0, 3)))
        b.genre = rng.choice([0, 1, 2, 3, 9])
    m.nums.extend(rand_int(rng, INT32) for _ in range(rng.randint(0, 6)))
    for _ in range(rng.randint(0, 3)):
        m.counts[rand_text(rng)] = rand_int(rng, INT64)
    for _ in range(rng.randint(0, 2)):
        rand_shelf(rng, lib, m.shelves_by_id[rand_int(rng, INT32)])
    choice = rng.choice(["", "text", "number", "shelf"])
    if choice == "text":
        m.choice_text = rand_text(rng)
    elif choice == "number":
        m.choice_number = rand_int(rng, INT32)
    elif choice == "shelf":
        rand_shelf(rng, lib, m.choice_shelf)
    if maybe():
        rand_timestamp(rng, m.ts)
    if maybe():
        rand_duration(rng, m.dur)
    if maybe():
        m.mask.paths.extend(rng.sample(["d", "snake_case_field", "nested.book_count", "books", "w_i64"],
                                       rng.randint(0, 3)))
    if maybe():
        rand_struct(rng, m.st, 0)
    if maybe():
        rand_value(rng, m.val, 0)
    if maybe():
        rand_list(rng, m.list, 0)
    for name, make in WRAPPERS:
        if maybe():
            getattr(m, name).value = make(rng)
    if maybe():
        m.empty.SetInParent()
    if maybe():
        packed = rng.choice(["shelf", "timestamp", "duration", "struct", "int64", "empty", "value"])
        if packed == "shelf":
            inner = lib.Shelf()
            rand_shelf(rng, lib, inner)
        elif packed == "timestamp":
            inner = timestamp_pb2.Timestamp()
            rand_timestamp(rng, inner)
        elif packed == "duration":
            inner = duration_pb2.Duration()
            rand_duration(rng, inner)
        elif packed == "struct":
            inner = struct_pb2.Struct()
            rand_struct(rng, inner, 0)
        elif packed == "int64":
            inner = wrappers_pb2.Int64Value(value=rand_int(rng, INT64))
        elif packed == "value":
            inner = struct_pb2.Value()
            rand_value(rng, inner, 0)
        else:
            from google.protobuf import empty_pb2
            inner = empty_pb2.Empty()
        m.any.Pack(inner)
    if maybe():
        m.opt = rng.choice([0, rand_int(rng, INT32)])
    if maybe():
        m.snake_case_field = rand_text(rng)
    return m


def shuffled(rng, value):
    """The same JSON value with every object's keys in a random order."""
    if isinstance(value, dict):
        items = [(k, shuffled(rng, v)) for k, v in value.items()]
        rng.shuffle(items)
        return dict(items)
    if isinstance(value, list):
        return [shuffled(rng, v) for v in value]
    return value


EMPTY_URL = "type.googleapis.com/google.protobuf.Empty"


def as_python_writes(reply):
    """The reply's JSON with an Any of Empty as json_format writes it: the
    gateway writes {"@type": ..., "value": {}} (as prost-reflect does),
    json_format the message's fields, none (and refuses "value"). The
    gateway reads both."""
    value = json.loads(reply)
    if isinstance(value.get("any"), dict) and value["any"].get("@type") == EMPTY_URL:
        if value["any"].pop("value", None) != {}:
            raise ValueError("an Any of Empty with a value other than {}")
    return value


def canonical(lib, msg):
    """MSG's bytes, with its Any's payload re-encoded deterministically (the
    order of a Struct's entries inside it is not the message's)."""
    msg = lib.AllTypes.FromString(msg.SerializeToString())
    if msg.HasField("any"):
        desc = descriptor_pool.Default().FindMessageTypeByName(msg.any.TypeName())
        inner = message_factory.GetMessageClass(desc)()
        msg.any.Unpack(inner)
        msg.any.value = inner.SerializeToString(deterministic=True)
    return msg.SerializeToString(deterministic=True)


def as_float32(value):
    """VALUE with the float field `f` rounded to 32 bits: a float's shortest
    text is shortest among float32 texts (json_format writes -4.90595e-42
    where -4.906e-42, which the gateway writes, reads as the same float)."""
    f = value.get("f")
    if isinstance(f, (int, float)) and not isinstance(f, bool):
        value["f"] = struct.unpack("<f", struct.pack("<f", f))[0]
    return value


def same(a, b):
    """JSON values equal, numbers by value (NaN never appears: it is a string)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def main():
    addr, proto_dir, googleapis, count, seed = sys.argv[1:6]
    options = set(filter(None, (sys.argv[6] if len(sys.argv) > 6 else "").split(",")))
    printing = {
        "always_print_fields_with_no_presence": "emit_unpopulated" in options,
        "preserving_proto_field_name": "preserve_proto_field_names" in options,
        "use_integers_for_enums": "enums_as_ints" in options,
        "indent": None,
    }
    lib, _ = load_stubs(proto_dir, "library.proto", includes=[googleapis])
    rng = random.Random(int(seed))
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    mismatches = []
    checked = 0
    for i in range(int(count)):
        msg = rand_message(rng, lib)
        proto_names = rng.random() < 0.3
        text = json_format.MessageToJson(msg, preserving_proto_field_name=proto_names, indent=None)
        if rng.random() < 0.5:
            text = json.dumps(shuffled(rng, json.loads(text)), ensure_ascii=rng.random() < 0.5,
                              indent=rng.choice([None, 1]))
        conn.request("POST", PATH, body=text.encode("utf-8"),
                     headers={"content-type": "application/json"})
        resp = conn.getresponse()
        reply = resp.read().decode("utf-8")
        checked += 1
        problem = None
        if resp.status != 200:
            problem = f"HTTP {resp.status}: {reply[:300]}"
        else:
            try:
                written = as_python_writes(reply)
                back = json_format.ParseDict(written, lib.AllTypes())
            except (ValueError, json_format.ParseError) as e:
                problem = f"json_format refuses the reply: {e}"
            else:
                if canonical(lib, back) != canonical(lib, msg):
                    problem = "another message came back"
                elif not same(as_float32(written), as_float32(json.loads(json_format.MessageToJson(msg, **printing)))):
                    problem = "the reply is not the JSON json_format writes"
        if problem:
            mismatches.append({"case": i, "problem": problem, "sent": text[:2000], "reply": reply[:2000],
                               "expected": json_format.MessageToJson(msg, **printing)[:2000]})
            if len(mismatches) >= 5:
                break
    print(json.dumps({"checked": checked, "mismatches": mismatches}))
    sys.exit(1 if mismatches else 0)


if __name__ == "__main__":
    main()
