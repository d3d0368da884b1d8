//! Links (CHAIN.md "Entry link"), payload and view digests, and tree leaves (CHAIN.md "Leaf
//! hash"): the bytes of `schemas/chain.py` `link_message` and `schemas/merkle.py` `leaf_data`.

use hmac::{Hmac, Mac};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

const LINK_TAG: &[u8] = b"baldur-audit/link/v2";
const LEAF_TAG: &[u8] = b"baldur-audit/leaf/v1";
/// 2000-01-01T00:00:00Z in microseconds since the Unix epoch (schemas/view.py PG_EPOCH_US).
pub const PG_EPOCH_US: i64 = 946_684_800_000_000;

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// `chain.field`: u8 name length, name, u32 big-endian value length, value.
fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value);
}

/// The link fields after `prev` and `key_id`, shared by links and leaves.
pub struct Fields<'a> {
    pub seq: u64,
    pub topic: &'a [u8],
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub kind: u8,
    pub duplicate_of: u64,
    pub value_null: bool,
    pub digest: &'a [u8],
    pub view_digest: &'a [u8],
}

fn put_fields(out: &mut Vec<u8>, f: &Fields<'_>) {
    field(out, b"seq", &f.seq.to_be_bytes());
    field(out, b"topic", f.topic);
    field(out, b"partition", &f.partition.to_be_bytes());
    field(out, b"offset", &f.offset.to_be_bytes());
    field(out, b"timestamp", &f.timestamp_ms.to_be_bytes());
    field(out, b"kind", &[f.kind]);
    field(out, b"duplicate_of", &f.duplicate_of.to_be_bytes());
    field(out, b"value_null", &[f.value_null as u8]);
    field(out, b"digest", f.digest);
    field(out, b"view", f.view_digest);
}

/// `chain.link_message`.
pub fn link_message(out: &mut Vec<u8>, key_id: &[u8], prev: &[u8], f: &Fields<'_>) {
    out.clear();
    field(out, b"domain", LINK_TAG);
    field(out, b"prev", prev);
    field(out, b"key_id", key_id);
    put_fields(out, f);
}

fn mac_of(base: &HmacSha256, message: &[u8]) -> [u8; 32] {
    let mut mac = base.clone();
    mac.update(message);
    mac.finalize().into_bytes().into()
}

fn keyed(secret: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (RFC 2104): this cannot fail.
    HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length")
}

/// `chain.LedgerLinker`: links of one ledger's topic and partition under one key.
#[pyclass(frozen, module = "baldur_audit_native")]
pub struct LedgerLinker {
    #[pyo3(get)]
    key_id: String,
    base: HmacSha256,
    topic: Vec<u8>,
    partition: i32,
}

#[pymethods]
impl LedgerLinker {
    #[new]
    fn new(secret: &[u8], key_id: String, topic: String, partition: i32) -> Self {
        LedgerLinker { key_id, base: keyed(secret), topic: topic.into_bytes(), partition }
    }

    /// The link of entry `seq` whose predecessor's link is `prev_link`.
    #[allow(clippy::too_many_arguments)]
    fn link<'py>(
        &self,
        py: Python<'py>,
        prev_link: &[u8],
        seq: u64,
        offset: i64,
        timestamp_ms: i64,
        kind_code: u8,
        duplicate_of: u64,
        value_null: &Bound<'py, PyAny>,
        digest: &[u8],
        view_digest: &[u8],
    ) -> PyResult<Bound<'py, PyBytes>> {
        let fields = Fields {
            seq,
            topic: &self.topic,
            partition: self.partition,
            offset,
            timestamp_ms,
            kind: kind_code,
            duplicate_of,
            value_null: value_null.is_truthy()?,
            digest,
            view_digest,
        };
        let mut message = Vec::with_capacity(320);
        link_message(&mut message, self.key_id.as_bytes(), prev_link, &fields);
        Ok(PyBytes::new(py, &mac_of(&self.base, &message)))
    }
}

/// One row of `seal_rows`, read from its tuple; `None` when a value is not what the Python
/// path packs without an error (the caller then takes that path, which raises).
struct Row<'a> {
    key: usize,
    fields: Fields<'a>,
    view_body: &'a [u8],
}

