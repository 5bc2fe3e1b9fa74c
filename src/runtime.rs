//! The tokio runtime every Tollgate process (and the benchmark ceiling) runs on.
//!
//! On one CPU (a pinned process, or a pod limited to less than two cores: the standard library
//! reads the cgroup's quota, rounding down) a current-thread runtime: it serves the same calls
//! without the work-stealing scheduler's cross-thread bookkeeping, about a quarter less CPU
//! per call in `bench/run.sh`'s closed loop. With more CPUs, a multi-threaded runtime with one
//! worker per CPU, so that the calls of even a single connection spread over every core.
//! `TOKIO_WORKER_THREADS` (tokio's own setting) overrides the count, 1 included.

use std::io;

use tokio::runtime::{Builder, Runtime};

const WORKERS_VAR: &str = "TOKIO_WORKER_THREADS";

/// The runtime for the CPUs this process may use, or for `TOKIO_WORKER_THREADS`.
pub fn build() -> io::Result<Runtime> {
    let workers = match std::env::var(WORKERS_VAR) {
        Ok(value) => parse_workers(&value)?,
        Err(_) => std::thread::available_parallelism().map_or(1, usize::from),
    };
    build_for(workers)
}

/// What the runtime is, for a start-up log line.
pub fn describe(runtime: &Runtime) -> String {
    format!(
        "{:?} with {} worker(s)",
        runtime.handle().runtime_flavor(),
        runtime.metrics().num_workers()
    )
}

fn parse_workers(value: &str) -> io::Result<usize> {
    match value.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{WORKERS_VAR}={value:?}: expected a whole number of threads, at least 1"),
        )),
    }
}

fn build_for(workers: usize) -> io::Result<Runtime> {
    let mut builder = if workers <= 1 {
        Builder::new_current_thread()
    } else {
        let mut builder = Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    builder.enable_all().build()
}

#[cfg(test)]
mod tests {
    use tokio::runtime::RuntimeFlavor;

    use super::*;

    #[test]
    fn one_cpu_gets_a_current_thread_runtime_and_more_get_a_worker_each() {
        let one = build_for(1).unwrap();
        assert_eq!(one.handle().runtime_flavor(), RuntimeFlavor::CurrentThread);
        assert_eq!(describe(&one), "CurrentThread with 1 worker(s)");
        let three = build_for(3).unwrap();
        assert_eq!(three.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        assert_eq!(three.metrics().num_workers(), 3);
        // Both have their I/O and time drivers (a timer that fires is the check, not a wait).
        for runtime in [one, three] {
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                drop(listener);
            });
        }
    }

    #[test]
    fn the_worker_count_override_must_be_a_positive_number() {
        assert_eq!(parse_workers("1").unwrap(), 1);
        assert_eq!(parse_workers(" 4 ").unwrap(), 4);
        for bad in ["0", "-1", "two", ""] {
            let error = parse_workers(bad).unwrap_err().to_string();
            assert!(error.contains("TOKIO_WORKER_THREADS"), "{error}");
        }
    }
}
