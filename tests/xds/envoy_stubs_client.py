"""Calls Tollgate with Envoy's own generated Python stubs (PyPI `xds-protos`) and prints, as
JSON, what those stubs decoded: the proof that our trimmed protos are Envoy's on the wire.

Usage: envoy_stubs_client.py HOST:PORT   (the config is the one in tests/xds_stubs.rs)
"""

import json
import sys

import grpc
from google.protobuf import json_format
from google.protobuf import wrappers_pb2
from google.protobuf.unknown_fields import UnknownFieldSet
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from envoy.type.v3 import ratelimit_unit_pb2


def descriptor(key, value, hits=None, override=None):
    d = ratelimit_pb2.RateLimitDescriptor(
        entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=key, value=value)]
    )
    if hits is not None:
        d.hits_addend.CopyFrom(wrappers_pb2.UInt64Value(value=hits))
    if override is not None:
        d.limit.CopyFrom(
            ratelimit_pb2.RateLimitDescriptor.RateLimitOverride(
                requests_per_unit=override, unit=ratelimit_unit_pb2.HOUR
            )
        )
    return d


def unknown_fields(message):
    """Counts fields the stubs did not recognise, recursively."""
    count = len(UnknownFieldSet(message))
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        values = value if field.is_repeated else [value]
        for v in values:
            if hasattr(v, "ListFields"):
                count += unknown_fields(v)
    return count


def main():
    channel = grpc.insecure_channel(sys.argv[1])
    stub = rls_pb2_grpc.RateLimitServiceStub(channel)
    calls = {
        "ok": [descriptor("client", "a")],
        "over": [descriptor("client", "a")],
        "probe": [descriptor("client", "b", hits=0)],
        "unlimited": [descriptor("free", "x")],
        "override": [descriptor("client", "c", override=7)],
        "two": [descriptor("client", "d"), descriptor("nothing", "here")],
        "global": [descriptor("client", "e")],
    }
    out = {}
    for name, descriptors in calls.items():
        response = stub.ShouldRateLimit(
            rls_pb2.RateLimitRequest(domain="stubs", descriptors=descriptors), timeout=5
        )
        out[name] = {
            "unknown_fields": unknown_fields(response),
            "overall_code": rls_pb2.RateLimitResponse.Code.Name(response.overall_code),
            "statuses": [
                {
                    "code": rls_pb2.RateLimitResponse.Code.Name(s.code),
                    "has_limit": s.HasField("current_limit"),
                    "name": s.current_limit.name,
                    "requests_per_unit": s.current_limit.requests_per_unit,
                    "unit": rls_pb2.RateLimitResponse.RateLimit.Unit.Name(s.current_limit.unit),
                    "remaining": s.limit_remaining,
                    "reset_seconds": s.duration_until_reset.seconds
                    if s.HasField("duration_until_reset")
                    else None,
                }
                for s in response.statuses
            ],
            "dynamic_metadata": json_format.MessageToDict(response.dynamic_metadata),
        }
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