fn read_row<'a>(row: &'a Bound<'_, PyTuple>, value: &'a Option<Bound<'_, PyBytes>>, strs: &'a (Bound<'_, PyString>, Bound<'_, PyBytes>)) -> Option<Row<'a>> {
    let get = |i: usize| row.get_borrowed_item(i).ok();
    let key: usize = get(0)?.extract().ok()?;
    let seq: u64 = get(1)?.extract().ok()?;
    let partition: i32 = get(3)?.extract().ok()?;
    let offset: i64 = get(4)?.extract().ok()?;
    let timestamp_ms: i64 = get(5)?.extract().ok()?;
    let kind: u8 = get(6)?.extract().ok()?;
    let duplicate_of: u64 = get(7)?.extract().ok()?;
    let payload = value.as_ref().map(|v| v.as_bytes());
    Some(Row {
        key,
        fields: Fields {
            seq,
            topic: strs.0.to_str().ok()?.as_bytes(),
            partition,
            offset,
            timestamp_ms,
            kind,
            duplicate_of,
            value_null: payload.is_none(),
            digest: &[],
            view_digest: &[],
        },
        view_body: strs.1.as_bytes(),
    })
}

/// The per-entry work of `Sealer.seal_batch` after classification: for each row
/// `(key index, seq, topic, partition, offset, timestamp_ms, kind code, duplicate_of, value,
/// view body)`, the `(payload digest, view, link)` of the entry, each link chained onto the one
/// before (the first onto `prev_link`), keyed by `keys[key index]` = `(key id, secret)`.
/// `None`: some value is out of the range the Python path packs (it raises there).
#[pyfunction]
pub fn seal_rows<'py>(
    py: Python<'py>,
    keys: Vec<(String, Vec<u8>)>,
    prev_link: Vec<u8>,
    rows: &Bound<'py, PyList>,
) -> PyResult<Option<Bound<'py, PyList>>> {
    let bases: Vec<HmacSha256> = keys.iter().map(|(_, secret)| keyed(secret)).collect();
    let out = PyList::empty(py);
    let mut prev = prev_link;
    let mut message = Vec::with_capacity(320);
    let mut view = Vec::with_capacity(512);
    for item in rows.iter() {
        let Ok(row) = item.downcast::<PyTuple>() else { return Ok(None) };
        if row.len() != 10 {
            return Ok(None);
        }
        let Ok(value) = row.get_item(8)?.extract::<Option<Bound<'py, PyBytes>>>() else { return Ok(None) };
        let Ok(topic) = row.get_item(2)?.downcast_into::<PyString>() else { return Ok(None) };
        let Ok(body) = row.get_item(9)?.downcast_into::<PyBytes>() else { return Ok(None) };
        let strs = (topic, body);
        let Some(parsed) = read_row(row, &value, &strs) else { return Ok(None) };
        let Some((key_id, _)) = keys.get(parsed.key) else { return Ok(None) };
        let Some(us) = parsed.fields.timestamp_ms.checked_mul(1000).and_then(|us| us.checked_sub(PG_EPOCH_US)) else {
            return Ok(None);
        };
        let digest = sha256(value.as_ref().map_or(&b""[..], |v| v.as_bytes()));
        view.clear();
        view.extend_from_slice(&8i32.to_be_bytes());
        view.extend_from_slice(&us.to_be_bytes());
        view.extend_from_slice(parsed.view_body);
        let view_digest = sha256(&view);
        let fields = Fields { digest: &digest, view_digest: &view_digest, ..parsed.fields };
        link_message(&mut message, key_id.as_bytes(), &prev, &fields);
        let link = mac_of(&bases[parsed.key], &message);
        let entry = PyTuple::new(
            py,
            [
                PyBytes::new(py, &digest).into_any(),
                PyBytes::new(py, &view).into_any(),
                PyBytes::new(py, &link).into_any(),
            ],
        )?;
        out.append(entry)?;
        prev = link.to_vec();
    }
    Ok(Some(out))
}

