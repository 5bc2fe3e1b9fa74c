//! Server-sent events as they stream through the proxy: cut into whole events, byte for byte
//! as received, holding at most one event at a time; and the name and data of one event.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};

/// Cuts a byte stream into whole SSE events as the bytes arrive.
#[derive(Debug)]
pub struct EventSplitter {
    max_event_bytes: usize,
    /// The bytes of the event under way.
    pending: BytesMut,
    /// How much of `pending` has been scanned; `position` is where that scan stopped.
    scanned: usize,
    position: Position,
}

/// Where the scan stands, which is all the context a boundary needs: a line ends at CRLF, LF
/// or CR, and an empty line ends the event.
#[derive(Clone, Copy, Debug)]
enum Position {
    /// At the start of a line (and of the event, at first).
    LineStart,
    InLine,
    /// A CR ended a non-empty line; an LF right after it belongs to the same line ending.
    AfterCr,
    /// A CR ended an empty line, so the event is over, but an LF right after it is still part
    /// of the event's last line ending; the event is cut once the next byte is known.
    AfterBlankCr,
}

/// What one byte does to the event under way.
enum Step {
    Continue,
    /// The event ends with this byte.
    EndsAfter,
    /// The event ended just before this byte, which starts the next one.
    EndsBefore,
}

#[derive(Debug, thiserror::Error)]
#[error("an event is larger than {0} bytes")]
pub struct EventTooLarge(pub usize);

impl EventSplitter {
    pub fn new(max_event_bytes: usize) -> Self {
        EventSplitter {
            max_event_bytes,
            pending: BytesMut::new(),
            scanned: 0,
            position: Position::LineStart,
        }
    }

    /// Appends `chunk`; returns every event completed by it, each with its terminating blank
    /// line, bytes exactly as received. After an error the stream is beyond repair.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Bytes>, EventTooLarge> {
        self.pending.extend_from_slice(chunk);
        let mut events = Vec::new();
        // Only the new bytes are scanned: `position` carries what the old ones said.
        let mut at = self.scanned;
        while at < self.pending.len() {
            match self.step(self.pending[at]) {
                Step::Continue => at += 1,
                Step::EndsAfter => {
                    events.push(self.cut(at + 1)?);
                    at = 0;
                }
                // The byte is scanned again, as the first of the next event.
                Step::EndsBefore => {
                    events.push(self.cut(at)?);
                    at = 0;
                }
            }
        }
        self.scanned = at;
        if self.pending.len() > self.max_event_bytes {
            return Err(EventTooLarge(self.max_event_bytes));
        }
        Ok(events)
    }

    /// What is left when the stream ends (an unterminated last event), if anything. That
    /// includes an event ended by a lone CR at the very end, still waiting to see an LF.
    pub fn finish(self) -> Option<Bytes> {
        (!self.pending.is_empty()).then(|| self.pending.freeze())
    }

    fn step(&mut self, byte: u8) -> Step {
        use Position::*;
        let (next, step) = match (self.position, byte) {
            (AfterBlankCr, b'\n') => (LineStart, Step::EndsAfter),
            (AfterBlankCr, _) => (LineStart, Step::EndsBefore),
            // The LF of a CRLF: the line already ended at the CR.
            (AfterCr, b'\n') => (LineStart, Step::Continue),
            // An empty line: the event ends.
            (LineStart, b'\n') => (LineStart, Step::EndsAfter),
            (LineStart | AfterCr, b'\r') => (AfterBlankCr, Step::Continue),
            (InLine, b'\n') => (LineStart, Step::Continue),
            (InLine, b'\r') => (AfterCr, Step::Continue),
            _ => (InLine, Step::Continue),
        };
        self.position = next;
        step
    }

    fn cut(&mut self, len: usize) -> Result<Bytes, EventTooLarge> {
        if len > self.max_event_bytes {
            return Err(EventTooLarge(self.max_event_bytes));
        }
        Ok(self.pending.split_to(len).freeze())
    }
}

/// The `event:` name and the `data:` payload of one event (several data lines joined with
/// '\n', a single leading space after the colon removed, as the SSE spec says); comment lines
/// (starting with ':') and other fields ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event<'a> {
    /// None for an unnamed event (or an empty `event:`), which the spec calls "message".
    pub name: Option<&'a str>,
    pub data: Cow<'a, str>,
}

/// One event as [`EventSplitter`] cut it. None when it has no data field (the spec does not
/// dispatch such an event) or is not UTF-8.
pub fn parse_event(raw: &[u8]) -> Option<Event<'_>> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut name = None;
    let mut data: Option<Cow<'_, str>> = None;
    for line in lines(text).take_while(|line| !line.is_empty()) {
        let (field, value) = field(line);
        match field {
            "event" => name = Some(value).filter(|value| !value.is_empty()),
            "data" => match &mut data {
                None => data = Some(Cow::Borrowed(value)),
                Some(joined) => {
                    let joined = joined.to_mut();
                    joined.push('\n');
                    joined.push_str(value);
                }
            },
            _ => {}
        }
    }
    Some(Event { name, data: data? })
}

