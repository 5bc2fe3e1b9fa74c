//! A `RateLimitRequest` read in place: its strings borrowed from the request's bytes.
//!
//! prost's generated decoder copies every string into a `String` of its own and every
//! descriptor's entries into a `Vec` of their own, and all of them are freed after the call:
//! 11 allocations for 3 descriptors of 1 entry each. Read in place, a request costs 1 list of
//! descriptors and 1 list of entries per descriptor.
//!
//! The wire primitives (keys, varints, skipping unknown fields) are prost's. This module walks
//! the request's four messages by prost's rules: an unknown field is skipped, the last value of
//! a scalar field wins, a message field given twice is merged, and every string must be UTF-8.
//! The tests hold it to prost's decoder over random and corrupted requests.

use prost::DecodeError;
use prost::encoding::{DecodeContext, WireType, check_wire_type, decode_key, decode_varint};

use super::request::{InvalidRequest, RequestBounds};

/// How deep groups may nest in the fields this service skips: prost's recursion limit at the
/// request, one level fewer in each message nested in it, as prost spends it.
const REQUEST_DEPTH: u32 = 100;

/// A `RateLimitRequest`, its strings borrowed from the bytes it was read from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WireRequest<'a> {
    pub domain: &'a str,
    pub descriptors: Vec<WireDescriptor<'a>>,
    pub hits_addend: u32,
}

/// A `RateLimitDescriptor`, its strings borrowed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WireDescriptor<'a> {
    /// `(key, value)`, in order.
    pub entries: Vec<(&'a str, &'a str)>,
    pub limit: Option<WireOverride>,
    /// `google.protobuf.UInt64Value`: absent is `None`, an explicit 0 is `Some(0)`.
    pub hits_addend: Option<u64>,
    pub is_negative_hits: bool,
}

/// A `RateLimitDescriptor.RateLimitOverride`; its unit as sent (`to_call` checks it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WireOverride {
    pub requests_per_unit: u32,
    pub unit: i32,
}

impl<'a> WireRequest<'a> {
    /// Reads a request from its protobuf bytes. An error names the field it is in (`request`
    /// for the message's own framing). More descriptors, or more entries in one, than `bounds`
    /// allow stop the reading there: what a request may make this service hold follows the
    /// configuration, not the size of the message.
    pub fn parse(
        bytes: &'a [u8],
        bounds: &RequestBounds,
    ) -> Result<WireRequest<'a>, InvalidRequest> {
        request(bytes, bounds).map_err(|mut e| {
            if e.field.is_empty() {
                e.field = "request".to_owned();
            }
            e
        })
    }
}

fn request<'a>(
    mut rest: &'a [u8],
    bounds: &RequestBounds,
) -> Result<WireRequest<'a>, InvalidRequest> {
    let mut request = WireRequest::default();
    while let Some((tag, wire_type)) = next_field(&mut rest)? {
        match tag {
            1 => request.domain = string(&mut rest, wire_type).map_err(within(|| "domain"))?,
            2 => {
                let index = request.descriptors.len();
                if index == bounds.max_descriptors {
                    return Err(too_many("descriptors", index));
                }
                let field = || format!("descriptors[{index}]");
                let body = delimited(&mut rest, wire_type).map_err(within(field))?;
                request
                    .descriptors
                    .push(descriptor(body, bounds).map_err(within(field))?);
            }
            3 => {
                // uint32: the varint's low 32 bits, as prost reads it.
                request.hits_addend =
                    varint(&mut rest, wire_type).map_err(within(|| "hits_addend"))? as u32;
            }
            _ => skip(&mut rest, tag, wire_type, REQUEST_DEPTH)?,
        }
    }
    Ok(request)
}

fn descriptor<'a>(
    mut rest: &'a [u8],
    bounds: &RequestBounds,
) -> Result<WireDescriptor<'a>, InvalidRequest> {
    let mut descriptor = WireDescriptor::default();
    while let Some((tag, wire_type)) = next_field(&mut rest)? {
        match tag {
            1 => {
                let index = descriptor.entries.len();
                if index == bounds.max_entries {
                    return Err(too_many("entries", index));
                }
                let field = || format!("entries[{index}]");
                let body = delimited(&mut rest, wire_type).map_err(within(field))?;
                descriptor.entries.push(entry(body).map_err(within(field))?);
            }
            2 => {
                let body = delimited(&mut rest, wire_type).map_err(within(|| "limit"))?;
                let limit = descriptor.limit.get_or_insert_default();
                merge_override(body, limit).map_err(within(|| "limit"))?;
            }
            3 => {
                let body = delimited(&mut rest, wire_type).map_err(within(|| "hits_addend"))?;
                let hits = descriptor.hits_addend.get_or_insert_default();
                merge_u64_value(body, hits).map_err(within(|| "hits_addend"))?;
            }
            4 => {
                descriptor.is_negative_hits =
                    varint(&mut rest, wire_type).map_err(within(|| "is_negative_hits"))? != 0;
            }
            _ => skip(&mut rest, tag, wire_type, REQUEST_DEPTH - 1)?,
        }
    }
    Ok(descriptor)
}

