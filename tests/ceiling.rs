//! The benchmark ceiling (`tollgate-ceiling`) answers every call OK, with one OK status per
//! descriptor and nothing else, whether it decodes requests with prost (a bare tonic server)
//! or reads them in place as Tollgate does (`--read-in-place`).

mod common;

use std::process::Command;

use common::process::spawn;
use common::{descriptor, request};
use tollgate::proto::RateLimitServiceClient;
use tollgate::proto::rate_limit_response::Code;

/// Starts the ceiling on an ephemeral port; returns it and its gRPC URL.
fn start(args: &[&str]) -> (common::process::Killed, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate-ceiling"));
    command.args(["--grpc-addr", "127.0.0.1:0"]).args(args);
    let (ceiling, mut lines) = spawn(command);
    let addr = lines
        .by_ref()
        .find_map(|line| {
            let at = line.find("constant OK on ")?;
            line[at + 15..].split_whitespace().next().map(str::to_owned)
        })
        .expect("the ceiling names the address it bound");
    (ceiling, format!("http://{addr}"))
}

#[tokio::test]
async fn the_ceiling_answers_ok_for_every_descriptor_however_it_reads_requests() {
    for args in [&[][..], &["--read-in-place"][..]] {
        let (_ceiling, url) = start(args);
        let mut client = RateLimitServiceClient::connect(url)
            .await
            .expect("the ceiling accepts a connection");
        for n in [1, 3, 64] {
            let descriptors = (0..n).map(|_| descriptor(&[("k", "v")])).collect();
            let answer = client
                .should_rate_limit(request("any", descriptors))
                .await
                .unwrap_or_else(|e| panic!("{args:?}: {e}"))
                .into_inner();
            assert_eq!(answer.overall_code, Code::Ok as i32, "{args:?}");
            assert_eq!(answer.statuses.len(), n, "{args:?}");
            for status in &answer.statuses {
                assert_eq!(status.code, Code::Ok as i32);
                assert!(status.current_limit.is_none());
                assert_eq!(status.limit_remaining, 0);
            }
        }
    }
}
