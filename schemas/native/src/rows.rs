//! verify's per-entry check over PostgreSQL's binary `COPY` stream of stored rows
//! (`consumers/postgres/walk.py` `COPY_ROWS`): the fast condition of
//! `consumers/verification/verify.py` `LedgerWalk.check`, row after row, until the first row
//! that does not pass it. That row is left to the Python walk, which explains or raises the
//! break exactly as without this module: the checker only ever accepts rows the Python walk
//! accepts, with the same state after each.
//!
//! An entry's view (schemas/view.py) is the concatenation of the binary `COPY` fields of its
//! view columns, so the checker hashes the 15 view fields of a tuple as one slice.

use std::collections::HashSet;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::link::{link_message, sha256, Fields};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\x00";
/// Fields per tuple: seq, kafka_offset, kind, duplicate_of, value_null, digest, key_id, link,
/// view_digest, pruned, has_reason, the 15 view columns, payload.
const FIELDS: usize = 27;
const VIEW_FIRST: usize = 11;
const VIEW_COUNT: usize = 15;
const PAYLOAD: usize = VIEW_FIRST + VIEW_COUNT;
/// The rows the checker reads, in this order (the SQL is `walk.py`'s `COPY_ROWS`).
const CHECKED_NAMES: [&str; 11] = [
    "seq",
    "kafka_offset",
    "kind",
    "duplicate_of",
    "value_null",
    "digest",
    "key_id",
    "link",
    "view_digest",
    "pruned",
    "has_reason",
];

struct Key {
    lookup: Vec<u8>,
    key_id: Vec<u8>,
    base: HmacSha256,
}

/// Where the stream is: before the header, among the tuples, or after the trailer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Header,
    Tuples,
    Ended,
}

/// The checker of one run of rows; its state (`prev_link`, `prev_offset`, `next_seq`,
/// `unpruned_seen`) starts as the Python walk's and is read back by it.
#[pyclass(module = "baldur_audit_native")]
pub struct RowChecker {
    keys: Vec<Key>,
    kinds: Vec<(Vec<u8>, u8)>,
    counts: Vec<u64>,
    rejected: u8,
    duplicate: u8,
    topic: Vec<u8>,
    partition: i32,
    head_seq: i64,
    anchors: HashSet<i64>,
    #[pyo3(get)]
    prev_offset: i64,
    #[pyo3(get)]
    next_seq: i64,
    #[pyo3(get)]
    unpruned_seen: bool,
    #[pyo3(get)]
    pruned: u64,
    #[pyo3(get)]
    checked: u64,
    /// The seq of the last accepted row (0: none yet).
    #[pyo3(get)]
    last_seq: i64,
    /// Set at the first row that fails: that row's seq, or -1 when the stream itself is not
    /// what was asked for (the caller takes over after `last_seq`).
    #[pyo3(get)]
    stopped: Option<i64>,
    prev_link: Vec<u8>,
    stage: Stage,
    pending: Vec<u8>,
    message: Vec<u8>,
}

fn be_i16(b: &[u8]) -> i16 {
    i16::from_be_bytes([b[0], b[1]])
}

fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_i64(b: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(b.try_into().ok()?))
}

fn be_bool(b: Option<&[u8]>) -> Option<bool> {
    match b? {
        [0] => Some(false),
        [1] => Some(true),
        _ => None,
    }
}

/// Each field of a tuple: where its value is (None: NULL), and where the field ends.
type Spans = ([Option<(usize, usize)>; FIELDS], [usize; FIELDS]);

/// The outcome of reading one tuple from the front of a buffer.
enum Tuple {
    /// Not all of it has arrived yet.
    Partial,
    /// The trailer (field count -1), 2 bytes.
    Trailer,
    /// A tuple of `len` bytes whose fields are at `spans` (None: NULL).
    Row { len: usize },
    /// Not a tuple of the expected shape.
    Malformed,
}

impl RowChecker {
    /// Split the tuple at the front of `buf` into `spans`.
    fn split(buf: &[u8], spans: &mut Spans) -> Tuple {
        if buf.len() < 2 {
            return Tuple::Partial;
        }
        let count = be_i16(buf);
        if count == -1 {
            return Tuple::Trailer;
        }
        if count as usize != FIELDS {
            return Tuple::Malformed;
        }
        let mut pos = 2;
        for (span, end) in spans.0.iter_mut().zip(spans.1.iter_mut()) {
            if buf.len() < pos + 4 {
                return Tuple::Partial;
            }
            let len = be_i32(&buf[pos..]);
            pos += 4;
            if len == -1 {
                *span = None;
                *end = pos;
                continue;
            }
            if len < 0 {
                return Tuple::Malformed;
            }
            let len = len as usize;
            if buf.len() < pos + len {
                return Tuple::Partial;
            }
            *span = Some((pos, pos + len));
            pos += len;
            *end = pos;
        }
        Tuple::Row { len: pos }
    }

