//! The result of a run: counts, throughput and latency percentiles, as text or JSON.
//!
//! Latencies are recorded in nanoseconds in an HDR histogram (3 significant digits) and
//! reported in microseconds.

use std::collections::BTreeMap;
use std::fmt::Write;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// The quantiles every report carries, with their names in text and JSON.
pub const QUANTILES: [(&str, f64); 4] = [
    ("p50", 0.50),
    ("p90", 0.90),
    ("p99", 0.99),
    ("p99.9", 0.999),
];

/// A new latency histogram: 1 ns to 1 hour, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("constant, valid bounds")
}

/// Latency percentiles in microseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Percentiles {
    /// In the order of [`QUANTILES`].
    pub quantiles: [f64; 4],
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(histogram: &Histogram<u64>) -> Percentiles {
        let us = |ns: u64| ns as f64 / 1_000.0;
        Percentiles {
            quantiles: QUANTILES.map(|(_, q)| us(histogram.value_at_quantile(q))),
            max: us(histogram.max()),
            mean: histogram.mean() / 1_000.0,
        }
    }

    /// `p50 12.3  p90 45.6  p99 ...  p99.9 ...  max ...` (µs).
    pub fn text(&self) -> String {
        let mut out = String::new();
        for ((name, _), value) in QUANTILES.iter().zip(self.quantiles) {
            let _ = write!(out, "{name} {value:.1}  ");
        }
        let _ = write!(out, "max {:.1}", self.max);
        out
    }

    pub fn json(&self) -> Value {
        let mut map = serde_json::Map::new();
        for ((name, _), value) in QUANTILES.iter().zip(self.quantiles) {
            map.insert(format!("{name}_us"), json!(round3(value)));
        }
        map.insert("max_us".into(), json!(round3(self.max)));
        map.insert("mean_us".into(), json!(round3(self.mean)));
        Value::Object(map)
    }
}

fn round3(x: f64) -> f64 {
    (x * 1_000.0).round() / 1_000.0
}

/// How the load was offered.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// As fast as the in-flight bound allows; latency from each call's actual start.
    Closed,
    /// At a fixed rate (calls/s); latency from each call's intended start.
    Open { rate: f64 },
}

#[derive(Clone, Debug)]
pub struct Report {
    pub workload: String,
    pub domain: String,
    pub mode: Mode,
    pub connections: usize,
    pub concurrency: usize,
    /// Calls of the measured phase (after warmup), errors included.
    pub calls: u64,
    pub ok: u64,
    pub over_limit: u64,
    pub errors: u64,
    /// Error counts by kind, across warmup and the measured phase.
    pub error_kinds: BTreeMap<String, u64>,
    /// The first error seen, in full.
    pub first_error: Option<String>,
    pub warmup_calls: u64,
    pub warmup_errors: u64,
    /// From the end of warmup to the last measured answer.
    pub elapsed_secs: f64,
    pub latency: Percentiles,
    /// Open loop only: how late each call was sent after its intended start (the generator's
    /// own scheduling delay, already included in `latency`).
    pub send_lag: Option<Percentiles>,
}

impl Report {
    pub fn throughput(&self) -> f64 {
        if self.elapsed_secs > 0.0 {
            self.calls as f64 / self.elapsed_secs
        } else {
            0.0
        }
    }

    /// Every call sent, warmup included: what the server's CPU time is divided by.
    pub fn total_calls(&self) -> u64 {
        self.calls + self.warmup_calls
    }

    pub fn failed(&self) -> bool {
        self.errors > 0 || self.warmup_errors > 0
    }

    pub fn text(&self) -> String {
        let mode = match self.mode {
            Mode::Closed => "closed loop".to_owned(),
            Mode::Open { rate } => format!("open loop at {rate:.0} calls/s"),
        };
        let mut out = format!(
            "{} on domain {}: {mode}, {} connections, {} in flight\n",
            self.workload, self.domain, self.connections, self.concurrency
        );
        let _ = writeln!(
            out,
            "calls       {} (ok {}, over_limit {}), errors {}; warmup {} calls, {} errors",
            self.calls,
            self.ok,
            self.over_limit,
            self.errors,
            self.warmup_calls,
            self.warmup_errors
        );
        let _ = writeln!(
            out,
            "throughput  {:.1} calls/s over {:.3} s",
            self.throughput(),
            self.elapsed_secs
        );
        let _ = writeln!(out, "latency µs  {}", self.latency.text());
        if let Some(lag) = &self.send_lag {
            let _ = writeln!(out, "send lag µs {}", lag.text());
        }
        for (kind, count) in &self.error_kinds {
            let _ = writeln!(out, "error       {kind}: {count}");
        }
        if let Some(first) = &self.first_error {
            let _ = writeln!(out, "first error {first}");
        }
        out
    }

