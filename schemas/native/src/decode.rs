//! `schemas/fastpath.py` `decode_view`: a record in the current writer schema read straight into
//! its entry view, or `None`. It accepts only what the Python fast path accepts (which accepts
//! only what the reference decoder and validator accept) and defers on anything unusual —
//! deep or escaped-surrogate JSON, non-ASCII where a whitespace rule would need Unicode tables —
//! so it can change speed only, never a classification.

use crate::link::PG_EPOCH_US;

const MIN_US: i64 = -62_135_596_800_000_000; // 0001-01-01T00:00:00Z
const MAX_US: i64 = 253_402_300_799_999_999; // 9999-12-31T23:59:59.999999Z
const MAX_ID_CHARS: usize = 256;
const MAX_TARGET_CHARS: usize = 1024;
const MAX_REASON_CHARS: usize = 4096;
const MAX_JSON_BYTES: usize = 256 * 1024;
const MAX_JSON_DEPTH: usize = 64;
const MAX_ATTRIBUTES: i64 = 64;
const MAX_ATTRIBUTE_CHARS: usize = 1024;
const MAX_JSON_INT_DIGITS: usize = 4300;
const MAX_JSON_FRACTION_DIGITS: i64 = 16383;
const ACTOR_SYMBOLS: [&[u8]; 3] = [b"user", b"service", b"system"];
const SOURCE_SYMBOLS: [&[u8]; 4] = [b"api", b"cli", b"scheduler", b"framework"];
const NULL: [u8; 4] = [0xff; 4];

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    /// A zig-zag varint, minimal encodings only (fastpath `_long`).
    fn long(&mut self) -> Option<i64> {
        let first = self.byte()?;
        if first < 0x80 {
            let v = first as u64;
            return Some(((v >> 1) as i64) ^ -((v & 1) as i64));
        }
        let mut result = (first & 0x7f) as u64;
        let mut shift = 7u32;
        let last = loop {
            let b = self.byte()?;
            result |= ((b & 0x7f) as u64) << shift;
            if b < 0x80 {
                break b;
            }
            shift += 7;
            if shift > 56 {
                return None;
            }
        };
        if last == 0 {
            return None;
        }
        Some(((result >> 1) as i64) ^ -((result & 1) as i64))
    }

    /// An Avro string's bytes, valid UTF-8.
    fn string(&mut self) -> Option<&'a [u8]> {
        let size = self.long()?;
        if size < 0 {
            return None;
        }
        let end = self.pos.checked_add(size as usize)?;
        if end > self.buf.len() {
            return None;
        }
        let raw = &self.buf[self.pos..end];
        std::str::from_utf8(raw).ok()?;
        self.pos = end;
        Some(raw)
    }

    /// A `["null", "string"]` union.
    fn optional_string(&mut self) -> Option<Option<&'a [u8]>> {
        match self.byte()? {
            0 => Some(None),
            2 => Some(Some(self.string()?)),
            _ => None,
        }
    }

    fn symbol(&mut self, symbols: &[&'static [u8]]) -> Option<&'static [u8]> {
        let index = self.long()?;
        if index < 0 {
            return None;
        }
        symbols.get(index as usize).copied()
    }
}

fn chars(text: &[u8]) -> usize {
    // Valid UTF-8: one code point per byte that is not a continuation byte.
    text.iter().filter(|&&b| (b & 0xc0) != 0x80).count()
}

/// `event._check_text` for a present value; `required` also needs some character that
/// `str.strip` keeps, which is decided here only through ASCII (else: defer).
fn text_ok(text: &[u8], limit: usize, required: bool) -> bool {
    if required && !text.iter().any(|&b| b < 0x80 && !matches!(b, 9..=13 | 28..=32)) {
        return false;
    }
    (text.len() <= limit || chars(text) <= limit) && !text.contains(&0)
}

fn is_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

fn uuid_bytes(text: &[u8]) -> Option<[u8; 16]> {
    if text.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut nibbles = 0usize;
    for (i, &b) in text.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if b != b'-' {
                return None;
            }
            continue;
        }
        if !is_hex(b) {
            return None;
        }
        let v = if b.is_ascii_digit() { b - b'0' } else { b - b'a' + 10 };
        out[nibbles / 2] |= if nibbles % 2 == 0 { v << 4 } else { v };
        nibbles += 1;
    }
    Some(out)
}

/// `[a-z][a-z0-9_.-]{0,63}`
fn action_ok(text: &[u8]) -> bool {
    match text.split_first() {
        Some((first, rest)) => {
            first.is_ascii_lowercase()
                && rest.len() <= 63
                && rest.iter().all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'))
        }
        None => false,
    }
}

