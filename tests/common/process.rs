//! The `tollgate` binary as a child process: spawned on ephemeral ports, its log read for the
//! addresses it bound, and killed when the test ends, passing or not.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

/// Reads the server's log until it names the address it bound for `what`.
pub fn bound_address(lines: &mut impl Iterator<Item = String>, what: &str) -> String {
    for line in lines.by_ref() {
        if line.contains(what)
            && let Some(at) = line.find("addr=")
        {
            return line[at + 5..].split_whitespace().next().unwrap().to_owned();
        }
    }
    panic!("the server never logged its {what} address");
}

/// The log up to and including the line naming the address bound for `what` (or all of it,
/// should the process end first), for asserting on what was logged before it.
pub fn log_until_bound(lines: &mut impl Iterator<Item = String>, what: &str) -> Vec<String> {
    let mut log = Vec::new();
    for line in lines.by_ref() {
        let bound = line.contains(what) && line.contains("addr=");
        log.push(line);
        if bound {
            break;
        }
    }
    log
}

/// The minute of the real clock, which the binary's windows follow: a test that counts calls
/// against a per-minute limit checks whether it turned meanwhile.
pub fn wall_clock_minute() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 60
}

/// Starts `tollgate serve` on ephemeral ports with `args`; returns the process, its log lines
/// (read on), and the gRPC address it logged.
pub fn spawn_serve(args: &[&str]) -> (Killed, impl Iterator<Item = String> + Send + use<>, String) {
    let mut command = Command::new(BIN);
    command.arg("serve").args(args).args([
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
    ]);
    let (server, mut lines) = spawn(command);
    let grpc = bound_address(&mut lines, "gRPC");
    (server, lines, grpc)
}

/// Spawns `command` with info logging to a pipe; returns it and its log lines.
pub fn spawn(mut command: Command) -> (Killed, impl Iterator<Item = String> + Send + use<>) {
    let mut child = Killed(
        command
            .env("TOLLGATE_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let lines = BufReader::new(stderr).lines().map_while(Result::ok);
    (child, lines)
}

/// A child process that is killed when the test ends, passing or not.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