    /// Check one complete tuple; on success it becomes the predecessor of the next.
    fn check(&mut self, tuple: &[u8], spans: &Spans) -> bool {
        let (spans, ends) = (&spans.0, &spans.1);
        let field = |i: usize| spans[i].map(|(a, b)| &tuple[a..b]);
        let Some(seq) = field(0).and_then(be_i64) else {
            return false;
        };
        let Some(offset) = field(1).and_then(be_i64) else {
            return false;
        };
        if seq != self.next_seq || seq > self.head_seq || seq < 0 {
            return false;
        }
        let Some(key_id) = field(6) else { return false };
        let Some(key_index) = self.keys.iter().position(|k| k.lookup == key_id) else {
            return false;
        };
        let Some(label) = field(2) else { return false };
        let Some(kind_index) = self.kinds.iter().position(|(l, _)| l == label) else {
            return false;
        };
        let kind = self.kinds[kind_index].1;
        // kafka_timestamp (the first view column): finite, in ms as TIMESTAMP_MS_SQL floors it.
        let Some(us) = field(VIEW_FIRST).and_then(be_i64) else {
            return false;
        };
        if us == i64::MIN || us == i64::MAX {
            return false;
        }
        let Ok(timestamp_ms) =
            i64::try_from((i128::from(us) + i128::from(crate::link::PG_EPOCH_US)).div_euclid(1000))
        else {
            return false;
        };
        let Some(digest) = field(5) else { return false };
        let Some(view_digest) = field(8) else {
            return false;
        };
        let Some(link) = field(7) else { return false };
        let Some(value_null) = be_bool(field(4)) else {
            return false;
        };
        let Some(pruned) = be_bool(field(9)) else {
            return false;
        };
        let Some(has_reason) = be_bool(field(10)) else {
            return false;
        };
        let has_duplicate_of = spans[3].is_some();
        let duplicate_of = match field(3) {
            None => 0,
            Some(b) => match be_i64(b) {
                Some(v) if v >= 0 => v as u64,
                _ => return false,
            },
        };
        // A pruned entry keeps only its digests: the SQL's CASE gives the stored ones.
        let (payload_sha, payload_null, view_sha) = if pruned {
            (
                digest.try_into().ok(),
                value_null,
                view_digest.try_into().ok(),
            )
        } else {
            // The view fields with their length words (NULL: -1 alone), one after the other.
            let view = &tuple[ends[VIEW_FIRST - 1]..ends[PAYLOAD - 1]];
            let payload = field(PAYLOAD);
            (
                Some(sha256(payload.unwrap_or(b""))),
                payload.is_none(),
                Some(sha256(view)),
            )
        };
        let (Some(payload_sha), Some(view_sha)): (Option<[u8; 32]>, Option<[u8; 32]>) =
            (payload_sha, view_sha)
        else {
            return false;
        };
        if payload_sha != digest
            || value_null != payload_null
            || (pruned && self.unpruned_seen)
            || offset <= self.prev_offset
            || view_digest != view_sha
            || (kind == self.rejected) != has_reason
            || (kind == self.duplicate) != has_duplicate_of
            || (has_duplicate_of && duplicate_of == 0)
            || self.anchors.contains(&seq)
        {
            return false;
        }
        let key = &self.keys[key_index];
        let fields = Fields {
            seq: seq as u64,
            topic: &self.topic,
            partition: self.partition,
            offset,
            timestamp_ms,
            kind,
            duplicate_of,
            value_null,
            digest,
            view_digest: &view_sha,
        };
        link_message(&mut self.message, &key.key_id, &self.prev_link, &fields);
        let mut mac = key.base.clone();
        mac.update(&self.message);
        if mac.verify_slice(link).is_err() {
            return false;
        }
        if pruned {
            self.pruned += 1;
        } else {
            self.unpruned_seen = true;
        }
        self.counts[kind_index] += 1;
        self.prev_link.clear();
        self.prev_link.extend_from_slice(link);
        self.prev_offset = offset;
        self.next_seq = seq + 1;
        self.last_seq = seq;
        self.checked += 1;
        true
    }

    /// Check what of `buf` is complete; returns the bytes consumed.
    fn run(&mut self, buf: &[u8]) -> usize {
        let mut pos = 0;
        let mut spans: Spans = ([None; FIELDS], [0; FIELDS]);
        while self.stopped.is_none() {
            match self.stage {
                Stage::Ended => {
                    if pos < buf.len() {
                        self.stopped = Some(-1); // data after the trailer
                    }
                    break;
                }
                Stage::Header => {
                    let rest = &buf[pos..];
                    if rest.len() < SIGNATURE.len() + 8 {
                        break;
                    }
                    let flags = be_i32(&rest[SIGNATURE.len()..]);
                    let extension = be_i32(&rest[SIGNATURE.len() + 4..]);
                    // Bits 0-15 flag critical format changes and bit 16 OIDs: neither may be
                    // set; bits 17-31 are backwards-compatible and ignored (PostgreSQL's COPY).
                    if &rest[..SIGNATURE.len()] != SIGNATURE
                        || flags & 0x0001_ffff != 0
                        || extension < 0
                    {
                        self.stopped = Some(-1);
                        break;
                    }
                    let size = SIGNATURE.len() + 8 + extension as usize;
                    if rest.len() < size {
                        break;
                    }
                    pos += size;
                    self.stage = Stage::Tuples;
                }
                Stage::Tuples => match Self::split(&buf[pos..], &mut spans) {
                    Tuple::Partial => break,
                    Tuple::Trailer => {
                        pos += 2;
                        self.stage = Stage::Ended;
                    }
                    Tuple::Malformed => self.stopped = Some(-1),
                    Tuple::Row { len } => {
                        let tuple = &buf[pos..pos + len];
                        if !self.check(tuple, &spans) {
                            self.stopped = Some(
                                spans.0[0]
                                    .and_then(|(a, b)| be_i64(&tuple[a..b]))
                                    .unwrap_or(-1),
                            );
                            break;
                        }
                        pos += len;
                    }
                },
            }
        }
        pos
    }
}

