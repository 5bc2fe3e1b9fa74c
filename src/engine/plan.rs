//! From a call and the domain's matched rules to the list of counter operations it touches.
//!
//! The plan is the whole of what the actors must decide as one step: every limit of every
//! descriptor that was not replaced, plus the domain's global caps. Counter keys are built
//! into one buffer. No two distinct counters share a key: a key starts with its kind (`d` for a
//! descriptor's, `g` for a global cap's), then every string prefixed by its length and every
//! count and number written as a varint (LEB128: no varint is the start of a longer one), so a
//! key reads back one way only. They are kept short, since a table stores a short key in the counter's
//! own cache line.

use std::ops::Range;

use super::actors::{Actors, Place};
use super::call::{Call, Descriptor, LimitOverride, ReportedLimit};
use crate::config::{DomainRules, FailMode, GlobalCap, LimitPolicy, Node, RuleLimit, Unit};
use crate::limits::{FixedWindow, Mode, Verdict};

/// One counter the call touches.
#[derive(Debug)]
pub(crate) struct Op<'c> {
    pub key: Range<usize>,
    /// The key's hash, for routing and for the actor's table (one hash per key and call).
    pub hash: u64,
    pub actor: usize,
    pub window: FixedWindow,
    pub hits: u64,
    pub mode: Mode,
    /// Whether this counter can deny the call (shadow limits only count).
    pub decides: bool,
    pub fail_closed: bool,
    pub source: LimitSource<'c>,
    /// Set by the actors' turn: this operation's decision, and the count stored before the
    /// call (what a denied call reports).
    pub verdict: Option<Verdict>,
    pub stored_count: u64,
    /// A shadow limit that found no room for a new counter: it is not written.
    pub no_room: bool,
    /// Where the actors' turn keeps this operation's counter.
    pub place: Place,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum LimitSource<'c> {
    Rule {
        limit: &'c RuleLimit,
        name: Option<&'c str>,
    },
    Override(LimitOverride),
    Global(&'c GlobalCap),
}

impl<'c> LimitSource<'c> {
    pub fn reported(&self) -> Option<ReportedLimit<&'c str>> {
        match *self {
            LimitSource::Rule { limit, name } => match limit.policy {
                LimitPolicy::PerUnit {
                    requests_per_unit,
                    unit,
                } => Some(ReportedLimit {
                    name,
                    requests_per_unit,
                    unit,
                }),
                LimitPolicy::Unlimited => None,
            },
            LimitSource::Override(o) => Some(ReportedLimit {
                name: None,
                requests_per_unit: o.requests_per_unit,
                unit: o.unit,
            }),
            // A global cap's volume is never disclosed in a status.
            LimitSource::Global(_) => None,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct DescriptorPlan<'c> {
    pub ops: Range<usize>,
    /// An `unlimited` rule matched: OK with no counter.
    pub unlimited: bool,
    /// The rule the descriptor matched, if any.
    pub rule: Option<&'c Node>,
}

#[derive(Debug, Default)]
pub(crate) struct Plan<'c> {
    pub keys: Vec<u8>,
    pub ops: Vec<Op<'c>>,
    pub descriptors: Vec<DescriptorPlan<'c>>,
    /// `ops[global_from..]` are the domain's global caps.
    pub global_from: usize,
}

impl<'c> Plan<'c> {
    pub fn build<D: Descriptor>(
        domain: &'c DomainRules,
        call: &Call<'_, D>,
        actors: &Actors,
    ) -> Plan<'c> {
        let request_hits = u64::from(call.hits.max(1));
        let find = |d: &D| match d.limit_override() {
            Some(_) => None,
            None => domain.find(d.entries()),
        };
        // `replaces` works across descriptors, so where the domain uses it every descriptor is
        // matched before any is planned; elsewhere each is matched as it is planned.
        let matches: Vec<_> = if domain.has_replaces {
            call.descriptors.iter().map(find).collect()
        } else {
            Vec::new()
        };
        let replaced: Vec<&str> = matches
            .iter()
            .flatten()
            .flat_map(|m| m.limits.iter())
            .flat_map(|l| l.replaces.iter().map(String::as_str))
            .collect();

