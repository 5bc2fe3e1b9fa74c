//! `tollgate-load`: a gRPC load generator for `ShouldRateLimit`, for benchmarks only.
//!
//! It opens `--connections` HTTP/2 connections (see `grpc.rs`), keeps up to
//! `--concurrency` calls in flight across them, and offers load either closed loop (every
//! call slot sends its next call as soon as the last is answered) or open loop at `--rate`
//! calls/s, where each call has an intended start on a fixed schedule and its latency is
//! measured from that intended start, so a stalled server is charged for the calls it delayed
//! (no coordinated omission). Every answer is verified (see `verify.rs`); a run with any
//! failed call exits 1.
//!
//! - `grpc.rs`: the call itself, on raw HTTP/2.
//! - `workload.rs`: the descriptor mixes and the Zipf sampler.
//! - `verify.rs`: what makes an answer acceptable.
//! - `report.rs`: counts, throughput and HDR percentiles, as text or JSON.

mod grpc;
mod report;
mod verify;
mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use grpc::{RlsClient, grpc_frame};

use report::{Mode, Percentiles, Report, latency_histogram};
use verify::{Answer, Checks, Expect, Failure, verify};
use workload::{Workload, WorkloadKind};

/// Below this much time to wait, the open-loop pacer yields instead of sleeping: tokio's timer
/// has a 1 ms resolution, which would send calls up to a millisecond late.
const SPIN_BELOW: Duration = Duration::from_millis(2);