fn entry(mut rest: &[u8]) -> Result<(&str, &str), InvalidRequest> {
    let (mut key, mut value) = ("", "");
    while let Some((tag, wire_type)) = next_field(&mut rest)? {
        match tag {
            1 => key = string(&mut rest, wire_type).map_err(within(|| "key"))?,
            2 => value = string(&mut rest, wire_type).map_err(within(|| "value"))?,
            _ => skip(&mut rest, tag, wire_type, REQUEST_DEPTH - 2)?,
        }
    }
    Ok((key, value))
}

fn merge_override(mut rest: &[u8], limit: &mut WireOverride) -> Result<(), InvalidRequest> {
    while let Some((tag, wire_type)) = next_field(&mut rest)? {
        match tag {
            1 => {
                limit.requests_per_unit =
                    varint(&mut rest, wire_type).map_err(within(|| "requests_per_unit"))? as u32;
            }
            // An enum: the varint's low 32 bits, as prost reads it.
            2 => limit.unit = varint(&mut rest, wire_type).map_err(within(|| "unit"))? as i32,
            _ => skip(&mut rest, tag, wire_type, REQUEST_DEPTH - 2)?,
        }
    }
    Ok(())
}

fn merge_u64_value(mut rest: &[u8], value: &mut u64) -> Result<(), InvalidRequest> {
    while let Some((tag, wire_type)) = next_field(&mut rest)? {
        match tag {
            1 => *value = varint(&mut rest, wire_type).map_err(within(|| "value"))?,
            _ => skip(&mut rest, tag, wire_type, REQUEST_DEPTH - 2)?,
        }
    }
    Ok(())
}

/// The next field's tag and wire type, or `None` at the end of the message.
fn next_field(rest: &mut &[u8]) -> Result<Option<(u32, WireType)>, InvalidRequest> {
    if rest.is_empty() {
        return Ok(None);
    }
    decode_key(rest).map(Some).map_err(malformed)
}

fn varint(rest: &mut &[u8], wire_type: WireType) -> Result<u64, InvalidRequest> {
    check_wire_type(WireType::Varint, wire_type).map_err(malformed)?;
    decode_varint(rest).map_err(malformed)
}

/// A length-delimited field's bytes.
fn delimited<'a>(rest: &mut &'a [u8], wire_type: WireType) -> Result<&'a [u8], InvalidRequest> {
    check_wire_type(WireType::LengthDelimited, wire_type).map_err(malformed)?;
    let len = decode_varint(rest).map_err(malformed)?;
    let (body, after) = usize::try_from(len)
        .ok()
        .and_then(|len| rest.split_at_checked(len))
        .ok_or_else(|| {
            problem(format!(
                "a length of {len} bytes runs past the end of its message"
            ))
        })?;
    *rest = after;
    Ok(body)
}

fn string<'a>(rest: &mut &'a [u8], wire_type: WireType) -> Result<&'a str, InvalidRequest> {
    std::str::from_utf8(delimited(rest, wire_type)?).map_err(|_| problem("not valid UTF-8"))
}

/// Skips a field this service does not read, as prost does. Groups are walked here rather than
/// by prost's `skip_field`, whose depth budget cannot be set from outside: `depth` is what
/// prost would have left at this message.
fn skip(rest: &mut &[u8], tag: u32, wire_type: WireType, depth: u32) -> Result<(), InvalidRequest> {
    if depth == 0 {
        return Err(problem("groups nested too deep"));
    }
    if wire_type != WireType::StartGroup {
        // Nothing nested: prost's budget is not spent.
        return prost::encoding::skip_field(wire_type, tag, rest, DecodeContext::default())
            .map_err(malformed);
    }
    loop {
        let (inner, inner_type) = decode_key(rest).map_err(malformed)?;
        if inner_type == WireType::EndGroup {
            if inner != tag {
                return Err(problem("a group ends with another field's tag"));
            }
            return Ok(());
        }
        skip(rest, inner, inner_type, depth - 1)?;
    }
}

