//! The tokio runtime every Tollgate process (and the benchmark ceiling) runs on.
//!
//! On one CPU (a pinned process, or a pod limited to one core: the standard library reads the
//! cgroup's quota) a current-thread runtime: it serves the same calls without the
//! work-stealing scheduler's cross-thread bookkeeping, about a quarter less CPU per call in
//! `bench/run.sh`'s closed loop. With more CPUs, a multi-threaded runtime with one worker per
//! CPU, so that the calls of even a single connection spread over every core.

use std::io;

use tokio::runtime::{Builder, Runtime};

/// The runtime for the CPUs this process may use.
pub fn build() -> io::Result<Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let runtime = build_for(cpus)?;
    tracing::info!(
        cpus,
        flavor = ?runtime.handle().runtime_flavor(),
        "tokio runtime"
    );
    Ok(runtime)
}

fn build_for(cpus: usize) -> io::Result<Runtime> {
    let mut builder = if cpus <= 1 {
        Builder::new_current_thread()
    } else {
        let mut builder = Builder::new_multi_thread();
        builder.worker_threads(cpus);
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
        let three = build_for(3).unwrap();
        assert_eq!(three.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        assert_eq!(three.metrics().num_workers(), 3);
        // Both run timers and sockets.
        one.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            drop(listener);
        });
    }
}