/// `[0-9a-f]{32}`, not all zeros.
fn trace_ok(text: &[u8]) -> bool {
    text.len() == 32 && text.iter().all(|&b| is_hex(b)) && text.iter().any(|&b| b != b'0')
}

fn framed(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => out.extend_from_slice(&NULL),
        Some(v) => {
            out.extend_from_slice(&(v.len() as i32).to_be_bytes());
            out.extend_from_slice(v);
        }
    }
}

/// A JSON string as `json.JSONEncoder(ensure_ascii=False)` writes it.
fn json_string(out: &mut Vec<u8>, text: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in text {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0..=0x1f => out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]),
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// The view of a valid event in the current schema (`prefix` = magic + fingerprint), or None.
pub fn decode_view(buf: &[u8], prefix: &[u8]) -> Option<([u8; 16], Vec<u8>)> {
    if prefix.len() != 10 || !buf.starts_with(prefix) {
        return None;
    }
    let mut r = Reader { buf, pos: prefix.len() };
    let event_id = uuid_bytes(r.string()?)?;
    let occurred_us = r.long()?;
    if !(MIN_US..=MAX_US).contains(&occurred_us) {
        return None;
    }
    let actor = r.string()?;
    if !text_ok(actor, MAX_ID_CHARS, true) {
        return None;
    }
    let actor_type = r.symbol(&ACTOR_SYMBOLS)?;
    let action = r.string()?;
    if !action_ok(action) {
        return None;
    }
    let target = r.string()?;
    if !text_ok(target, MAX_TARGET_CHARS, true) {
        return None;
    }
    let mut json_fields = [None, None];
    for slot in json_fields.iter_mut() {
        let value = r.optional_string()?;
        if let Some(text) = value {
            if text.len() > MAX_JSON_BYTES || !json_ok(text) {
                return None;
            }
        }
        *slot = value;
    }
    let reason = r.optional_string()?;
    if reason.is_some_and(|t| !text_ok(t, MAX_REASON_CHARS, false)) {
        return None;
    }
    let source = r.symbol(&SOURCE_SYMBOLS)?;
    let trace = r.optional_string()?;
    if trace.is_some_and(|t| !trace_ok(t)) {
        return None;
    }
    let client_ip = r.optional_string()?;
    if client_ip.is_some_and(|t| !text_ok(t, MAX_ID_CHARS, false)) {
        return None;
    }
    let mut attributes = Vec::with_capacity(64);
    attributes.push(b'{');
    let count = r.long()?;
    if count != 0 {
        if !(1..=MAX_ATTRIBUTES).contains(&count) {
            return None;
        }
        let mut keys: Vec<&[u8]> = Vec::with_capacity(count as usize);
        for i in 0..count {
            let key = r.string()?;
            let item = r.string()?;
            if keys.contains(&key) || !text_ok(key, MAX_ATTRIBUTE_CHARS, true) || !text_ok(item, MAX_ATTRIBUTE_CHARS, false) {
                return None;
            }
            keys.push(key);
            if i > 0 {
                attributes.push(b',');
            }
            json_string(&mut attributes, key);
            attributes.push(b':');
            json_string(&mut attributes, item);
        }
        if r.byte()? != 0 {
            return None;
        }
    }
    attributes.push(b'}');
    if r.pos != buf.len() {
        return None;
    }
    let mut view = Vec::with_capacity(buf.len() + 160);
    view.extend_from_slice(&16i32.to_be_bytes());
    view.extend_from_slice(&event_id);
    view.extend_from_slice(&8i32.to_be_bytes());
    view.extend_from_slice(&(occurred_us - PG_EPOCH_US).to_be_bytes());
    framed(&mut view, Some(actor));
    framed(&mut view, Some(actor_type));
    framed(&mut view, Some(action));
    framed(&mut view, Some(target));
    framed(&mut view, json_fields[0]);
    framed(&mut view, json_fields[1]);
    framed(&mut view, reason);
    framed(&mut view, Some(source));
    framed(&mut view, trace);
    framed(&mut view, client_ip);
    framed(&mut view, Some(&attributes));
    framed(&mut view, Some(&prefix[2..]));
    Some((event_id, view))
}

// --- JSON text (event.check_json_text), conservatively -------------------------------------

/// True only for text `check_json_text` accepts; false also where unsure (the caller defers).
pub fn json_ok(text: &[u8]) -> bool {
    if text.contains(&0) || text.windows(6).any(|w| w == b"\\u0000") {
        return false;
    }
    // The depth rule (CHAIN.md §7 rule 6) needs more than 64 brackets: defer on those.
    if text.iter().filter(|&&b| b == b'[' || b == b'{').count() > MAX_JSON_DEPTH {
        return false;
    }
    let mut p = Json { s: text, pos: 0 };
    p.ws();
    if !p.value() {
        return false;
    }
    p.ws();
    p.pos == text.len()
}