        let key_bytes: usize = call
            .descriptors
            .iter()
            .flat_map(|d| d.entries())
            .map(|(k, v)| k.len() + v.len() + 8)
            .sum();
        let mut plan = Plan {
            keys: Vec::with_capacity(64 + 2 * (key_bytes + domain.name.len())),
            ops: Vec::with_capacity(call.descriptors.len() + domain.global.len()),
            descriptors: Vec::with_capacity(call.descriptors.len()),
            global_from: 0,
        };
        for (index, descriptor) in call.descriptors.iter().enumerate() {
            let found_now;
            let matched = match matches.get(index) {
                Some(m) => m.as_ref(),
                None => {
                    found_now = find(descriptor);
                    found_now.as_ref()
                }
            };
            let start = plan.ops.len();
            let mut unlimited = false;
            let hits = descriptor.hits().unwrap_or(request_hits);
            let mode = descriptor_mode(descriptor);
            if let Some(o) = descriptor.limit_override() {
                let key = plan.key(domain, descriptor, &[], KeySlot::Override(o));
                let (actor, hash) = actors.locate(&plan.keys[key.clone()]);
                plan.ops.push(Op {
                    key,
                    hash,
                    actor,
                    window: FixedWindow {
                        volume: o.requests_per_unit,
                        unit_secs: o.unit.seconds(),
                    },
                    hits,
                    mode,
                    decides: true,
                    fail_closed: false,
                    source: LimitSource::Override(o),
                    verdict: None,
                    stored_count: 0,
                    no_room: false,
                    place: Place::default(),
                });
            } else if let Some(m) = matched {
                for (index, limit) in m.limits.iter().enumerate() {
                    let name = domain.limit_name(limit);
                    if name.is_some_and(|n| replaced.contains(&n)) {
                        continue;
                    }
                    let LimitPolicy::PerUnit {
                        requests_per_unit,
                        unit,
                    } = limit.policy
                    else {
                        unlimited = true;
                        continue;
                    };
                    let slot = KeySlot::Rule { index, unit };
                    let key = plan.key(domain, descriptor, &m.shared_values, slot);
                    let (actor, hash) = actors.locate(&plan.keys[key.clone()]);
                    plan.ops.push(Op {
                        key,
                        hash,
                        actor,
                        window: FixedWindow {
                            volume: requests_per_unit,
                            unit_secs: unit.seconds(),
                        },
                        hits,
                        mode: match mode {
                            Mode::Charge if limit.postpaid => Mode::Postpaid,
                            other => other,
                        },
                        decides: !limit.shadow_mode,
                        fail_closed: limit.fail == FailMode::Closed,
                        source: LimitSource::Rule { limit, name },
                        verdict: None,
                        stored_count: 0,
                        no_room: false,
                        place: Place::default(),
                    });
                }
            }
            plan.descriptors.push(DescriptorPlan {
                ops: start..plan.ops.len(),
                unlimited,
                rule: matched.map(|m| m.node),
            });
        }

        plan.global_from = plan.ops.len();
        if let Some(mode) = global_mode(call) {
            for cap in &domain.global {
                let key = plan.global_key(domain, cap);
                let (actor, hash) = actors.locate_global(&plan.keys[key.clone()]);
                plan.ops.push(Op {
                    key,
                    hash,
                    actor,
                    window: FixedWindow {
                        volume: cap.requests_per_unit,
                        unit_secs: cap.unit.seconds(),
                    },
                    hits: request_hits,
                    mode,
                    decides: true,
                    fail_closed: true,
                    source: LimitSource::Global(cap),
                    verdict: None,
                    stored_count: 0,
                    no_room: false,
                    place: Place::default(),
                });
            }
        }
        plan
    }

    pub fn global_ops(&self) -> &[Op<'c>] {
        &self.ops[self.global_from..]
    }

    pub fn has_fail_closed(&self) -> bool {
        self.ops.iter().any(|op| op.fail_closed)
    }

    fn key(
        &mut self,
        domain: &DomainRules,
        descriptor: &impl Descriptor,
        shared_values: &[(usize, &str)],
        slot: KeySlot,
    ) -> Range<usize> {
        let start = self.keys.len();
        self.keys.push(b'd');
        self.put_str(&domain.name);
        let entries = descriptor.entries();
        self.put_varint(entries.len() as u64);
        for (i, (key, value)) in entries.enumerate() {
            let value = shared_values
                .iter()
                .find(|(at, _)| *at == i)
                .map_or(value, |(_, pattern)| *pattern);
            self.put_str(key);
            self.put_str(value);
        }
        match slot {
            KeySlot::Rule { index, unit } => {
                self.keys.push(b'r');
                self.put_varint(index as u64);
                self.put_varint(unit.seconds());
            }
            KeySlot::Override(o) => {
                self.keys.push(b'o');
                self.put_varint(u64::from(o.requests_per_unit));
                self.put_varint(o.unit.seconds());
            }
        }
        start..self.keys.len()
    }

    fn global_key(&mut self, domain: &DomainRules, cap: &GlobalCap) -> Range<usize> {
        let start = self.keys.len();
        self.keys.push(b'g');
        self.put_str(&domain.name);
        self.put_str(&cap.name);
        self.put_varint(cap.unit.seconds());
        start..self.keys.len()
    }

    fn put_str(&mut self, s: &str) {
        self.put_varint(s.len() as u64);
        self.keys.extend_from_slice(s.as_bytes());
    }

    /// LEB128: seven bits a byte, low first, the top bit set on every byte but the last (one
    /// byte for a string shorter than 128 bytes).
    fn put_varint(&mut self, mut n: u64) {
        while n >= 0x80 {
            self.keys.push(n as u8 | 0x80);
            n >>= 7;
        }
        self.keys.push(n as u8);
    }
}

