//! The `tollgate` binary itself: validate, serve on the embedded default, check, and a clean
//! exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn validate_accepts_a_good_file_with_a_summary() {
    let out = Command::new(BIN)
        .args(["validate", &fixture("good.yaml")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("fixture"), "{summary}");
}

#[test]
fn validate_refuses_a_bad_file_naming_file_line_and_problem() {
    let out = Command::new(BIN)
        .args(["validate", &fixture("bad_unit.yaml")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(errors.contains("bad_unit.yaml:5:"), "{errors}");
    assert!(errors.contains("fortnight"), "{errors}");
}

#[test]
fn serve_refuses_to_start_on_a_bad_config() {
    let out = Command::new(BIN)
        .args(["serve", "--config", &fixture("bad_unit.yaml")])
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad_unit.yaml:5:"));
}

/// Reads the server's log until it names the address it bound for `what`.
fn bound_address(lines: &mut impl Iterator<Item = String>, what: &str) -> String {
    for line in lines.by_ref() {
        if line.contains(what)
            && let Some(at) = line.find("addr=")
        {
            return line[at + 5..].split_whitespace().next().unwrap().to_owned();
        }
    }
    panic!("the server never logged its {what} address");
}

#[test]
fn serve_runs_the_embedded_default_answers_check_and_exits_cleanly_on_sigterm() {
    let mut server = Command::new(BIN)
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .env("TOLLGATE_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = server.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
    let grpc = bound_address(&mut lines, "gRPC");
    // Keep draining the log so the server never blocks on a full pipe.
    let rest = std::thread::spawn(move || lines.collect::<Vec<_>>());

    let check = |client: &str| {
        Command::new(BIN)
            .args([
                "check",
                "--addr",
                &format!("http://{grpc}"),
                "--domain",
                "ask-ai",
            ])
            .args(["--descriptor", &format!("remote_address={client}")])
            .output()
            .unwrap()
    };
    // The default allows 10 a minute per IP.
    for _ in 0..10 {
        let out = check("203.0.113.7");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.starts_with("OK"), "{text}");
        assert!(text.contains("name=ip-minute"), "{text}");
    }
    let out = check("203.0.113.7");
    assert_eq!(out.status.code(), Some(2), "OVER_LIMIT exits 2");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("OVER_LIMIT"));

    let pid = server.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit after SIGTERM"
        );
        std::thread::park_timeout(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status:?}");
    let log = rest.join().unwrap().join("\n");
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(log.contains("drained"), "{log}");
}
