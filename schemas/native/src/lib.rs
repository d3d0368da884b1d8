//! Native accelerator of baldur-audit's sealer and link checks.
//!
//! The pure-Python code in `schemas/` is the reference: every function here computes the very
//! bytes its Python twin computes (`tests/unit/schemas/test_native*.py` compares them on
//! generated input) or returns `None` so that the caller takes the Python path. Nothing here
//! decides a classification the Python path would decide otherwise.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

mod decode;
mod link;
mod rows;

/// SHA-256 of a payload (`None` hashes as empty), as `chain.payload_digest`.
#[pyfunction]
#[pyo3(signature = (value))]
fn payload_digest<'py>(py: Python<'py>, value: Option<&[u8]>) -> Bound<'py, PyBytes> {
    PyBytes::new(py, &link::sha256(value.unwrap_or(b"")))
}

/// `fastpath.decode_view`: `(event id bytes, view body)` or `None` (take the Python path).
#[pyfunction]
fn decode_view<'py>(py: Python<'py>, value: &[u8], prefix: &[u8]) -> Option<Bound<'py, PyTuple>> {
    let (event_id, view) = decode::decode_view(value, prefix)?;
    let id = PyBytes::new(py, &event_id);
    let body = PyBytes::new(py, &view);
    PyTuple::new(py, [id.into_any(), body.into_any()]).ok()
}

/// `decode_view` of each value (`None` for a value that is not `bytes`), in one call.
#[pyfunction]
fn decode_views<'py>(py: Python<'py>, values: &Bound<'py, PyList>, prefix: &[u8]) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for value in values.iter() {
        let found = match value.downcast::<PyBytes>() {
            Ok(bytes) => decode_view(py, bytes.as_bytes(), prefix),
            Err(_) => None,
        };
        match found {
            Some(tuple) => out.append(tuple)?,
            None => out.append(py.None())?,
        }
    }
    Ok(out)
}

#[pymodule]
fn baldur_audit_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(payload_digest, m)?)?;
    m.add_function(wrap_pyfunction!(decode_view, m)?)?;
    m.add_function(wrap_pyfunction!(decode_views, m)?)?;
    m.add_function(wrap_pyfunction!(link::seal_rows, m)?)?;
    m.add_function(wrap_pyfunction!(link::leaf_hash, m)?)?;
    m.add_function(wrap_pyfunction!(link::entry_leaves, m)?)?;
    m.add_class::<link::LedgerLinker>()?;
    m.add_class::<rows::RowChecker>()?;
    Ok(())
}