#[derive(Clone, Copy, Debug)]
enum KeySlot {
    Rule { index: usize, unit: Unit },
    Override(LimitOverride),
}

/// A refund wins over a probe: a refund of 0 is a no-op that never denies.
fn descriptor_mode(d: &impl Descriptor) -> Mode {
    match (d.hits(), d.refund()) {
        _ if d.settle() => Mode::Settle,
        (_, true) => Mode::Refund,
        (Some(0), _) => Mode::Probe,
        _ => Mode::Charge,
    }
}

/// How the call touches its domain's global caps: charged once with the request-level hits,
/// checked only for a call made of probes (and refunds), untouched by a call of refunds and
/// settlements alone.
fn global_mode<D: Descriptor>(call: &Call<'_, D>) -> Option<Mode> {
    let modes = || call.descriptors.iter().map(descriptor_mode);
    if modes().any(|m| m == Mode::Charge) {
        Some(Mode::Charge)
    } else if modes().any(|m| m == Mode::Probe) {
        Some(Mode::Probe)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::config::load::{LoadOptions, load_sources};
    use crate::config::{RuleTree, Unit};
    use crate::engine::CallDescriptor;

    fn descriptor<'a>(entries: &[(&'a str, &'a str)]) -> CallDescriptor<'a> {
        CallDescriptor {
            entries: entries.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn distinct_counters_never_share_a_key() {
        let yaml = "domain: d
global:
  - {name: k, unit: minute, requests_per_unit: 1}
  - {name: kv, unit: minute, requests_per_unit: 1}
descriptors:
  - key: k
    rate_limit: {unit: minute, requests_per_unit: 1}
";
        let config = load_sources(&[("d.yaml".into(), yaml.into())], &LoadOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let tree = RuleTree::build(&config);
        let domain = tree.domain("d").expect("domain d");
        let long_key = "t".repeat(114); // its length is the byte of the `r` tag
        let other_long_key = "t".repeat(111); // and of the `o` tag
        let tail = "x".repeat(20);
        let values: Vec<String> = (30..45).map(|n| "v".repeat(n)).collect();
        let mut cases: Vec<Vec<(&str, &str)>> = vec![
            vec![("kv", "")],
            vec![("k", "v")],
            vec![("k", ""), ("v", "")],
            vec![("k", "v"), ("k", "v")],
            vec![("k", "v"), ("k", "v"), ("k", "v")],
            vec![("k", "vk"), ("v", "")],
            vec![(long_key.as_str(), tail.as_str())],
            vec![(other_long_key.as_str(), tail.as_str())],
            vec![("r", ""), ("", "")],
        ];
        cases.extend(values.iter().map(|v| vec![("k", v.as_str())]));
        let slots = [
            KeySlot::Rule {
                index: 0,
                unit: Unit::Minute,
            },
            KeySlot::Rule {
                index: 1,
                unit: Unit::Minute,
            },
            KeySlot::Rule {
                index: 0,
                unit: Unit::Hour,
            },
            KeySlot::Override(LimitOverride {
                requests_per_unit: 0,
                unit: Unit::Minute,
            }),
            KeySlot::Override(LimitOverride {
                requests_per_unit: 60,
                unit: Unit::Second,
            }),
        ];
        let mut plan = Plan::default();
        let mut keys = HashSet::new();
        for entries in &cases {
            for slot in &slots {
                let range = plan.key(domain, &descriptor(entries), &[], *slot);
                let key = plan.keys[range].to_vec();
                assert!(keys.insert(key), "{entries:?} under {slot:?} shares a key");
            }
        }
        for cap in &domain.global {
            let range = plan.global_key(domain, cap);
            assert!(
                keys.insert(plan.keys[range].to_vec()),
                "global cap {}",
                cap.name
            );
        }
        assert_eq!(keys.len(), cases.len() * slots.len() + 2);
    }
}
