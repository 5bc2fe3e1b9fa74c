//! A [`Decision`] written straight to the bytes of a `RateLimitResponse`, without building the
//! message first.
//!
//! The gRPC service answers every call this way: building the generated message first costs an
//! allocation for its statuses, the moves of every field, and prost measuring each nested
//! message twice (once for the whole answer, once more as it writes each length), about 1,100
//! instructions more on a call of 3 descriptors and a global cap (callgrind). The bytes are
//! exactly prost's encoding of [`super::to_response`] (fields in tag number order, proto3
//! defaults left out), which the tests check over every kind of status.

use bytes::BufMut;
use prost::encoding::{WireType, encoded_len_varint, key_len};

use super::response::{global_cap_metadata, wire_code, wire_duration, wire_unit};
use crate::engine::{Code, Decision, DescriptorStatus, ReportedLimit};

// Field numbers of Envoy's `RateLimitResponse` (`proto/envoy/service/ratelimit/v3/rls.proto`).
const RESPONSE_OVERALL_CODE: u32 = 1;
const RESPONSE_STATUSES: u32 = 2;
const RESPONSE_DYNAMIC_METADATA: u32 = 6;
const STATUS_CODE: u32 = 1;
const STATUS_CURRENT_LIMIT: u32 = 2;
const STATUS_LIMIT_REMAINING: u32 = 3;
const STATUS_DURATION_UNTIL_RESET: u32 = 4;
const LIMIT_REQUESTS_PER_UNIT: u32 = 1;
const LIMIT_UNIT: u32 = 2;
const LIMIT_NAME: u32 = 3;
const DURATION_SECONDS: u32 = 1;
const DURATION_NANOS: u32 = 2;

/// A `RateLimitResponse` written out: what the gRPC service answers, made while the decision's
/// names are still borrowed from the configuration, and copied as it is into the gRPC frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedResponse(Vec<u8>);

impl EncodedResponse {
    /// `decision`, written out.
    pub fn of<N: AsRef<str>>(decision: &Decision<N>) -> EncodedResponse {
        EncodedResponse::new(
            decision.code,
            &decision.statuses,
            decision.denied_by_global.as_ref().map(AsRef::as_ref),
        )
    }

