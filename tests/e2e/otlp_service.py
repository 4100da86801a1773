"""A stand-in for a platform service: the official OpenTelemetry SDK sending spans to
paystream's otlp source with the OTLP exporter (gRPC or HTTP/protobuf).

It writes every span it ended to --out as JSON (ids, parent, name, kind, status, attributes),
and exits non-zero unless every export was acknowledged. With --parents, each trace continues
a (trace_id, span_id) from that JSON file, as a service called by the producer of an event
would: that is what makes `payments JOIN spans ON trace_id` meaningful.
"""

import argparse
import json
import os
import sys

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags


class Recording(SpanExporter):
    """Wraps the real exporter and remembers what it acknowledged."""

    def __init__(self, inner):
        self.inner = inner
        self.ok = []
        self.failures = 0

    def export(self, spans):
        result = self.inner.export(spans)
        if result == SpanExportResult.SUCCESS:
            self.ok.extend(spans)
        else:
            self.failures += 1
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis=30000):
        return True


def exporter(protocol, endpoint):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=30)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces", timeout=30)


KINDS = {
    SpanKind.INTERNAL: "internal",
    SpanKind.SERVER: "server",
    SpanKind.CLIENT: "client",
    SpanKind.PRODUCER: "producer",
    SpanKind.CONSUMER: "consumer",
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--protocol", choices=["grpc", "http"], required=True)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--service", required=True)
    ap.add_argument("--traces", type=int, default=20)
    ap.add_argument("--parents", help="JSON list of {trace_id, span_id} to continue")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    rec = Recording(exporter(args.protocol, args.endpoint))
    provider = TracerProvider(resource=Resource.create({"service.name": args.service, "deployment.environment": "e2e"}))
    provider.add_span_processor(BatchSpanProcessor(rec, max_export_batch_size=64, schedule_delay_millis=100))
    tracer = provider.get_tracer("paystream.e2e")

    parents = None
    if args.parents:
        with open(args.parents) as f:
            parents = json.load(f)
    n = len(parents) if parents is not None else args.traces
    for i in range(n):
        context = None
        if parents is not None:
            p = parents[i]
            sc = SpanContext(int(p["trace_id"], 16), int(p["span_id"], 16), is_remote=True, trace_flags=TraceFlags(1))
            context = trace.set_span_in_context(NonRecordingSpan(sc))
        with tracer.start_as_current_span("POST /checkout", context=context, kind=SpanKind.SERVER,
                                          attributes={"http.request.method": "POST", "attempt": i}) as root:
            with tracer.start_as_current_span("authorize", kind=SpanKind.CLIENT,
                                              attributes={"payment.amount_minor": 1000 + i, "card.brand": "visa",
                                                          "tags": ["a", "b"]}) as child:
                child.add_event("risk.checked", {"score": 0.25})
                if i % 3 == 0:
                    child.set_status(Status(StatusCode.ERROR, "issuer declined"))
            root.set_status(Status(StatusCode.OK))

    provider.shutdown()
    spans = []
    for s in rec.ok:
        spans.append({
            "trace_id": format(s.context.trace_id, "032x"),
            "span_id": format(s.context.span_id, "016x"),
            "parent_span_id": format(s.parent.span_id, "016x") if s.parent else None,
            "name": s.name,
            "kind": KINDS[s.kind],
            "service_name": args.service,
            "status_code": {StatusCode.UNSET: "unset", StatusCode.OK: "ok", StatusCode.ERROR: "error"}[s.status.status_code],
            "attributes": {k: (list(v) if isinstance(v, tuple) else v) for k, v in (s.attributes or {}).items()},
            "duration_ns": s.end_time - s.start_time,
            "events": [e.name for e in s.events],
        })
    with open(args.out, "w") as f:
        json.dump(spans, f)
    expected = n * 2
    print(f"{args.protocol}: {len(spans)} spans acknowledged of {expected}, {rec.failures} failed exports")
    sys.stdout.flush()
    if rec.failures or len(spans) != expected:
        sys.exit(1)
    # grpc's threads sometimes abort the interpreter at exit; the work is done.
    os._exit(0)


if __name__ == "__main__":
    main()