/// The lines of `text`, each ended by CRLF, LF or CR (or by the end of `text`).
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        let (line, ending) = rest.split_at(end);
        rest = ending
            .strip_prefix("\r\n")
            .or_else(|| ending.strip_prefix(['\r', '\n']))
            .unwrap_or(ending);
        Some(line)
    })
}

/// A line's field name and value. A comment (leading ':') has the empty name; a line without
/// a colon is a name with an empty value.
fn field(line: &str) -> (&str, &str) {
    match line.split_once(':') {
        Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
        None => (line, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way a line or an event can end, including a CR-ended event followed by a
    /// non-LF byte, and an empty event at the very start.
    const EVENTS: [&str; 9] = [
        "\r\n",
        "data: one\n\n",
        ": keep-alive\r\ndata: two\r\n\r\n",
        "event: three\rdata: 3\r\r",
        "data: four\r\n\n",
        "data: five\n\r\n",
        "data: six\r\n\r",
        "data: seven\n\r",
        "data: [DONE]\n\n",
    ];
    const TAIL: &str = "data: partial";

    fn stream() -> Vec<u8> {
        let mut stream = EVENTS.concat().into_bytes();
        stream.extend_from_slice(TAIL.as_bytes());
        stream
    }

    fn split(chunks: &[&[u8]], max: usize) -> (Vec<Bytes>, Option<Bytes>) {
        let mut splitter = EventSplitter::new(max);
        let mut events = Vec::new();
        for chunk in chunks {
            events.extend(splitter.push(chunk).unwrap());
        }
        (events, splitter.finish())
    }

    fn assert_whole_stream(chunks: &[&[u8]]) {
        let (events, tail) = split(chunks, 64);
        let events: Vec<&[u8]> = events.iter().map(|event| &event[..]).collect();
        let expected: Vec<&[u8]> = EVENTS.iter().map(|event| event.as_bytes()).collect();
        assert_eq!(events, expected, "chunks {chunks:?}");
        assert_eq!(tail.as_deref(), Some(TAIL.as_bytes()), "chunks {chunks:?}");
    }

    #[test]
    fn the_same_events_come_out_wherever_one_chunk_boundary_falls() {
        let stream = stream();
        for at in 0..=stream.len() {
            let (left, right) = stream.split_at(at);
            assert_whole_stream(&[left, right]);
        }
    }

    #[test]
    fn the_same_events_come_out_wherever_two_chunk_boundaries_fall() {
        let stream = stream();
        for first in 0..=stream.len() {
            for second in first..=stream.len() {
                let chunks = [&stream[..first], &stream[first..second], &stream[second..]];
                assert_whole_stream(&chunks);
            }
        }
    }

    #[test]
    fn the_same_events_come_out_byte_by_byte() {
        let stream = stream();
        let chunks: Vec<&[u8]> = stream.chunks(1).collect();
        assert_whole_stream(&chunks);
    }

    #[test]
    fn a_crlf_stream_splits_at_blank_lines() {
        let (events, tail) = split(&[b"data: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n"], 64);
        assert_eq!(events, ["data: a\r\ndata: b\r\n\r\n", "data: c\r\n\r\n"]);
        assert_eq!(tail, None);
    }

    #[test]
    fn a_blank_line_cr_at_a_chunk_end_waits_for_its_lf() {
        let mut splitter = EventSplitter::new(64);
        assert!(splitter.push(b"data: a\r\n\r").unwrap().is_empty());
        // The LF completes the first event; it is not an empty line ending another.
        let events = splitter.push(b"\ndata: b\r\n\r\n").unwrap();
        assert_eq!(events, ["data: a\r\n\r\n", "data: b\r\n\r\n"]);
        assert_eq!(splitter.finish(), None);
    }

    #[test]
    fn a_blank_line_cr_followed_by_another_byte_ends_the_event_before_it() {
        let mut splitter = EventSplitter::new(64);
        assert!(splitter.push(b"data: a\r\r").unwrap().is_empty());
        assert_eq!(splitter.push(b"data: b").unwrap(), ["data: a\r\r"]);
        assert_eq!(splitter.finish().as_deref(), Some(&b"data: b"[..]));
    }

    #[test]
    fn a_line_ending_cr_split_from_its_lf_is_one_line_ending() {
        let mut splitter = EventSplitter::new(64);
        assert!(splitter.push(b"data: a\r").unwrap().is_empty());
        assert!(splitter.push(b"\n").unwrap().is_empty());
        assert!(splitter.push(b"data: b\r").unwrap().is_empty());
        assert!(splitter.push(b"\n\r").unwrap().is_empty());
        assert_eq!(
            splitter.push(b"\n").unwrap(),
            ["data: a\r\ndata: b\r\n\r\n"]
        );
    }

    #[test]
    fn an_event_over_the_limit_is_an_error() {
        let mut splitter = EventSplitter::new(16);
        assert!(splitter.push(b"data: 0123456789").unwrap().is_empty());
        let error = splitter.push(b"x").unwrap_err();
        assert_eq!(error.0, 16);
        assert_eq!(error.to_string(), "an event is larger than 16 bytes");

        let mut splitter = EventSplitter::new(16);
        assert!(splitter.push(b"data: 012345678\n\n").is_err());
    }

    #[test]
    fn the_limit_is_per_event_not_per_chunk() {
        let mut splitter = EventSplitter::new(16);
        let exactly_the_limit = b"data: 01234567\n\n";
        assert_eq!(
            splitter.push(exactly_the_limit).unwrap(),
            [&exactly_the_limit[..]]
        );
        let many = "data: x\n\n".repeat(10);
        assert_eq!(splitter.push(many.as_bytes()).unwrap().len(), 10);
    }

    #[test]
    fn finish_returns_the_partial_tail() {
        let mut splitter = EventSplitter::new(64);
        assert_eq!(
            splitter.push(b"data: a\n\ndata: b").unwrap(),
            ["data: a\n\n"]
        );
        assert_eq!(splitter.finish().as_deref(), Some(&b"data: b"[..]));
    }

    #[test]
    fn finish_returns_nothing_after_whole_events_or_none() {
        assert_eq!(EventSplitter::new(64).finish(), None);
        let mut splitter = EventSplitter::new(64);
        splitter.push(b"data: a\n\n").unwrap();
        assert_eq!(splitter.finish(), None);
    }

    #[test]
    fn finish_returns_an_event_still_waiting_after_its_final_cr() {
        let mut splitter = EventSplitter::new(64);
        assert!(splitter.push(b"data: a\r\r").unwrap().is_empty());
        assert_eq!(splitter.finish().as_deref(), Some(&b"data: a\r\r"[..]));
    }

    fn event<'a>(name: Option<&'a str>, data: &'a str) -> Option<Event<'a>> {
        Some(Event {
            name,
            data: Cow::Borrowed(data),
        })
    }

    #[test]
    fn data_lines_are_joined_with_newlines() {
        let parsed = parse_event(b"data: first\ndata: second\r\ndata:third\r\r");
        assert_eq!(parsed, event(None, "first\nsecond\nthird"));
    }

    #[test]
    fn a_single_data_line_is_borrowed() {
        let parsed = parse_event(b"data: {\"a\":1}\n\n").unwrap();
        assert!(matches!(parsed.data, Cow::Borrowed("{\"a\":1}")));
    }

    #[test]
    fn only_one_leading_space_is_removed() {
        assert_eq!(parse_event(b"data:x\n\n"), event(None, "x"));
        assert_eq!(parse_event(b"data:  x \n\n"), event(None, " x "));
        assert_eq!(parse_event(b"data: a: b\n\n"), event(None, "a: b"));
    }

    #[test]
    fn the_done_sentinel_is_plain_data() {
        assert_eq!(parse_event(b"data: [DONE]\n\n"), event(None, "[DONE]"));
    }

    #[test]
    fn the_event_name_is_read() {
        let raw = b"event: response.completed\ndata: {}\n\n";
        assert_eq!(parse_event(raw), event(Some("response.completed"), "{}"));
        // An empty name is the default, unnamed event.
        assert_eq!(parse_event(b"event:\ndata: x\n\n"), event(None, "x"));
    }

    #[test]
    fn comments_and_other_fields_are_ignored() {
        let raw = b": ping\nid: 7\nretry: 100\nDATA: shouting\ndata: kept\n\n";
        assert_eq!(parse_event(raw), event(None, "kept"));
    }

    #[test]
    fn a_data_field_without_a_colon_is_empty_data() {
        assert_eq!(parse_event(b"data\n\n"), event(None, ""));
        assert_eq!(parse_event(b"data\ndata\n\n"), event(None, "\n"));
    }

    #[test]
    fn an_event_without_data_is_none() {
        assert_eq!(parse_event(b": keep-alive\n\n"), None);
        assert_eq!(parse_event(b"event: ping\n\n"), None);
        assert_eq!(parse_event(b"\r\n"), None);
        assert_eq!(parse_event(b""), None);
    }

    #[test]
    fn non_utf8_is_none() {
        assert_eq!(parse_event(b"data: \xff\xfe\n\n"), None);
    }

    #[test]
    fn an_unterminated_event_parses() {
        assert_eq!(parse_event(b"data: tail"), event(None, "tail"));
    }

    #[test]
    fn parsing_stops_at_the_blank_line() {
        assert_eq!(parse_event(b"data: a\n\ndata: b\n\n"), event(None, "a"));
    }
}