    /// A decision given by its parts, the statuses in the call's order.
    pub fn new<'s, N: AsRef<str> + 's>(
        code: Code,
        statuses: impl IntoIterator<Item = &'s DescriptorStatus<N>, IntoIter: ExactSizeIterator>,
        denied_by_global: Option<&str>,
    ) -> EncodedResponse {
        let statuses = statuses.into_iter();
        // Room for a status with a limit, a reset and a short name; a longer answer grows.
        let mut bytes = Vec::with_capacity(8 + 48 * statuses.len());
        write_response(code, statuses, denied_by_global, &mut bytes);
        EncodedResponse(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

fn write_response<'s, N: AsRef<str> + 's>(
    code: Code,
    statuses: impl IntoIterator<Item = &'s DescriptorStatus<N>>,
    denied_by_global: Option<&str>,
    buf: &mut impl BufMut,
) {
    let mut out = Fields::default();
    out.varint(RESPONSE_OVERALL_CODE, wire_code(code) as u64);
    out.flush(buf);
    for status in statuses {
        encode_status(status, &mut out, buf);
    }
    if let Some(name) = denied_by_global {
        // Rare (a denial by a global cap), so built as a message and left to prost.
        prost::encoding::message::encode(
            RESPONSE_DYNAMIC_METADATA,
            &global_cap_metadata(name.to_owned()),
            buf,
        );
    }
}

fn encode_status<N: AsRef<str>>(
    status: &DescriptorStatus<N>,
    out: &mut Fields,
    buf: &mut impl BufMut,
) {
    let code = wire_code(status.code) as u64;
    let limit = status.current_limit.as_ref();
    let name = limit
        .and_then(|limit| limit.name.as_ref())
        .map_or("", AsRef::as_ref);
    let limit_len = limit.map(|limit| limit_len(limit, name));
    let reset = status.duration_until_reset.map(|d| {
        let d = wire_duration(d);
        // Both are never negative: a varint of their value, as prost writes int64 and int32.
        let (seconds, nanos) = (d.seconds as u64, d.nanos as u64);
        let len =
            varint_field_len(DURATION_SECONDS, seconds) + varint_field_len(DURATION_NANOS, nanos);
        (seconds, nanos, len)
    });
    let len = varint_field_len(STATUS_CODE, code)
        + limit_len.map_or(0, |len| message_field_len(STATUS_CURRENT_LIMIT, len))
        + varint_field_len(STATUS_LIMIT_REMAINING, status.limit_remaining.into())
        + reset.map_or(0, |(_, _, len)| {
            message_field_len(STATUS_DURATION_UNTIL_RESET, len)
        });

    out.header(RESPONSE_STATUSES, len);
    out.varint(STATUS_CODE, code);
    if let (Some(limit), Some(len)) = (limit, limit_len) {
        out.header(STATUS_CURRENT_LIMIT, len);
        out.varint(LIMIT_REQUESTS_PER_UNIT, limit.requests_per_unit.into());
        out.varint(LIMIT_UNIT, wire_unit(limit.unit) as u64);
        if !name.is_empty() {
            out.header(LIMIT_NAME, name.len());
            out.flush(buf);
            buf.put_slice(name.as_bytes());
        }
    }
    out.varint(STATUS_LIMIT_REMAINING, status.limit_remaining.into());
    if let Some((seconds, nanos, len)) = reset {
        out.header(STATUS_DURATION_UNTIL_RESET, len);
        out.varint(DURATION_SECONDS, seconds);
        out.varint(DURATION_NANOS, nanos);
    }
    out.flush(buf);
}

fn limit_len<N>(limit: &ReportedLimit<N>, name: &str) -> usize {
    varint_field_len(LIMIT_REQUESTS_PER_UNIT, limit.requests_per_unit.into())
        + varint_field_len(LIMIT_UNIT, wire_unit(limit.unit) as u64)
        + if name.is_empty() {
            0
        } else {
            message_field_len(LIMIT_NAME, name.len())
        }
}

fn varint_field_len(tag: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(value)
    }
}

fn message_field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// The widest field: a one-byte key (every tag here is below 16) and a 10-byte varint.
const FIELD_MAX: usize = 11;
/// The most fields written between two flushes: a status with no name writes all of its own
/// in one go (its key and length, code, the limit's key and length, requests, unit, remaining
/// count, the reset's key and length, seconds, nanos); one with a name flushes before it.
const FIELDS_MAX: usize = 9;
const SCRATCH: usize = FIELD_MAX * FIELDS_MAX;

/// Fields gathered on the stack and handed to the answer's buffer a status at a time: a
/// `Vec` checks its capacity on every write, and a byte at a time that costs more than the
/// copy (writing prost's `encode_varint` into a byte slice instead cost more still; README,
/// "Tried and not kept").
struct Fields {
    bytes: [u8; SCRATCH],
    len: usize,
}

impl Default for Fields {
    fn default() -> Self {
        Fields {
            bytes: [0; SCRATCH],
            len: 0,
        }
    }
}

impl Fields {
    /// A scalar field, left out when it is 0 (proto3's default).
    fn varint(&mut self, tag: u32, value: u64) {
        if value != 0 {
            self.key(tag, WireType::Varint);
            self.raw_varint(value);
        }
    }

    /// The key and length of a length-delimited field (a message or a string) of `len` bytes.
    fn header(&mut self, tag: u32, len: usize) {
        self.key(tag, WireType::LengthDelimited);
        self.raw_varint(len as u64);
    }

    fn key(&mut self, tag: u32, wire_type: WireType) {
        self.raw_varint(u64::from((tag << 3) | wire_type as u32));
    }

    fn raw_varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.byte(value as u8 | 0x80);
            value >>= 7;
        }
        self.byte(value as u8);
    }

