//! The benchmark ceiling (`tollgate-ceiling`) answers every call OK, with one OK status per
//! descriptor and nothing else, whether it decodes requests with prost (a bare tonic server)
//! or reads them in place as Tollgate does (`--read-in-place`); a request that does not parse
//! is INTERNAL from prost's codec, and INVALID_ARGUMENT naming its field read in place.

mod common;

use std::process::Command;

use common::process::spawn;
use common::{descriptor, raw_call, request};
use tollgate::proto::RateLimitServiceClient;
use tollgate::proto::rate_limit_response::Code;
use tonic::Code as GrpcCode;

/// Starts the ceiling on an ephemeral port; returns it and its gRPC URL.
fn start(args: &[&str]) -> (common::process::Killed, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate-ceiling"));
    command.args(["--grpc-addr", "127.0.0.1:0"]).args(args);
    let (ceiling, mut lines) = spawn(command);
    let addr = lines
        .by_ref()
        .find_map(|line| {
            let (_, after) = line.split_once("constant OK on ")?;
            after.split_whitespace().next().map(str::to_owned)
        })
        .expect("the ceiling names the address it bound");
    (ceiling, format!("http://{addr}"))
}

#[tokio::test]
async fn the_ceiling_answers_ok_for_every_descriptor_however_it_reads_requests() {
    // descriptors[0] { entries[0] { key: 0xff 0xfe } }
    let not_utf8 = [0x12, 0x06, 0x0a, 0x04, 0x0a, 0x02, 0xff, 0xfe];
    for (args, refused) in [
        (&[][..], GrpcCode::Internal),
        (&["--read-in-place"][..], GrpcCode::InvalidArgument),
    ] {
        let (_ceiling, url) = start(args);
        let channel = tonic::transport::Channel::from_shared(url)
            .expect("a valid URL")
            .connect()
            .await
            .expect("the ceiling accepts a connection");
        let status = raw_call(channel.clone(), &not_utf8)
            .await
            .expect_err("a key that is not UTF-8 is refused");
        assert_eq!(status.code(), refused, "{args:?}: {status:?}");
        if refused == GrpcCode::InvalidArgument {
            assert!(
                status
                    .message()
                    .starts_with("descriptors[0].entries[0].key:"),
                "{status:?}"
            );
        }
        let mut client = RateLimitServiceClient::new(channel);
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
