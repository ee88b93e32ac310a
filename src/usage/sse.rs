//! An incremental server-sent-events decoder (the WHATWG `text/event-stream` format).
//!
//! Bytes arrive in arbitrary chunks, so an event, a line, or a `\r\n` pair may be split
//! anywhere. The decoder keeps only the event being assembled, and bounds it: an event that
//! grows past the limit is dropped whole (the decoder skips to its terminating blank line) and
//! counted, instead of growing without bound.
//!
//! Lines end in `\n`, `\r\n` or a lone `\r`. `data:` lines of one event are joined with `\n`;
//! `event:` names it; lines starting with `:` are comments; `id:` and `retry:` are ignored. An
//! event with no `data:` line is not dispatched. A UTF-8 byte-order mark at the very start is
//! skipped.

/// Default bound on one pending event: its current line, data and name together.
pub const DEFAULT_EVENT_LIMIT: usize = 1 << 20;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched event, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` name, if the event had a non-empty one.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`; raw bytes (normally UTF-8 JSON).
    pub data: Vec<u8>,
}

/// The decoder state between chunks. Its buffers never hold more than `limit` bytes (their
/// capacity may round up to twice that).
#[derive(Debug)]
pub struct SseDecoder {
    limit: usize,
    /// The current line, without its terminator.
    line: Vec<u8>,
    /// Length of the current line, also counted while discarding.
    line_len: usize,
    data: Vec<u8>,
    has_data: bool,
    event: String,
    /// The previous chunk ended in `\r`; a `\n` starting the next one belongs to it.
    after_cr: bool,
    /// No line has ended yet (the BOM may still be in `line`).
    first_line: bool,
    /// The pending event overflowed; skip until the blank line that ends it.
    discarding: bool,
    dropped: u64,
}

impl Default for SseDecoder {
    fn default() -> Self {
        SseDecoder::new(DEFAULT_EVENT_LIMIT)
    }
}

