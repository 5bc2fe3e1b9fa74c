//! Envoy's own generated stubs (Python `xds-protos`) decode every kind of response we send,
//! with no unknown fields and the values we meant.
//!
//! Skips loudly unless `python3` can import the stubs and grpcio, or fails when
//! `TOLLGATE_REQUIRE_XDS_PROTOS=1`.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

const CONFIG: &str = r#"
domain: stubs
global:
  - {name: stubs-cap, unit: day, requests_per_unit: 4}
descriptors:
  - key: client
    rate_limit: {name: per-client, unit: minute, requests_per_unit: 1}
  - key: free
    rate_limit: {unlimited: true}
"#;

fn stubs_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import grpc, envoy.service.ratelimit.v3.rls_pb2_grpc"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("TOLLGATE_REQUIRE_XDS_PROTOS").as_deref() == Ok("1") {
            panic!(
                "python3 with xds-protos and grpcio is required (TOLLGATE_REQUIRE_XDS_PROTOS=1)"
            );
        }
        eprintln!(
            "\n!!!!!!!! SKIPPED: python3 cannot import Envoy's stubs; this test did not run. !!!!!!!!\n\
             !!!!!!!! pip install xds-protos grpcio, or set TOLLGATE_REQUIRE_XDS_PROTOS=1. !!!!!!!!\n"
        );
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoys_generated_stubs_decode_every_response() {
    if !stubs_available() {
        return;
    }
    let server = TestServer::start(CONFIG).await;
    let addr = server.grpc_addr.to_string();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/xds/envoy_stubs_client.py"
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(addr)
            .output()
            .expect("run python3")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "the stubs client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).expect("JSON from the stubs client");
    for (call, answer) in seen.as_object().unwrap() {
        assert_eq!(answer["unknown_fields"], 0, "{call}: {answer}");
    }
    let status = |call: &str, i: usize| seen[call]["statuses"][i].clone();
    assert_eq!(seen["ok"]["overall_code"], "OK");
    assert_eq!(status("ok", 0)["name"], "per-client");
    assert_eq!(status("ok", 0)["unit"], "MINUTE");
    assert_eq!(status("ok", 0)["reset_seconds"], 60);
    assert_eq!(seen["over"]["overall_code"], "OVER_LIMIT");
    assert_eq!(status("over", 0)["code"], "OVER_LIMIT");
    assert_eq!(seen["probe"]["overall_code"], "OK");
    assert_eq!(status("probe", 0)["remaining"], 1);
    assert_eq!(status("unlimited", 0)["remaining"], u64::from(u32::MAX));
    assert_eq!(status("unlimited", 0)["has_limit"], false);
    assert_eq!(status("override", 0)["requests_per_unit"], 7);
    assert_eq!(status("override", 0)["unit"], "HOUR");
    assert_eq!(seen["two"]["statuses"].as_array().unwrap().len(), 2);
    assert_eq!(status("two", 1)["has_limit"], false);
    // Counted against the cap of 4 so far: ok, unlimited, override, two (the denied call and
    // the probe count nothing), so the 5th counted call is denied by the cap, by name.
    assert_eq!(seen["global"]["overall_code"], "OVER_LIMIT");
    assert_eq!(status("global", 0)["remaining"], 0);
    assert_eq!(
        seen["global"]["dynamic_metadata"],
        serde_json::json!({"tollgate_denied_by_global_cap": "stubs-cap"})
    );
}
