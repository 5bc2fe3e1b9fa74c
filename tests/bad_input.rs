//! Malformed or oversized requests get INVALID_ARGUMENT naming the field, and the server keeps
//! serving.

mod common;

use common::*;
use tollgate::proto::RateLimitRequest;
use tollgate::proto::envoy::r#type::v3::RateLimitUnit;
use tollgate::proto::rate_limit_response::Code;
use tonic::Code as GrpcCode;

const CONFIG: &str = r#"
domain: d
descriptors:
  - key: k
    rate_limit: {unit: minute, requests_per_unit: 5}
"#;

fn long(n: usize) -> String {
    "x".repeat(n)
}

#[tokio::test]
async fn each_malformed_request_is_refused_naming_its_field() {
    let server = TestServer::start(CONFIG).await;
    let mut client = server.client().await;
    let many_entries: Vec<(String, String)> =
        (0..33).map(|i| (format!("k{i}"), "v".into())).collect();
    let many_entries: Vec<(&str, &str)> = many_entries
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let key_1k = long(1025);
    let cases: Vec<(RateLimitRequest, &str)> = vec![
        (simple("", "k", "v"), "domain"),
        (request("d", vec![]), "descriptors"),
        (
            request("d", vec![descriptor(&[])]),
            "descriptors[0].entries",
        ),
        (
            request(
                "d",
                vec![descriptor(&[("k", "v")]), descriptor(&[("", "v")])],
            ),
            "descriptors[1].entries[0].key",
        ),
        (
            request("d", (0..65).map(|_| descriptor(&[("k", "v")])).collect()),
            "descriptors",
        ),
        (
            request("d", vec![descriptor(&many_entries)]),
            "descriptors[0].entries",
        ),
        (simple("d", &key_1k, "v"), "descriptors[0].entries[0].key"),
        (simple("d", "k", &key_1k), "descriptors[0].entries[0].value"),
        (simple(&long(1025), "k", "v"), "domain"),
        (
            RateLimitRequest {
                hits_addend: 1_000_000_001,
                ..simple("d", "k", "v")
            },
            "hits_addend",
        ),
        (
            request(
                "d",
                vec![with_hits(descriptor(&[("k", "v")]), 1_000_000_001)],
            ),
            "descriptors[0].hits_addend",
        ),
        (
            request(
                "d",
                vec![with_override(
                    descriptor(&[("k", "v")]),
                    1,
                    RateLimitUnit::Unknown,
                )],
            ),
            "descriptors[0].limit.unit",
        ),
    ];
    for (request, field) in cases {
        let status = client
            .should_rate_limit(request)
            .await
            .expect_err("the request must be refused");
        assert_eq!(
            status.code(),
            GrpcCode::InvalidArgument,
            "{field}: {status:?}"
        );
        assert!(
            status.message().starts_with(&format!("{field}:")),
            "expected the message to name {field}: {}",
            status.message()
        );
    }
    // The limits themselves are at the bound, not below it.
    let at_bounds = request(
        "d",
        (0..64).map(|_| descriptor(&[("k", &long(1024))])).collect(),
    );
    let r = client
        .should_rate_limit(at_bounds)
        .await
        .expect("at the bounds is fine");
    assert_eq!(r.into_inner().statuses.len(), 64);
    // And the server still serves.
    assert_eq!(server.code_of(simple("d", "k", "v")).await, Code::Ok);
}

#[tokio::test]
async fn an_oversized_message_is_refused_and_the_server_keeps_serving() {
    let server = TestServer::start(CONFIG).await;
    let mut client = server.client().await;
    // 2 MiB of one value: over the 1 MiB message bound before any field check.
    let status = client
        .should_rate_limit(simple("d", "k", &long(2 << 20)))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), GrpcCode::OutOfRange, "{status:?}");
    assert_eq!(server.code_of(simple("d", "k", "v")).await, Code::Ok);
}

#[tokio::test]
async fn a_request_that_is_not_protobuf_is_refused_naming_the_field() {
    let server = TestServer::start(CONFIG).await;
    let cases: [(&[u8], &str); 4] = [
        // descriptors[0] { entries[0] { key: 0xff 0xfe } }
        (
            &[
                0x0a, 0x01, b'd', 0x12, 0x06, 0x0a, 0x04, 0x0a, 0x02, 0xff, 0xfe,
            ],
            "descriptors[0].entries[0].key: not valid UTF-8",
        ),
        // domain "d", then descriptors[0] said to be 9 bytes long, with 1 left
        (
            &[0x0a, 0x01, b'd', 0x12, 0x09, 0x0a],
            "descriptors[0]: a length of 9 bytes runs past the end",
        ),
        // domain sent as a varint
        (&[0x08, 0x01], "domain: "),
        // a field numbered 0
        (&[0x00, 0x00], "request: "),
    ];
    for (body, message) in cases {
        let status = raw_call(server.channel().await, body)
            .await
            .expect_err("the request must be refused");
        assert_eq!(status.code(), GrpcCode::InvalidArgument, "{status:?}");
        assert!(
            status.message().starts_with(message),
            "expected {message:?}: {}",
            status.message()
        );
    }
    assert_eq!(server.code_of(simple("d", "k", "v")).await, Code::Ok);
}
