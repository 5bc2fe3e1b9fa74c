//! The `tollgate` binary itself: validate, serve on the embedded default, check, and a clean
//! exit on SIGTERM.

mod common;

use std::process::Command;
use std::time::Duration;

use common::process::{BIN, log_until_bound, spawn_serve, wall_clock_minute};
use tollgate::proto::RateLimitServiceClient;
use tollgate::proto::rate_limit_response::Code;

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

#[test]
fn serve_runs_the_embedded_default_answers_check_and_exits_cleanly_on_sigterm() {
    let (mut server, lines, grpc) = spawn_serve(&[]);
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
    // The default allows 10 a minute per IP. The server's clock is the real one: if the
    // minute turned during the 11 calls, the count started again, so try again on a fresh IP.
    for attempt in 1.. {
        let client = format!("203.0.113.{attempt}");
        let started = wall_clock_minute();
        for _ in 0..10 {
            let out = check(&client);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(text.starts_with("OK"), "{text}");
            assert!(text.contains("name=ip-minute"), "{text}");
        }
        let out = check(&client);
        if wall_clock_minute() != started && attempt < 3 {
            continue;
        }
        assert_eq!(out.status.code(), Some(2), "OVER_LIMIT exits 2");
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("OVER_LIMIT"));
        break;
    }

    let pid = server.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
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

/// Polls `check` until its output contains `wanted`, within a deadline.
fn wait_for_check(grpc: &str, wanted: &str) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let out = Command::new(BIN)
            .args([
                "check",
                "--addr",
                &format!("http://{grpc}"),
                "--domain",
                "fixture",
            ])
            .args(["--descriptor", "client=c", "--hits", "0"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains(wanted) {
            return true;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
    false
}

#[test]
fn sighup_reloads_a_valid_config_and_keeps_the_old_one_when_the_new_is_bad() {
    let dir = std::env::temp_dir().join(format!("tollgate-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("limits.yaml");
    std::fs::copy(fixture("good.yaml"), &path).unwrap();
    let (server, lines, grpc) = spawn_serve(&["--config", path.to_str().unwrap()]);
    let (log_tx, log_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines {
            let _ = log_tx.send(line);
        }
    });
    let hup = || {
        let pid = server.0.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    assert!(wait_for_check(&grpc, "limit=5/minute name=per-client"));

    std::fs::write(
        &path,
        "domain: fixture\ndescriptors:\n  - key: client\n    rate_limit: {name: reloaded, unit: hour, requests_per_unit: 7}\n",
    )
    .unwrap();
    hup();
    assert!(
        wait_for_check(&grpc, "limit=7/hour name=reloaded"),
        "the reload took effect"
    );

    std::fs::copy(fixture("bad_unit.yaml"), &path).unwrap();
    hup();
    let mut log = log_rx
        .iter()
        .skip_while(|line| !line.contains("reload refused"));
    assert!(log.next().is_some(), "the bad reload is logged");
    let reason = log.next().unwrap_or_default();
    assert!(
        reason.contains("limits.yaml:5:"),
        "the refusal names file and line: {reason}"
    );
    assert!(
        wait_for_check(&grpc, "limit=7/hour name=reloaded"),
        "the good config stayed"
    );

    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Pinned to one CPU, `serve` runs on a current-thread runtime (it says so), and serves
/// concurrent calls over one connection, counting them exactly.
#[tokio::test]
async fn serve_pinned_to_one_cpu_runs_a_current_thread_runtime_and_counts_exactly() {
    if !common::require_program("taskset", "TASKSET") {
        return;
    }
    let mut command = Command::new("taskset");
    command
        .args(["-c", &first_allowed_cpu(), BIN])
        .env_remove("TOKIO_WORKER_THREADS");
    serve_counts_exactly_on_a_current_thread_runtime(command).await;
}

/// `TOKIO_WORKER_THREADS=1` asks for the one-thread runtime whatever the machine has.
#[tokio::test]
async fn one_worker_thread_asked_for_runs_a_current_thread_runtime_and_counts_exactly() {
    let mut command = Command::new(BIN);
    command.env("TOKIO_WORKER_THREADS", "1");
    serve_counts_exactly_on_a_current_thread_runtime(command).await;
}

/// The first CPU this process may run on (CPU 0 need not be one of them).
fn first_allowed_cpu() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list in /proc/self/status");
    list.trim().split([',', '-']).next().unwrap().to_owned()
}

/// `command` runs the binary (`serve` and its arguments are added): it must log a
/// current-thread runtime, and answer 30 concurrent calls on a limit of 10 with exactly 10 OK.
async fn serve_counts_exactly_on_a_current_thread_runtime(mut command: Command) {
    command
        .args(["serve", "--config", &fixture("hourly.yaml")])
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"]);
    let (_server, mut lines) = common::process::spawn(command);
    // The runtime line comes before the bound gRPC address.
    let early = log_until_bound(&mut lines, "gRPC");
    let log = early.join("\n");
    assert!(
        log.contains("tokio runtime: CurrentThread with 1 worker(s)"),
        "{log}"
    );
    let grpc = common::process::bound_address(&mut early.into_iter(), "gRPC");
    std::thread::spawn(move || lines.for_each(drop));

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let calls: Vec<_> = (0..30)
        .map(|_| {
            let mut client = RateLimitServiceClient::new(channel.clone());
            tokio::spawn(async move {
                let request = common::request(
                    "hourly",
                    vec![common::descriptor(&[("client", "one-thread")])],
                );
                client
                    .should_rate_limit(request)
                    .await
                    .unwrap()
                    .into_inner()
            })
        })
        .collect();
    let mut ok = 0;
    for call in calls {
        if call.await.unwrap().overall_code == Code::Ok as i32 {
            ok += 1;
        }
    }
    assert_eq!(ok, 10);
}