/// `merkle.entry_leaf_hash`: SHA-256(0x00 || leaf data); the caller checks the link's size.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub fn leaf_hash<'py>(
    py: Python<'py>,
    key_id: &str,
    seq: u64,
    topic: &str,
    partition: i32,
    offset: i64,
    timestamp_ms: i64,
    kind_code: u8,
    duplicate_of: u64,
    value_null: &Bound<'py, PyAny>,
    digest: &[u8],
    view_digest: &[u8],
    link: &[u8],
) -> PyResult<Bound<'py, PyBytes>> {
    let fields = Fields {
        seq,
        topic: topic.as_bytes(),
        partition,
        offset,
        timestamp_ms,
        kind: kind_code,
        duplicate_of,
        value_null: value_null.is_truthy()?,
        digest,
        view_digest,
    };
    let mut data = Vec::with_capacity(320);
    data.push(0u8);
    field(&mut data, b"domain", LEAF_TAG);
    field(&mut data, b"key_id", key_id.as_bytes());
    put_fields(&mut data, &fields);
    field(&mut data, b"link", link);
    Ok(PyBytes::new(py, &sha256(&data)))
}

/// `merkle.entry_leaves`: the leaf hash of each sealed entry (`chain.SealedEntry`), its view
/// digest computed here; `None` if some entry holds a value the Python path would treat
/// otherwise (a link not of 32 bytes, a value out of range): the caller then takes that path.
#[pyfunction]
pub fn entry_leaves<'py>(py: Python<'py>, entries: &Bound<'py, PyList>) -> PyResult<Option<Bound<'py, PyList>>> {
    let out = PyList::empty(py);
    let mut data = Vec::with_capacity(320);
    for entry in entries.iter() {
        let Some(leaf) = entry_leaf(&entry, &mut data) else { return Ok(None) };
        out.append(PyBytes::new(py, &leaf))?;
    }
    Ok(Some(out))
}

fn entry_leaf(entry: &Bound<'_, PyAny>, data: &mut Vec<u8>) -> Option<[u8; 32]> {
    let py = entry.py();
    let record = entry.getattr(intern!(py, "record")).ok()?;
    let topic = record.getattr(intern!(py, "topic")).ok()?.downcast_into::<PyString>().ok()?;
    let key_id = entry.getattr(intern!(py, "key_id")).ok()?.downcast_into::<PyString>().ok()?;
    let digest = entry.getattr(intern!(py, "digest")).ok()?.downcast_into::<PyBytes>().ok()?;
    let view = entry.getattr(intern!(py, "view")).ok()?.downcast_into::<PyBytes>().ok()?;
    let link = entry.getattr(intern!(py, "link")).ok()?.downcast_into::<PyBytes>().ok()?;
    if link.as_bytes().len() != 32 {
        return None;
    }
    let duplicate_of = entry.getattr(intern!(py, "duplicate_of")).ok()?;
    let duplicate_of: u64 = if duplicate_of.is_truthy().ok()? { duplicate_of.extract().ok()? } else { 0 };
    let view_digest = sha256(view.as_bytes());
    let fields = Fields {
        seq: entry.getattr(intern!(py, "seq")).ok()?.extract().ok()?,
        topic: topic.to_str().ok()?.as_bytes(),
        partition: record.getattr(intern!(py, "partition")).ok()?.extract().ok()?,
        offset: record.getattr(intern!(py, "offset")).ok()?.extract().ok()?,
        timestamp_ms: record.getattr(intern!(py, "timestamp_ms")).ok()?.extract().ok()?,
        kind: entry.getattr(intern!(py, "kind")).ok()?.getattr(intern!(py, "code")).ok()?.extract().ok()?,
        duplicate_of,
        value_null: record.getattr(intern!(py, "value")).ok()?.is_none(),
        digest: digest.as_bytes(),
        view_digest: &view_digest,
    };
    data.clear();
    data.push(0u8);
    field(data, b"domain", LEAF_TAG);
    field(data, b"key_id", key_id.to_str().ok()?.as_bytes());
    put_fields(data, &fields);
    field(data, b"link", link.as_bytes());
    Some(sha256(data))
}