    pub fn json(&self) -> Value {
        let (mode, rate) = match self.mode {
            Mode::Closed => ("closed", Value::Null),
            Mode::Open { rate } => ("open", json!(rate)),
        };
        json!({
            "workload": self.workload,
            "domain": self.domain,
            "mode": mode,
            "rate": rate,
            "connections": self.connections,
            "concurrency": self.concurrency,
            "calls": self.calls,
            "ok": self.ok,
            "over_limit": self.over_limit,
            "errors": self.errors,
            "error_kinds": self.error_kinds,
            "first_error": self.first_error,
            "warmup_calls": self.warmup_calls,
            "warmup_errors": self.warmup_errors,
            "total_calls": self.total_calls(),
            "elapsed_secs": round3(self.elapsed_secs),
            "throughput": round3(self.throughput()),
            "latency": self.latency.json(),
            "send_lag": self.send_lag.as_ref().map(Percentiles::json),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1..=1000 µs, one call each: every percentile is known.
    fn histogram() -> Histogram<u64> {
        let mut h = latency_histogram();
        for us in 1..=1000u64 {
            h.record(us * 1_000).unwrap();
        }
        h
    }

    fn report() -> Report {
        Report {
            workload: "uniform".into(),
            domain: "bench".into(),
            mode: Mode::Closed,
            connections: 8,
            concurrency: 256,
            calls: 1000,
            ok: 990,
            over_limit: 10,
            errors: 0,
            error_kinds: BTreeMap::new(),
            first_error: None,
            warmup_calls: 50,
            warmup_errors: 0,
            elapsed_secs: 0.5,
            latency: Percentiles::of(&histogram()),
            send_lag: None,
        }
    }

    #[test]
    fn percentiles_are_read_from_the_histogram_in_microseconds() {
        let p = Percentiles::of(&histogram());
        // 3 significant digits: each value within 0.1% of the exact one.
        let exact = [500.0, 900.0, 990.0, 999.0];
        for (got, want) in p.quantiles.iter().zip(exact) {
            assert!((got - want).abs() <= want * 0.001, "{got} vs {want}");
        }
        assert!((p.max - 1000.0).abs() <= 1.0);
        assert!((p.mean - 500.5).abs() <= 0.5);
    }

    #[test]
    fn percentile_text_names_every_quantile_in_order() {
        let p = Percentiles {
            quantiles: [12.34, 56.0, 789.06, 1000.0],
            max: 2000.5,
            mean: 30.0,
        };
        assert_eq!(
            p.text(),
            "p50 12.3  p90 56.0  p99 789.1  p99.9 1000.0  max 2000.5"
        );
        let j = p.json();
        assert_eq!(j["p50_us"], json!(12.34));
        assert_eq!(j["p99.9_us"], json!(1000.0));
        assert_eq!(j["max_us"], json!(2000.5));
    }

    #[test]
    fn text_report_shows_counts_throughput_and_latency() {
        let text = report().text();
        assert!(
            text.starts_with(
                "uniform on domain bench: closed loop, 8 connections, 256 in flight\n"
            )
        );
        assert!(text.contains("calls       1000 (ok 990, over_limit 10), errors 0;"));
        assert!(text.contains("throughput  2000.0 calls/s over 0.500 s"));
        assert!(text.contains("latency µs  p50 500."));
        assert!(!text.contains("send lag"));
        assert!(!text.contains("error       "));
    }

    #[test]
    fn json_report_carries_what_the_bench_script_reads() {
        let mut r = report();
        r.mode = Mode::Open { rate: 1500.0 };
        r.errors = 2;
        r.error_kinds.insert("grpc Unavailable".into(), 2);
        r.send_lag = Some(Percentiles::of(&histogram()));
        let j = r.json();
        assert_eq!(j["mode"], "open");
        assert_eq!(j["rate"], json!(1500.0));
        assert_eq!(j["calls"], 1000);
        assert_eq!(j["total_calls"], 1050);
        assert_eq!(j["throughput"], json!(2000.0));
        assert_eq!(j["errors"], 2);
        assert_eq!(j["error_kinds"]["grpc Unavailable"], 2);
        assert!(j["latency"]["p99_us"].as_f64().unwrap() > 980.0);
        assert!(j["send_lag"]["p50_us"].is_number());
        assert!(r.failed());
        assert!(r.text().contains("error       grpc Unavailable: 2"));
    }

    #[test]
    fn zero_elapsed_is_zero_throughput_not_infinity() {
        let mut r = report();
        r.elapsed_secs = 0.0;
        assert_eq!(r.throughput(), 0.0);
    }
}
