"""Sends an otlp source what it must refuse, and checks each answer's status code; then a
valid request, to show the receiver is still serving.

Exits 1 listing every answer that was not the expected one.
"""

import argparse
import os
import sys
import urllib.error
import urllib.request

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts
from opentelemetry.proto.trace.v1 import trace_pb2

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def valid_request(good=1, bad=0):
    req = ts.ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key = "service.name"
    kv.value.string_value = "bad-input-test"
    ss = rs.scope_spans.add()
    for i in range(good + bad):
        s = ss.spans.add()
        s.trace_id = bytes([0x5A] * 15 + [i % 256]) if i < good else b"\x01\x02"
        s.span_id = bytes([0x33] * 7 + [i % 256])
        s.name = "probe"
        s.start_time_unix_nano = 1_767_225_600_000_000_000
        s.end_time_unix_nano = 1_767_225_600_001_000_000
    return req.SerializeToString()


def http(base, method, path, body=b"", content_type="application/x-protobuf", extra=None):
    req = urllib.request.Request(base + path, data=body if method == "POST" else None, method=method)
    if content_type:
        req.add_header("Content-Type", content_type)
    for k, v in (extra or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def grpc_raw(channel, body):
    call = channel.unary_unary(EXPORT, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        return grpc.StatusCode.OK, call(body, timeout=30)
    except grpc.RpcError as e:
        return e.code(), e.details()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--http", required=True, help="http://host:port")
    ap.add_argument("--grpc", required=True, help="host:port")
    ap.add_argument("--max-bytes", type=int, required=True)
    ap.add_argument("--resend-only", action="store_true", help="only send the valid gRPC request again")
    args = ap.parse_args()
    problems = []

    def expect(what, got, want):
        status = "ok" if got == want else "WRONG"
        print(f"{status}: {what}: {got} (expected {want})")
        if got != want:
            problems.append(what)

    if args.resend_only:
        code, _ = grpc_raw(grpc.insecure_channel(args.grpc), valid_request(good=2))
        print(f"resent: {code}")
        sys.stdout.flush()
        os._exit(0 if code == grpc.StatusCode.OK else 1)

    big = b"\x0a" + b"\xff" * (args.max_bytes + 1024)
    expect("HTTP garbage body", http(args.http, "POST", "/v1/traces", b"\xff\xfe not protobuf")[0], 400)
    expect("HTTP JSON body", http(args.http, "POST", "/v1/traces", b"{}", "application/json")[0], 415)
    expect("HTTP text/plain", http(args.http, "POST", "/v1/traces", valid_request(), "text/plain")[0], 415)
    expect("HTTP gzip body", http(args.http, "POST", "/v1/traces", valid_request(), extra={"Content-Encoding": "gzip"})[0], 415)
    expect("HTTP oversized body", http(args.http, "POST", "/v1/traces", big)[0], 413)
    expect("HTTP GET", http(args.http, "GET", "/v1/traces", content_type=None)[0], 405)
    expect("HTTP unknown path", http(args.http, "POST", "/v1/metrics", valid_request())[0], 404)

    channel = grpc.insecure_channel(args.grpc, options=[("grpc.max_send_message_length", -1)])
    expect("gRPC garbage body", grpc_raw(channel, b"\xff\xfe not protobuf")[0], grpc.StatusCode.INTERNAL)
    expect("gRPC oversized body", grpc_raw(channel, big)[0], grpc.StatusCode.OUT_OF_RANGE)

    # Partial success: the span with a 2-byte trace id is refused, the good one stored.
    code, body = http(args.http, "POST", "/v1/traces", valid_request(good=1, bad=1))
    expect("HTTP valid request with one bad span", code, 200)
    resp = ts.ExportTraceServiceResponse.FromString(body) if code == 200 else None
    expect("HTTP partial success rejected_spans", resp.partial_success.rejected_spans if resp else None, 1)
    code, body = grpc_raw(channel, valid_request(good=2))
    expect("gRPC valid request after the bad ones", code, grpc.StatusCode.OK)

    if problems:
        print(f"{len(problems)} wrong answer(s): {problems}")
        sys.stdout.flush()
        os._exit(1)
    print("bad input refused with the right codes; receiver still serving")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