/// More of `what` than the bounds allow, found when reading the one past the last allowed.
#[cold]
fn too_many(what: &str, allowed: usize) -> InvalidRequest {
    InvalidRequest {
        field: what.to_owned(),
        problem: format!("more than {allowed}, at most {allowed} allowed"),
    }
}

fn malformed(e: DecodeError) -> InvalidRequest {
    problem(e.to_string())
}

/// A problem in the field being read; the fields around it are named on the way out.
fn problem(problem: impl Into<String>) -> InvalidRequest {
    InvalidRequest {
        field: String::new(),
        problem: problem.into(),
    }
}

/// Names the field an error came from, around whatever field inside it the error names:
/// `entries[0]` around `key` is `entries[0].key`.
fn within<S: Into<String>>(
    field: impl FnOnce() -> S,
) -> impl FnOnce(InvalidRequest) -> InvalidRequest {
    move |mut e| {
        let outer = field().into();
        e.field = if e.field.is_empty() {
            outer
        } else {
            format!("{outer}.{}", e.field)
        };
        e
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::proto::rate_limit_descriptor::{Entry, RateLimitOverride};
    use crate::proto::{RateLimitDescriptor, RateLimitRequest};

    /// No bound on counts, as prost has none.
    const UNBOUNDED: RequestBounds = RequestBounds {
        max_descriptors: usize::MAX,
        max_entries: usize::MAX,
        max_string_bytes: usize::MAX,
        max_hits: u64::MAX,
    };

    /// prost's decoding of the same bytes, in this module's terms.
    fn by_prost(bytes: &[u8]) -> Option<RateLimitRequest> {
        RateLimitRequest::decode(bytes).ok()
    }

    fn same(ours: &WireRequest<'_>, theirs: &RateLimitRequest) -> bool {
        ours.domain == theirs.domain
            && ours.hits_addend == theirs.hits_addend
            && ours.descriptors.len() == theirs.descriptors.len()
            && ours
                .descriptors
                .iter()
                .zip(&theirs.descriptors)
                .all(|(a, b)| {
                    a.entries.len() == b.entries.len()
                        && a.entries
                            .iter()
                            .zip(&b.entries)
                            .all(|(&(k, v), e)| k == e.key && v == e.value)
                        && a.limit.map(|o| (o.requests_per_unit, o.unit))
                            == b.limit.as_ref().map(|o| (o.requests_per_unit, o.unit))
                        && a.hits_addend == b.hits_addend
                        && a.is_negative_hits == b.is_negative_hits
                })
    }

    /// Decodes `bytes` both ways and checks they agree: the same request, or both refused.
    fn agree(bytes: &[u8]) -> bool {
        match (WireRequest::parse(bytes, &UNBOUNDED), by_prost(bytes)) {
            (Ok(ours), Some(theirs)) => {
                assert!(
                    same(&ours, &theirs),
                    "{bytes:?}: read as {ours:?}, prost {theirs:?}"
                );
                true
            }
            (Err(_), None) => false,
            (ours, theirs) => panic!("{bytes:?}: read as {ours:?}, prost as {theirs:?}"),
        }
    }

    fn text(rng: &mut fastrand::Rng) -> String {
        const PIECES: [&str; 8] = ["a", "key", "", "é", "日本", "\u{10348}", "0", " "];
        (0..rng.usize(0..5))
            .map(|_| PIECES[rng.usize(..PIECES.len())])
            .collect()
    }

    fn random_request(rng: &mut fastrand::Rng) -> RateLimitRequest {
        RateLimitRequest {
            domain: text(rng),
            hits_addend: if rng.bool() { rng.u32(..) } else { 0 },
            descriptors: (0..rng.usize(0..4))
                .map(|_| RateLimitDescriptor {
                    entries: (0..rng.usize(0..4))
                        .map(|_| Entry {
                            key: text(rng),
                            value: text(rng),
                        })
                        .collect(),
                    limit: rng.bool().then(|| RateLimitOverride {
                        requests_per_unit: rng.u32(..),
                        unit: rng.i32(-2..9),
                    }),
                    hits_addend: rng.bool().then(|| rng.u64(..)),
                    is_negative_hits: rng.bool(),
                })
                .collect(),
        }
    }

    /// A field unknown to a message whose last known field is `known`, of a random wire type
    /// (a group included).
    fn unknown_field(rng: &mut fastrand::Rng, known: u32, out: &mut Vec<u8>) {
        let tag = if rng.bool() {
            rng.u32(known + 1..known + 4)
        } else {
            rng.u32(known + 1..1_000)
        };
        match rng.u8(0..5) {
            0 => {
                prost::encoding::encode_key(tag, WireType::Varint, out);
                prost::encoding::encode_varint(rng.u64(..), out);
            }
            1 => {
                prost::encoding::encode_key(tag, WireType::SixtyFourBit, out);
                out.extend_from_slice(&rng.u64(..).to_le_bytes());
            }
            2 => {
                prost::encoding::encode_key(tag, WireType::ThirtyTwoBit, out);
                out.extend_from_slice(&rng.u32(..).to_le_bytes());
            }
            3 => {
                prost::encoding::encode_key(tag, WireType::LengthDelimited, out);
                let len = rng.usize(0..6);
                prost::encoding::encode_varint(len as u64, out);
                out.extend((0..len).map(|_| rng.u8(..)));
            }
            _ => {
                prost::encoding::encode_key(tag, WireType::StartGroup, out);
                prost::encoding::encode_key(tag + 1, WireType::Varint, out);
                prost::encoding::encode_varint(rng.u64(..), out);
                prost::encoding::encode_key(tag, WireType::EndGroup, out);
            }
        }
    }

    /// `message` (whose last known field is `known`) encoded with unknown fields between its
    /// own, each field possibly given twice.
    fn with_noise(rng: &mut fastrand::Rng, known: u32, message: &impl Message) -> Vec<u8> {
        let plain = message.encode_to_vec();
        let mut fields = Vec::new();
        let mut rest = plain.as_slice();
        while !rest.is_empty() {
            let start = rest;
            let (tag, wire_type) = decode_key(&mut rest).unwrap_or_else(|e| panic!("{e}"));
            prost::encoding::skip_field(wire_type, tag, &mut rest, DecodeContext::default())
                .unwrap_or_else(|e| panic!("{e}"));
            fields.push(&start[..start.len() - rest.len()]);
        }
        let mut out = Vec::new();
        for field in fields {
            if rng.u8(0..4) == 0 {
                unknown_field(rng, known, &mut out);
            }
            if rng.u8(0..6) == 0 {
                out.extend_from_slice(field);
            }
            out.extend_from_slice(field);
        }
        if rng.bool() {
            unknown_field(rng, known, &mut out);
        }
        out
    }

    /// Sometimes, a varint field `tag` with a value of up to 64 bits (which the reader narrows
    /// where the field is narrower), before the field's own value: the later one must win.
    fn decoy_varint(rng: &mut fastrand::Rng, tag: u32, out: &mut Vec<u8>) {
        if rng.u8(0..3) == 0 {
            prost::encoding::encode_key(tag, WireType::Varint, out);
            prost::encoding::encode_varint(rng.u64(..), out);
        }
    }

    /// Sometimes, a string field `tag` with another value, before the field's own.
    fn decoy_string(rng: &mut fastrand::Rng, tag: u32, out: &mut Vec<u8>) {
        if rng.u8(0..3) == 0 {
            prost::encoding::string::encode(tag, &text(rng), out);
        }
    }

    /// Sometimes, a message field `tag` whose body has `fields` (varints of up to 64 bits, by
    /// tag) and unknown fields past the last of them: a first part that later parts merge into.
    fn decoy_message(rng: &mut fastrand::Rng, tag: u32, fields: &[u32], out: &mut Vec<u8>) {
        if rng.u8(0..3) != 0 {
            return;
        }
        let mut body = Vec::new();
        for &field in fields {
            decoy_varint(rng, field, &mut body);
            if rng.bool() {
                unknown_field(rng, fields.len() as u32, &mut body);
            }
        }
        prost::encoding::encode_key(tag, WireType::LengthDelimited, out);
        prost::encoding::encode_varint(body.len() as u64, out);
        out.extend_from_slice(&body);
    }

    #[test]
    fn requests_read_as_prost_reads_them() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..5_000 {
            let request = random_request(&mut rng);
            let bytes = request.encode_to_vec();
            assert!(agree(&bytes), "{request:?} refused");
            let parsed = WireRequest::parse(&bytes, &UNBOUNDED).unwrap_or_else(|e| panic!("{e}"));
            assert!(same(&parsed, &request));
        }
    }

    #[test]
    fn unknown_fields_and_repeated_fields_read_as_prost_reads_them() {
        let mut rng = fastrand::Rng::with_seed(11);
        let mut merged = 0;
        for _ in 0..5_000 {
            let request = random_request(&mut rng);
            // Noise inside each nested message too: descriptors re-encoded with their own.
            let mut bytes = Vec::new();
            if !request.domain.is_empty() || rng.bool() {
                prost::encoding::string::encode(1, &request.domain, &mut bytes);
            }
            for d in &request.descriptors {
                let mut body = Vec::new();
                for e in &d.entries {
                    let mut entry = Vec::new();
                    decoy_string(&mut rng, 1, &mut entry);
                    decoy_string(&mut rng, 2, &mut entry);
                    entry.extend_from_slice(&with_noise(&mut rng, 2, e));
                    prost::encoding::encode_key(1, WireType::LengthDelimited, &mut body);
                    prost::encoding::encode_varint(entry.len() as u64, &mut body);
                    body.extend_from_slice(&entry);
                }
                decoy_message(&mut rng, 2, &[1, 2], &mut body);
                decoy_message(&mut rng, 3, &[1], &mut body);
                decoy_varint(&mut rng, 4, &mut body);
                let rest = RateLimitDescriptor {
                    entries: Vec::new(),
                    ..d.clone()
                };
                body.extend_from_slice(&with_noise(&mut rng, 4, &rest));
                // A message field given again, in part: prost merges it into the first.
                if rng.u8(0..4) == 0 {
                    let partial = RateLimitOverride {
                        requests_per_unit: rng.u32(1..),
                        unit: 0,
                    };
                    prost::encoding::message::encode(2, &partial, &mut body);
                }
                if rng.u8(0..4) == 0 {
                    // An empty UInt64Value: present, and 0 unless a value came before.
                    prost::encoding::encode_key(3, WireType::LengthDelimited, &mut body);
                    prost::encoding::encode_varint(0, &mut body);
                }
                prost::encoding::encode_key(2, WireType::LengthDelimited, &mut bytes);
                prost::encoding::encode_varint(body.len() as u64, &mut bytes);
                bytes.extend_from_slice(&body);
                if rng.u8(0..4) == 0 {
                    unknown_field(&mut rng, 3, &mut bytes);
                }
            }
            let scalars = RateLimitRequest {
                hits_addend: request.hits_addend,
                ..RateLimitRequest::default()
            };
            decoy_varint(&mut rng, 3, &mut bytes);
            bytes.extend_from_slice(&with_noise(&mut rng, 3, &scalars));
            if rng.u8(0..8) == 0 {
                // The last domain wins.
                prost::encoding::string::encode(1, &text(&mut rng), &mut bytes);
            }
            assert!(agree(&bytes), "{bytes:?} refused");
            let theirs = by_prost(&bytes).unwrap_or_default();
            merged += usize::from(theirs != request);
        }
        // Some requests read differently from what was first encoded: fields given again were
        // merged or replaced, and both readers did it alike.
        assert!(merged > 100, "only {merged} requests exercised merging");
    }

    #[test]
    fn corrupted_requests_are_refused_or_read_as_prost_reads_them() {
        let mut rng = fastrand::Rng::with_seed(13);
        let (mut refused, mut read) = (0, 0);
        for _ in 0..20_000 {
            let request = random_request(&mut rng);
            let mut bytes = with_noise(&mut rng, 3, &request);
            match rng.u8(0..3) {
                0 if !bytes.is_empty() => {
                    let at = rng.usize(..bytes.len());
                    bytes[at] = rng.u8(..);
                }
                1 if !bytes.is_empty() => bytes.truncate(rng.usize(..bytes.len())),
                _ => {
                    let at = rng.usize(..=bytes.len());
                    bytes.insert(at, rng.u8(..));
                }
            }
            if agree(&bytes) {
                read += 1;
            } else {
                refused += 1;
            }
        }
        assert!(
            refused > 1_000 && read > 1_000,
            "{refused} refused, {read} read"
        );
    }

    /// `groups` empty groups nested in one another, as an unknown field 9.
    fn nested_groups(groups: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..groups {
            prost::encoding::encode_key(9, WireType::StartGroup, &mut out);
        }
        for _ in 0..groups {
            prost::encoding::encode_key(9, WireType::EndGroup, &mut out);
        }
        out
    }

    /// `body` as field `tag` of a message.
    fn nested(tag: u32, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::encode_key(tag, WireType::LengthDelimited, &mut out);
        prost::encoding::encode_varint(body.len() as u64, &mut out);
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn groups_nest_as_deep_as_prost_lets_them_in_every_message() {
        let (mut read, mut refused) = (0, 0);
        for groups in 95..=102 {
            let groups = nested_groups(groups);
            let in_descriptor = |body: &[u8]| nested(2, body);
            let placements = [
                groups.clone(),
                in_descriptor(&groups),
                in_descriptor(&nested(1, &groups)),
                in_descriptor(&nested(2, &groups)),
                in_descriptor(&nested(3, &groups)),
            ];
            for bytes in placements {
                if agree(&bytes) {
                    read += 1;
                } else {
                    refused += 1;
                }
            }
        }
        // Each placement is read up to its depth and refused past it.
        assert!(read > 5 && refused > 5, "{read} read, {refused} refused");
    }

    #[test]
    fn varints_wider_than_their_field_are_narrowed_as_prost_narrows_them() {
        let mut limit = Vec::new();
        prost::encoding::encode_key(1, WireType::Varint, &mut limit);
        prost::encoding::encode_varint((1 << 40) | 7, &mut limit);
        prost::encoding::encode_key(2, WireType::Varint, &mut limit);
        prost::encoding::encode_varint(u64::MAX, &mut limit);
        let mut bytes = nested(2, &nested(2, &limit));
        prost::encoding::encode_key(3, WireType::Varint, &mut bytes);
        prost::encoding::encode_varint((1 << 32) | 5, &mut bytes);
        assert!(agree(&bytes));
        let request = WireRequest::parse(&bytes, &UNBOUNDED).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(request.hits_addend, 5);
        let expected = WireOverride {
            requests_per_unit: 7,
            unit: -1,
        };
        assert_eq!(request.descriptors[0].limit, Some(expected));
    }

    #[test]
    fn reading_stops_past_the_bounds() {
        let bounds = RequestBounds {
            max_descriptors: 2,
            max_entries: 3,
            ..RequestBounds::default()
        };
        let entry = nested(1, &nested(1, b"k"));
        let descriptor = |entries: usize| nested(2, &entry.repeat(entries));
        let at_bounds = [descriptor(3), descriptor(1)].concat();
        let read = WireRequest::parse(&at_bounds, &bounds).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read.descriptors.len(), 2);

        let e = WireRequest::parse(&descriptor(1).repeat(3), &bounds).unwrap_err();
        assert_eq!(e.field, "descriptors");
        assert_eq!(e.problem, "more than 2, at most 2 allowed");

        let e = WireRequest::parse(&[descriptor(1), descriptor(4)].concat(), &bounds).unwrap_err();
        assert_eq!(e.field, "descriptors[1].entries");
        assert_eq!(e.problem, "more than 3, at most 3 allowed");
    }

    #[test]
    fn a_malformed_request_names_the_field() {
        let entry_key_not_utf8 = [
            0x12, 0x06, // descriptors[0], 6 bytes
            0x0a, 0x04, // entries[0], 4 bytes
            0x0a, 0x02, 0xff, 0xfe, // key: 2 bytes, not UTF-8
        ];
        let e = WireRequest::parse(&entry_key_not_utf8, &UNBOUNDED).unwrap_err();
        assert_eq!(e.field, "descriptors[0].entries[0].key");
        assert_eq!(e.problem, "not valid UTF-8");

        let second_descriptor_too_long = [0x12, 0x00, 0x12, 0x05, 0x0a];
        let e = WireRequest::parse(&second_descriptor_too_long, &UNBOUNDED).unwrap_err();
        assert_eq!(e.field, "descriptors[1]");
        assert!(e.problem.contains("runs past the end"), "{e}");

        let domain_as_varint = [0x08, 0x01];
        let e = WireRequest::parse(&domain_as_varint, &UNBOUNDED).unwrap_err();
        assert_eq!(e.field, "domain");
        assert!(e.problem.contains("wire type"), "{e}");

        let field_zero = [0x00];
        assert_eq!(
            WireRequest::parse(&field_zero, &UNBOUNDED)
                .unwrap_err()
                .field,
            "request"
        );
    }
}