#[pymethods]
impl RowChecker {
    /// `keys`: (the id rows name, the id the link covers, secret); `kinds`: (label, code),
    /// with `rejected` and `duplicate` the codes of those kinds; the walk's state after it.
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (keys, kinds, rejected, duplicate, topic, partition, head_seq, anchors, prev_link, prev_offset, next_seq, unpruned_seen))]
    fn new(
        keys: Vec<(String, String, Vec<u8>)>,
        kinds: Vec<(String, u8)>,
        rejected: u8,
        duplicate: u8,
        topic: String,
        partition: i32,
        head_seq: i64,
        anchors: Vec<i64>,
        prev_link: Vec<u8>,
        prev_offset: i64,
        next_seq: i64,
        unpruned_seen: bool,
    ) -> Self {
        let counts = vec![0; kinds.len()];
        RowChecker {
            keys: keys
                .into_iter()
                .map(|(lookup, key_id, secret)| Key {
                    lookup: lookup.into_bytes(),
                    key_id: key_id.into_bytes(),
                    // HMAC takes keys of any length (RFC 2104): this cannot fail.
                    base: HmacSha256::new_from_slice(&secret).expect("HMAC accepts any key length"),
                })
                .collect(),
            kinds: kinds
                .into_iter()
                .map(|(label, code)| (label.into_bytes(), code))
                .collect(),
            counts,
            rejected,
            duplicate,
            topic: topic.into_bytes(),
            partition,
            head_seq,
            anchors: anchors.into_iter().collect(),
            prev_offset,
            next_seq,
            unpruned_seen,
            pruned: 0,
            checked: 0,
            last_seq: 0,
            stopped: None,
            prev_link,
            stage: Stage::Header,
            pending: Vec::new(),
            message: Vec::with_capacity(320),
        }
    }

    /// Check the rows completed by `data`, the next bytes of the stream (any boundaries).
    /// Returns False once a row failed (see `stopped`): the rest is left to the caller.
    fn feed(&mut self, py: Python<'_>, data: PyBuffer<u8>) -> PyResult<bool> {
        if self.stopped.is_some() {
            return Ok(false);
        }
        if !data.is_c_contiguous() {
            return Err(PyValueError::new_err("feed takes contiguous bytes"));
        }
        // SAFETY: a C-contiguous buffer of `len_bytes` bytes, held (and so kept alive and
        // unmoved) by `data` for this call; only read.
        let data: &[u8] = if data.len_bytes() == 0 {
            &[]
        } else {
            unsafe { std::slice::from_raw_parts(data.buf_ptr() as *const u8, data.len_bytes()) }
        };
        // One tuple per chunk is the usual case: releasing the GIL would cost more than it frees.
        let mut run = || {
            if self.pending.is_empty() {
                let used = self.run(data);
                if self.stopped.is_none() {
                    self.pending.extend_from_slice(&data[used..]);
                }
            } else {
                let mut pending = std::mem::take(&mut self.pending);
                pending.extend_from_slice(data);
                let used = self.run(&pending);
                pending.drain(..used);
                if self.stopped.is_none() {
                    self.pending = pending;
                }
            }
        };
        if data.len() >= 1 << 16 {
            py.allow_threads(run);
        } else {
            run();
        }
        Ok(self.stopped.is_none())
    }

    /// After the last chunk: True when the stream ended with its trailer and nothing failed.
    fn finish(&mut self) -> bool {
        if self.stopped.is_none() && (self.stage != Stage::Ended || !self.pending.is_empty()) {
            self.stopped = Some(-1);
        }
        self.stopped.is_none()
    }

    /// The last accepted row's link (the walk's `prev_link`).
    #[getter]
    fn prev_link<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.prev_link)
    }

    /// The accepted rows per kind label.
    #[getter]
    fn kinds(&self) -> Vec<(String, u64)> {
        self.kinds
            .iter()
            .zip(&self.counts)
            .map(|((label, _), count)| (String::from_utf8_lossy(label).into_owned(), *count))
            .collect()
    }

    /// The names of the checked fields each tuple starts with (then the view, then payload).
    #[staticmethod]
    fn columns() -> Vec<&'static str> {
        CHECKED_NAMES.to_vec()
    }
}