impl SseDecoder {
    /// A decoder that drops any event larger than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        SseDecoder {
            limit,
            line: Vec::new(),
            line_len: 0,
            data: Vec::new(),
            has_data: false,
            event: String::new(),
            after_cr: false,
            first_line: true,
            discarding: false,
            dropped: 0,
        }
    }

    /// How many events were dropped for exceeding the limit; non-zero means the stream could
    /// not be read in full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Decodes `chunk` and returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        self.feed_with(chunk, |event, data| {
            events.push(SseEvent {
                event: event.map(str::to_owned),
                data: data.to_vec(),
            })
        });
        events
    }

    /// Decodes `chunk`, calling `on_event(name, data)` for each event it completes, without
    /// copying the event.
    pub fn feed_with(&mut self, mut chunk: &[u8], mut on_event: impl FnMut(Option<&str>, &[u8])) {
        while let Some((&first, rest)) = chunk.split_first() {
            if self.after_cr {
                self.after_cr = false;
                if first == b'\n' {
                    chunk = rest;
                    continue;
                }
            }
            match chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
                None => {
                    self.push_line_bytes(chunk);
                    return;
                }
                Some(end) => {
                    let (line, terminator_and_rest) = chunk.split_at(end);
                    self.push_line_bytes(line);
                    self.after_cr = terminator_and_rest.first() == Some(&b'\r');
                    chunk = terminator_and_rest.get(1..).unwrap_or_default();
                    self.end_line(&mut on_event);
                }
            }
        }
    }

    /// Ends the stream: a last line without its terminator is taken as complete, and a last
    /// event without its blank line is dispatched (a truncated event fails its JSON parse
    /// later, so this only helps streams that merely lack the final newlines).
    pub fn finish_with(&mut self, mut on_event: impl FnMut(Option<&str>, &[u8])) {
        if self.line_len > 0 {
            self.end_line(&mut on_event);
        }
        if !self.discarding {
            self.dispatch(&mut on_event);
        }
        self.discarding = false;
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.line_len = self.line_len.saturating_add(bytes.len());
        if self.discarding {
            return;
        }
        if self.pending().saturating_add(bytes.len()) > self.limit {
            self.overflow();
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn pending(&self) -> usize {
        self.line.len() + self.data.len() + self.event.len()
    }

    fn overflow(&mut self) {
        self.discarding = true;
        self.dropped += 1;
        self.line.clear();
        self.data.clear();
        self.has_data = false;
        self.event.clear();
    }

    fn end_line(&mut self, on_event: &mut impl FnMut(Option<&str>, &[u8])) {
        let empty = self.line_len == 0;
        self.line_len = 0;
        let first = std::mem::take(&mut self.first_line);
        if self.discarding {
            self.discarding = !empty;
            return;
        }
        if empty {
            self.dispatch(on_event);
            return;
        }
        let mut line = std::mem::take(&mut self.line);
        let mut field: &[u8] = &line;
        if first {
            field = field.strip_prefix(BOM).unwrap_or(field);
        }
        self.process_field(field);
        line.clear();
        self.line = line;
        if self.pending() > self.limit {
            // Joining data lines adds a byte per line; the event may just have crossed.
            self.overflow();
        }
    }

    fn process_field(&mut self, line: &[u8]) {
        if line.first() == Some(&b':') {
            return;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let (name, value) = line.split_at(colon);
                let value = value.get(1..).unwrap_or_default();
                (name, value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match name {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => self.event = String::from_utf8_lossy(value).into_owned(),
            _ => {}
        }
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(Option<&str>, &[u8])) {
        if self.has_data {
            let name = Some(self.event.as_str()).filter(|n| !n.is_empty());
            on_event(name, &self.data);
        }
        self.data.clear();
        self.has_data = false;
        self.event.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in(chunks: &[&[u8]], limit: usize) -> (Vec<SseEvent>, u64) {
        let mut d = SseDecoder::new(limit);
        let mut events = Vec::new();
        for chunk in chunks {
            events.extend(d.feed(chunk));
        }
        d.finish_with(|event, data| {
            events.push(SseEvent {
                event: event.map(str::to_owned),
                data: data.to_vec(),
            })
        });
        (events, d.dropped())
    }

    fn ev(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: event.map(str::to_owned),
            data: data.as_bytes().to_vec(),
        }
    }

    #[test]
    fn fields_comments_and_multiline_data() {
        let text = b"\xEF\xBB\xBF: keep-alive\nevent: a\ndata: one\ndata:two\nid: 7\nretry: 10\n\n\
            data\n\nevent: only-name\n\ndata:  spaced\n\n";
        let (events, dropped) = decode_in(&[text], DEFAULT_EVENT_LIMIT);
        assert_eq!(dropped, 0);
        assert_eq!(
            events,
            vec![ev(Some("a"), "one\ntwo"), ev(None, ""), ev(None, " spaced"),]
        );
    }

    #[test]
    fn line_endings_split_anywhere() {
        let text = b"event: x\r\ndata: 1\r\n\r\nevent: y\rdata: 2\r\rdata: 3\n\n";
        let whole = decode_in(&[text], DEFAULT_EVENT_LIMIT).0;
        assert_eq!(
            whole,
            vec![ev(Some("x"), "1"), ev(Some("y"), "2"), ev(None, "3")]
        );
        for cut in 0..=text.len() {
            let (a, b) = text.split_at(cut);
            assert_eq!(
                decode_in(&[a, b], DEFAULT_EVENT_LIMIT).0,
                whole,
                "cut {cut}"
            );
        }
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(decode_in(&bytes, DEFAULT_EVENT_LIMIT).0, whole);
    }

    #[test]
    fn bom_split_across_chunks() {
        let (events, _) = decode_in(&[b"\xEF", b"\xBB\xBFdata: 1\n\n"], 64);
        assert_eq!(events, vec![ev(None, "1")]);
    }

    #[test]
    fn finish_flushes_an_unterminated_event() {
        let (events, _) = decode_in(&[b"data: [DONE]"], 64);
        assert_eq!(events, vec![ev(None, "[DONE]")]);
        let (events, _) = decode_in(&[b"data: a\n"], 64);
        assert_eq!(events, vec![ev(None, "a")]);
    }

    #[test]
    fn oversized_event_is_dropped_and_counted() {
        let big = format!("data: {}\n\n", "x".repeat(100));
        let text = format!("data: small\n\n{big}event: e\ndata: after\n\n");
        for size in [1, 5, 1000] {
            let chunks: Vec<&[u8]> = text.as_bytes().chunks(size).collect();
            let (events, dropped) = decode_in(&chunks, 50);
            assert_eq!(dropped, 1);
            assert_eq!(events, vec![ev(None, "small"), ev(Some("e"), "after")]);
        }
        // Many short data lines also count towards the limit.
        let lines = "data: 1234\n".repeat(20) + "\ndata: ok\n\n";
        let (events, dropped) = decode_in(&[lines.as_bytes()], 50);
        assert_eq!((events, dropped), (vec![ev(None, "ok")], 1));
    }

    #[test]
    fn memory_stays_bounded_on_an_endless_line() {
        let mut d = SseDecoder::new(1024);
        let chunk = [b'a'; 4096];
        for _ in 0..1000 {
            assert!(d.feed(&chunk).is_empty());
        }
        // Growth may round a buffer's capacity up, never past twice the limit.
        assert!(d.line.capacity() <= 2048 && d.data.capacity() <= 2048);
        assert_eq!(d.dropped(), 1);
    }
}