    fn byte(&mut self, byte: u8) {
        // In bounds whatever the values: FIELDS_MAX fields of at most FIELD_MAX bytes between
        // two flushes (see above). A byte past the end would be a bug here, so it panics
        // rather than send a corrupt answer.
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    fn flush(&mut self, buf: &mut impl BufMut) {
        buf.put_slice(&self.bytes[..self.len]);
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prost::Message;

    use super::*;
    use crate::config::Unit;
    use crate::engine::Code;
    use crate::wire::to_response;

    /// Every kind of status the engine gives, each field at the values where its encoding
    /// changes: absent, 0 (left out), one- and two-byte varints and lengths, the largest.
    fn statuses() -> Vec<DescriptorStatus> {
        let names = [
            None,
            Some(String::new()),
            Some("per_user".to_owned()),
            Some("n".repeat(200)),
        ];
        let mut limits = vec![None];
        for name in &names {
            for requests_per_unit in [0, 1, 128, u32::MAX] {
                for unit in Unit::ALL {
                    limits.push(Some(ReportedLimit {
                        name: name.clone(),
                        requests_per_unit,
                        unit,
                    }));
                }
            }
        }
        let resets = [
            None,
            Some(Duration::ZERO),
            Some(Duration::from_secs(1)),
            Some(Duration::from_millis(500)),
            Some(Duration::from_millis(1_500)),
            Some(Duration::new(59, 1)),
            Some(Duration::from_secs(31 * 86_400)),
            Some(Duration::MAX),
        ];
        let mut statuses = Vec::new();
        for code in [Code::Ok, Code::OverLimit] {
            for limit in &limits {
                for limit_remaining in [0, 1, 127, 128, 16_384, u32::MAX] {
                    for reset in resets {
                        statuses.push(DescriptorStatus {
                            code,
                            current_limit: limit.clone(),
                            limit_remaining,
                            duration_until_reset: reset,
                        });
                    }
                }
            }
        }
        statuses
    }

    /// Answers of 0 to 3 of those statuses, with and without a denying global cap.
    fn decisions() -> Vec<Decision> {
        let statuses = statuses();
        let caps = [None, Some(String::new()), Some("account_total".to_owned())];
        let mut decisions = Vec::new();
        let mut rest = &statuses[..];
        for i in 0.. {
            let take = (i % 4).min(rest.len());
            decisions.push(Decision {
                code: if i % 2 == 0 {
                    Code::Ok
                } else {
                    Code::OverLimit
                },
                statuses: rest[..take].to_vec(),
                denied_by_global: caps[i % caps.len()].clone(),
            });
            rest = &rest[take..];
            if rest.is_empty() {
                break;
            }
        }
        // A name whose length takes three varint bytes.
        let mut long_name = statuses[statuses.len() / 2].clone();
        long_name.current_limit = Some(ReportedLimit {
            name: Some("n".repeat(20_000)),
            requests_per_unit: 10,
            unit: Unit::Minute,
        });
        decisions.push(Decision {
            code: Code::Ok,
            statuses: vec![long_name; 2],
            denied_by_global: None,
        });
        decisions
    }

    #[test]
    fn writes_the_bytes_prost_writes_for_the_same_answer() {
        let decisions = decisions();
        assert!(decisions.len() > 4_000, "{} answers", decisions.len());
        for decision in decisions {
            let ours = EncodedResponse::of(&decision).as_bytes().to_vec();
            let expected = to_response(decision.clone());
            assert_eq!(ours, expected.encode_to_vec(), "{decision:?}");
            assert_eq!(
                crate::proto::RateLimitResponse::decode(&ours[..]).ok(),
                Some(expected)
            );
            // The same bytes from the names borrowed, as the gRPC service writes them.
            assert_eq!(
                EncodedResponse::of(&borrowed(&decision)).as_bytes(),
                &ours[..]
            );
        }
    }

    /// `decision` with its names borrowed, as the engine hands it to the gRPC service.
    fn borrowed(decision: &Decision) -> Decision<&str> {
        Decision {
            code: decision.code,
            statuses: decision
                .statuses
                .iter()
                .map(|status| DescriptorStatus {
                    code: status.code,
                    current_limit: status.current_limit.as_ref().map(|limit| ReportedLimit {
                        name: limit.name.as_deref(),
                        requests_per_unit: limit.requests_per_unit,
                        unit: limit.unit,
                    }),
                    limit_remaining: status.limit_remaining,
                    duration_until_reset: status.duration_until_reset,
                })
                .collect(),
            denied_by_global: decision.denied_by_global.as_deref(),
        }
    }

    #[test]
    fn an_answer_given_by_parts_is_the_same_bytes() {
        // As the ceiling gives its answer: one status, repeated.
        let ok = DescriptorStatus {
            code: Code::Ok,
            current_limit: None,
            limit_remaining: 0,
            duration_until_reset: None,
        };
        let repeated = EncodedResponse::new(Code::Ok, std::iter::repeat_n(&ok, 3), None);
        let whole = Decision {
            code: Code::Ok,
            statuses: vec![ok; 3],
            denied_by_global: None,
        };
        assert_eq!(repeated.as_bytes(), to_response(whole).encode_to_vec());
    }
}