struct Json<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Json<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        if self.s[self.pos..].starts_with(word) {
            self.pos += word.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> bool {
        match self.peek() {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => self.string(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => false,
        }
    }

    fn object(&mut self) -> bool {
        self.pos += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return true;
        }
        loop {
            if self.peek() != Some(b'"') || !self.string() {
                return false;
            }
            self.ws();
            if self.peek() != Some(b':') {
                return false;
            }
            self.pos += 1;
            self.ws();
            if !self.value() {
                return false;
            }
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.ws();
                }
                Some(b'}') => {
                    self.pos += 1;
                    return true;
                }
                _ => return false,
            }
        }
    }

    fn array(&mut self) -> bool {
        self.pos += 1;
        self.ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return true;
        }
        loop {
            if !self.value() {
                return false;
            }
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.ws();
                }
                Some(b']') => {
                    self.pos += 1;
                    return true;
                }
                _ => return false,
            }
        }
    }

    fn string(&mut self) -> bool {
        self.pos += 1;
        loop {
            let Some(b) = self.peek() else { return false };
            self.pos += 1;
            match b {
                b'"' => return true,
                0..=0x1f => return false,
                b'\\' => {
                    let Some(e) = self.peek() else { return false };
                    self.pos += 1;
                    match e {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            let Some(hex) = self.s.get(self.pos..self.pos + 4) else { return false };
                            if !hex.iter().all(|b| b.is_ascii_hexdigit()) {
                                return false;
                            }
                            let code = u32::from_str_radix(std::str::from_utf8(hex).unwrap_or("x"), 16).unwrap_or(0);
                            // NUL and surrogates (paired or not): let the Python path decide.
                            if code == 0 || (0xd800..=0xdfff).contains(&code) {
                                return false;
                            }
                            self.pos += 4;
                        }
                        _ => return false,
                    }
                }
                _ => {}
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> bool {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        let int_start = self.pos;
        let int_digits = self.digits();
        if int_digits == 0 || (int_digits > 1 && self.s[int_start] == b'0') {
            return false;
        }
        let mut is_float = false;
        let mut fraction_digits = 0usize;
        if self.peek() == Some(b'.') && matches!(self.s.get(self.pos + 1), Some(b'0'..=b'9')) {
            self.pos += 1;
            fraction_digits = self.digits();
            is_float = true;
        }
        let mut exponent: i64 = 0;
        if matches!(self.peek(), Some(b'e' | b'E')) {
            let mark = self.pos;
            self.pos += 1;
            let negative = match self.peek() {
                Some(b'-') => {
                    self.pos += 1;
                    true
                }
                Some(b'+') => {
                    self.pos += 1;
                    false
                }
                _ => false,
            };
            let exp_start = self.pos;
            let exp_digits = self.digits();
            if exp_digits == 0 {
                // Not an exponent: the number ends before the 'e' (then the text is invalid).
                self.pos = mark;
            } else {
                let text = &self.s[exp_start..self.pos];
                let significant = text.iter().skip_while(|&&b| b == b'0').count();
                if significant > 12 {
                    return false; // huge exponents: defer
                }
                let magnitude: i64 = std::str::from_utf8(text).ok().and_then(|t| t.parse().ok()).unwrap_or(0);
                exponent = if negative { -magnitude } else { magnitude };
                is_float = true;
            }
        }
        if !is_float {
            return int_digits <= MAX_JSON_INT_DIGITS;
        }
        // Decimal(token).as_tuple().exponent = exponent - digits after the point.
        if -(exponent - fraction_digits as i64) > MAX_JSON_FRACTION_DIGITS {
            return false;
        }
        let token = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("x");
        matches!(token.parse::<f64>(), Ok(v) if v.is_finite())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_rules() {
        for ok in [&b"{}"[..], b" [1, 2.5e3, -0, \"a\\n\"] ", b"{\"a\":{\"b\":null}}", b"1e308", b"1e-400"] {
            assert!(json_ok(ok), "{:?}", std::str::from_utf8(ok));
        }
        for bad in [&b""[..], b"01", b"1.", b".5", b"NaN", b"[1,]", b"{\"a\"}", b"1e309", b"\"\\u0000\"", b"\"\\ud800\"", b"1e", b"\"\x01\""] {
            assert!(!json_ok(bad), "{:?}", std::str::from_utf8(bad));
        }
    }
}