#[derive(Parser, Debug)]
#[command(about = "Load generator for Envoy's ShouldRateLimit (benchmark tool)")]
struct Args {
    /// The gRPC server, as a URI.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    addr: String,
    /// HTTP/2 connections, each its own connect.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Calls in flight at once, in total, spread evenly over the connections.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Seconds of measured load (after warmup). Default 10 unless --requests is given.
    #[arg(long, conflicts_with = "requests")]
    duration: Option<f64>,
    /// Measured calls to make (after warmup), instead of a duration.
    #[arg(long)]
    requests: Option<u64>,
    /// Open loop at this many calls/s. Without it: closed loop, as fast as it goes.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds of load before measuring (answers still verified).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    #[arg(long, value_enum, default_value = "one-hot-key")]
    workload: WorkloadKind,
    /// Size of the key space of uniform, zipf, three-plus-global and the many-rules workloads.
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// s in P(rank k) ∝ 1/k^s.
    #[arg(long, default_value_t = 1.0)]
    zipf_exponent: f64,
    /// The request domain. Default: the workload's domain in bench/configs.
    #[arg(long)]
    domain: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Which decisions are correct answers.
    #[arg(long, value_enum, default_value = "any")]
    expect: Expect,
    /// Every status must carry a current_limit (a rule matched). Not for the ceiling server.
    #[arg(long)]
    require_limit: bool,
    /// Seconds before a call is abandoned and counted as an error. Sent with each call as its
    /// deadline (`grpc-timeout`), as Envoy sends its own timeout, so that the server does the
    /// deadline work it does for Envoy.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    /// Runtime threads. Default: the CPUs this process may run on (one when pinned with
    /// taskset), and with one, a single-threaded runtime with no cross-thread wakeups.
    #[arg(long)]
    threads: Option<usize>,
    /// Seed of the descriptor draws (each call slot derives its own).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write one request of the workload as a gRPC message (5-byte prefix + protobuf), for
    /// h2load's --data, and exit.
    #[arg(long, value_name = "FILE")]
    dump_request: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run_main(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tollgate-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_main(args: Args) -> anyhow::Result<ExitCode> {
    let workload = Workload::new(
        args.workload,
        args.domain.clone(),
        args.keys,
        args.zipf_exponent,
    )?;
    if let Some(path) = &args.dump_request {
        let request = workload.request(&mut fastrand::Rng::with_seed(args.seed));
        std::fs::write(path, grpc_frame(&request))
            .with_context(|| format!("writing {}", path.display()))?;
        return Ok(ExitCode::SUCCESS);
    }
    let plan = Plan::from_args(&args)?;
    let runtime = runtime(args.threads)?;
    // As a task, not as `block_on`'s own future: on a multi-threaded runtime that future runs
    // on this thread, beside the workers, and the open-loop pacer spinning there would take a
    // pinned run's one core from the call tasks.
    let report = runtime.block_on(async {
        tokio::spawn(run(args.addr.clone(), plan, workload))
            .await
            .context("the run panicked")?
    })?;
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    if report.failed() {
        eprintln!(
            "tollgate-load: {} calls failed verification",
            report.errors + report.warmup_errors
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn runtime(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let threads = match threads {
        Some(0) => bail!("--threads must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

/// When to stop offering load.
#[derive(Clone, Copy, Debug)]
enum Stop {
    /// Measured seconds.
    After(Duration),
    /// Measured calls.
    Count(u64),
}

/// The validated shape of a run.
#[derive(Clone, Copy, Debug)]
struct Plan {
    connections: usize,
    concurrency: usize,
    warmup: Duration,
    stop: Stop,
    rate: Option<f64>,
    checks: Checks,
    timeout: Duration,
    seed: u64,
}

impl Plan {
    fn from_args(args: &Args) -> anyhow::Result<Plan> {
        ensure!(args.connections >= 1, "--connections must be at least 1");
        ensure!(args.concurrency >= 1, "--concurrency must be at least 1");
        let seconds = |name: &str, s: f64| -> anyhow::Result<Duration> {
            Duration::try_from_secs_f64(s)
                .map_err(|_| anyhow::anyhow!("--{name} {s} is not a valid number of seconds"))
        };
        let stop = match (args.duration, args.requests) {
            (_, Some(0)) => bail!("--requests must be at least 1"),
            (_, Some(n)) => Stop::Count(n),
            (Some(d), None) => {
                let d = seconds("duration", d)?;
                ensure!(!d.is_zero(), "--duration must be more than 0");
                Stop::After(d)
            }
            (None, None) => Stop::After(Duration::from_secs(10)),
        };
        if let Some(rate) = args.rate {
            ensure!(
                rate.is_finite() && rate > 0.0,
                "--rate must be a positive number of calls/s, not {rate}"
            );
        }
        let timeout = seconds("timeout", args.timeout)?;
        ensure!(!timeout.is_zero(), "--timeout must be more than 0");
        Ok(Plan {
            connections: args.connections,
            concurrency: args.concurrency,
            warmup: seconds("warmup", args.warmup)?,
            stop,
            rate: args.rate,
            checks: Checks {
                expect: args.expect,
                require_limit: args.require_limit,
            },
            timeout,
            seed: args.seed,
        })
    }
}

/// What every call adds to, under one lock (taken once per call; uncontended on the one
/// worker thread a pinned load generator gets).
struct Tally {
    latency: Histogram<u64>,
    send_lag: Histogram<u64>,
    calls: u64,
    ok: u64,
    over_limit: u64,
    errors: u64,
    error_kinds: BTreeMap<String, u64>,
    first_error: Option<String>,
    warmup_calls: u64,
    warmup_errors: u64,
    last_answer: Option<Instant>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            latency: latency_histogram(),
            send_lag: latency_histogram(),
            calls: 0,
            ok: 0,
            over_limit: 0,
            errors: 0,
            error_kinds: BTreeMap::new(),
            first_error: None,
            warmup_calls: 0,
            warmup_errors: 0,
            last_answer: None,
        }
    }

    /// One answered (or failed) call. `latency` runs from the call's start (actual in closed
    /// loop, intended in open loop) to its answer.
    fn record(
        &mut self,
        measured: bool,
        latency: Duration,
        send_lag: Option<Duration>,
        answered_at: Instant,
        outcome: Result<Answer, Failure>,
    ) {
        if let Err(failure) = &outcome {
            *self.error_kinds.entry(failure.kind()).or_default() += 1;
            if self.first_error.is_none() {
                self.first_error = Some(failure.to_string());
            }
        }
        if !measured {
            self.warmup_calls += 1;
            self.warmup_errors += u64::from(outcome.is_err());
            return;
        }
        self.calls += 1;
        match outcome {
            Ok(Answer::Ok) => self.ok += 1,
            Ok(Answer::OverLimit) => self.over_limit += 1,
            Err(_) => self.errors += 1,
        }
        // Saturating: past the histogram's hour, a call is recorded as an hour.
        self.latency.saturating_record(nanos(latency));
        if let Some(lag) = send_lag {
            self.send_lag.saturating_record(nanos(lag));
        }
        self.last_answer = Some(self.last_answer.map_or(answered_at, |t| t.max(answered_at)));
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}

/// Everything a call task reads.
struct Shared {
    workload: Workload,
    checks: Checks,
    tally: Mutex<Tally>,
    /// Calls started after this are measured.
    measure_from: Instant,
}

impl Shared {
    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        // A panic while holding the lock would be a bug in `record`; the counts are still
        // plain numbers, so keep going rather than lose the run.
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn connect(addr: &str, plan: &Plan) -> anyhow::Result<Vec<RlsClient>> {
    let mut clients = Vec::with_capacity(plan.connections);
    for i in 0..plan.connections {
        let client = RlsClient::connect(addr, plan.timeout)
            .await
            .with_context(|| format!("connection {} to {addr}", i + 1))?;
        clients.push(client);
    }
    Ok(clients)
}

async fn run(addr: String, plan: Plan, workload: Workload) -> anyhow::Result<Report> {
    let clients = connect(&addr, &plan).await?;
    let start = Instant::now();
    let shared = Arc::new(Shared {
        workload,
        checks: plan.checks,
        tally: Mutex::new(Tally::new()),
        measure_from: start + plan.warmup,
    });
    match plan.rate {
        None => closed_loop(&plan, &clients, &shared).await?,
        Some(rate) => open_loop(&plan, rate, &clients, &shared).await?,
    }
    let tally = shared.tally();
    let elapsed = tally.last_answer.map_or(Duration::ZERO, |t| {
        t.saturating_duration_since(shared.measure_from)
    });
    Ok(Report {
        workload: shared.workload.kind().name().to_owned(),
        domain: shared.workload.domain().to_owned(),
        mode: plan.rate.map_or(Mode::Closed, |rate| Mode::Open { rate }),
        connections: plan.connections,
        concurrency: plan.concurrency,
        calls: tally.calls,
        ok: tally.ok,
        over_limit: tally.over_limit,
        errors: tally.errors,
        error_kinds: tally.error_kinds.clone(),
        first_error: tally.first_error.clone(),
        warmup_calls: tally.warmup_calls,
        warmup_errors: tally.warmup_errors,
        elapsed_secs: elapsed.as_secs_f64(),
        latency: Percentiles::of(&tally.latency),
        send_lag: plan.rate.map(|_| Percentiles::of(&tally.send_lag)),
    })
}

/// `concurrency` call slots, each sending its next call when the last is answered.
async fn closed_loop(
    plan: &Plan,
    clients: &[RlsClient],
    shared: &Arc<Shared>,
) -> anyhow::Result<()> {
    let issued = Arc::new(AtomicU64::new(0));
    let mut slots: JoinSet<anyhow::Result<()>> = JoinSet::new();
    for slot in 0..plan.concurrency {
        let mut client = clients[slot % clients.len()].clone();
        let shared = Arc::clone(shared);
        let issued = Arc::clone(&issued);
        let stop = plan.stop;
        let mut rng = fastrand::Rng::with_seed(plan.seed.wrapping_add(slot as u64));
        slots.spawn(async move {
            loop {
                let started = Instant::now();
                let measured = started >= shared.measure_from;
                if measured {
                    let more = match stop {
                        Stop::After(d) => started < shared.measure_from + d,
                        Stop::Count(n) => issued.fetch_add(1, Ordering::Relaxed) < n,
                    };
                    if !more {
                        return Ok(());
                    }
                }
                let request = shared.workload.request(&mut rng);
                let descriptors = request.descriptors.len();
                let result = client.should_rate_limit(&request).await;
                let answered = Instant::now();
                let outcome = verify(result, descriptors, shared.checks);
                shared
                    .tally()
                    .record(measured, answered - started, None, answered, outcome);
                client.ensure_open()?;
            }
        });
    }
    while let Some(joined) = slots.join_next().await {
        joined.context("a call slot panicked")??;
    }
    Ok(())
}

/// Calls on a fixed schedule: call i is due at `start + i / rate`, sent by a pacer as soon as
/// it is due (or as soon as an in-flight slot frees up), and timed from when it was due.
async fn open_loop(
    plan: &Plan,
    rate: f64,
    clients: &[RlsClient],
    shared: &Arc<Shared>,
) -> anyhow::Result<()> {
    let slots = Arc::new(Semaphore::new(plan.concurrency));
    let mut rng = fastrand::Rng::with_seed(plan.seed);
    let mut calls = JoinSet::new();
    let start = shared.measure_from - plan.warmup;
    let mut measured_sent = 0u64;
    for i in 0u64.. {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        let measured = due >= shared.measure_from;
        if measured {
            let more = match plan.stop {
                Stop::After(d) => due < shared.measure_from + d,
                Stop::Count(n) => measured_sent < n,
            };
            if !more {
                break;
            }
            measured_sent += 1;
        }
        wait_until(due).await;
        let permit = Arc::clone(&slots)
            .acquire_owned()
            .await
            .context("the in-flight bound was closed")?;
        let mut client = clients[(i % clients.len() as u64) as usize].clone();
        client.ensure_open()?;
        let request = shared.workload.request(&mut rng);
        let shared = Arc::clone(shared);
        calls.spawn(async move {
            let sent = Instant::now();
            let descriptors = request.descriptors.len();
            let result = client.should_rate_limit(&request).await;
            let answered = Instant::now();
            drop(permit);
            let outcome = verify(result, descriptors, shared.checks);
            shared.tally().record(
                measured,
                answered.saturating_duration_since(due),
                Some(sent.saturating_duration_since(due)),
                answered,
                outcome,
            );
        });
        // Reap finished calls as we go, so the set does not grow with the run.
        while let Some(joined) = calls.try_join_next() {
            joined.context("a call panicked")?;
        }
    }
    while let Some(joined) = calls.join_next().await {
        joined.context("a call panicked")?;
    }
    Ok(())
}

/// Sleeps on the timer while the deadline is far, then yields until it has passed.
async fn wait_until(due: Instant) {
    loop {
        let now = Instant::now();
        if now >= due {
            return;
        }
        if due - now > SPIN_BELOW {
            tokio::time::sleep_until((due - SPIN_BELOW).into()).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("tollgate-load").chain(extra.iter().copied())).unwrap()
    }

    #[test]
    fn plan_defaults_and_bad_flags() {
        let plan = Plan::from_args(&args(&[])).unwrap();
        assert!(matches!(plan.stop, Stop::After(d) if d == Duration::from_secs(10)));
        assert_eq!(plan.rate, None);
        let plan = Plan::from_args(&args(&["--requests", "5", "--rate", "100"])).unwrap();
        assert!(matches!(plan.stop, Stop::Count(5)));
        for bad in [
            &["--connections", "0"][..],
            &["--concurrency", "0"],
            &["--requests", "0"],
            &["--duration", "0"],
            &["--duration=-1"],
            &["--rate", "0"],
            &["--rate", "NaN"],
            &["--warmup=-2"],
            &["--timeout", "0"],
        ] {
            assert!(Plan::from_args(&args(bad)).is_err(), "{bad:?}");
        }
        assert!(
            Args::try_parse_from(["tollgate-load", "--duration", "1", "--requests", "2"]).is_err()
        );
    }

    #[test]
    fn tally_separates_warmup_and_keeps_the_first_error() {
        let mut tally = Tally::new();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        tally.record(false, ms(1), None, t0, Ok(Answer::Ok));
        tally.record(false, ms(1), None, t0, Err(Failure::OverallCode(0)));
        tally.record(true, ms(2), None, t0 + ms(5), Ok(Answer::OverLimit));
        tally.record(
            true,
            ms(3),
            Some(ms(1)),
            t0 + ms(3),
            Err(Failure::NoLimit { index: 0 }),
        );
        assert_eq!((tally.warmup_calls, tally.warmup_errors), (2, 1));
        assert_eq!(
            (tally.calls, tally.ok, tally.over_limit, tally.errors),
            (2, 0, 1, 1)
        );
        assert_eq!(tally.latency.len(), 2);
        assert_eq!(tally.send_lag.len(), 1);
        assert_eq!(tally.last_answer, Some(t0 + ms(5)));
        assert_eq!(tally.error_kinds.len(), 2);
        assert!(tally.first_error.unwrap().contains("overall_code is 0"));
    }
}
