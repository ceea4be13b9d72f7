//! Rows of named features from Python dicts (River's `learn_one(x, y)`), read without
//! reference counting and without hashing again a name seen at the same position of the last
//! row: a stream of dicts with the same keys (a `csv.DictReader`'s, a literal's) hashes each
//! name once. The one `unsafe` block borrows a dict's items while nothing can change it.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyString};
use pyo3::{ffi, Borrowed};
use std::ops::Range;
use streamsgd::source::hash::Seeded;
use streamsgd::sparse::parse::{NameKey, Named};

/// One row of named features, owned (categories copied into one buffer).
#[derive(Default)]
pub struct Row {
    keys: Vec<NameKey>,
    values: Vec<Value>,
    text: String,
}

enum Value {
    Number(f32),
    /// A category: its bytes in [`Row::text`].
    Category(Range<usize>),
}

impl Row {
    fn clear(&mut self) {
        self.keys.clear();
        self.values.clear();
        self.text.clear();
    }

    #[inline]
    fn push(&mut self, key: NameKey, value: Named<'_>) {
        self.keys.push(key);
        self.values.push(match value {
            Named::Number(x) => Value::Number(x),
            Named::Category(c) => {
                self.text.push_str(c);
                Value::Category(self.text.len() - c.len()..self.text.len())
            }
        });
    }

    /// The row's features, as [`streamsgd::online::OnlineModel::learn_keyed`] takes them.
    pub fn named(&self) -> impl Iterator<Item = (NameKey, Named<'_>)> {
        self.keys.iter().zip(&self.values).map(|(&k, v)| {
            (
                k,
                match v {
                    Value::Number(x) => Named::Number(*x),
                    Value::Category(r) => Named::Category(&self.text[r.clone()]),
                },
            )
        })
    }
}

/// The keys of the names in the last row read, by position.
#[derive(Default)]
pub struct Keys {
    /// Exact `str` names with their keys, held (so an address seen again is the same name,
    /// and releasing one runs no Python code).
    last: Vec<(Py<PyString>, NameKey)>,
}

impl Keys {
    /// Reads `dict` (names: str; values: str for a category, bool, int or float for a
    /// number) into `row`, names hashed under `seed`.
    pub fn read(&mut self, dict: &Bound<'_, PyDict>, seed: Seeded, row: &mut Row) -> PyResult<()> {
        row.clear();
        if self.read_borrowed(dict, seed, row)? {
            return Ok(());
        }
        // A value of another type (numpy's float32, a Decimal): converting it may run Python
        // code, so read through owned references.
        row.clear();
        let items: Vec<_> = dict.iter().collect();
        for (i, (k, v)) in items.iter().enumerate() {
            let key = self.key(i, k.as_borrowed(), seed)?;
            let value = if let Ok(s) = v.cast::<PyString>() {
                Named::Category(s.to_str()?)
            } else if let Ok(b) = v.cast::<PyBool>() {
                Named::Number(f32::from(u8::from(b.is_true())))
            } else {
                let x: f64 = v.extract().map_err(|_| bad_value(k, v))?;
                Named::Number(x as f32)
            };
            row.push(key, value);
        }
        Ok(())
    }

    /// [`Keys::read`] through borrowed references; false at the first value that is not an
    /// exact str, bool, int or float (`row` then holds the items before it).
    fn read_borrowed(&mut self, dict: &Bound<'_, PyDict>, seed: Seeded, row: &mut Row) -> PyResult<bool> {
        let py = dict.py();
        let (mut pos, mut k, mut v): (ffi::Py_ssize_t, *mut ffi::PyObject, *mut ffi::PyObject) =
            (0, std::ptr::null_mut(), std::ptr::null_mut());
        let mut i = 0;
        // SAFETY: `dict` is a live dict and the GIL is held (`py`). PyDict_Next writes borrowed
        // references to the next item's key and value, valid while the dict is unchanged: no
        // Python code runs in this loop (the conversions below are those of exact str, bool,
        // int and float objects, which call none, and the only references released, in
        // `Keys::key`, are exact strs', whose deallocation calls none), and the borrows end
        // with each iteration (categories are copied into `row`).
        while unsafe { ffi::PyDict_Next(dict.as_ptr(), &mut pos, &mut k, &mut v) } != 0 {
            // SAFETY: as above: borrowed references, non-null, to live objects.
            let (key, value) = unsafe { (Borrowed::from_ptr(py, k), Borrowed::<'_, '_, PyAny>::from_ptr(py, v)) };
            let named = if let Ok(x) = value.cast_exact::<PyFloat>() {
                Named::Number(x.value() as f32)
            } else if let Ok(s) = value.cast_exact::<PyString>() {
                Named::Category(s.extract::<&str>()?)
            } else if let Ok(b) = value.cast_exact::<PyBool>() {
                Named::Number(f32::from(u8::from(b.is_true())))
            } else if value.cast_exact::<PyInt>().is_ok() {
                Named::Number(value.extract::<f64>()? as f32)
            } else {
                return Ok(false);
            };
            let key = self.key(i, key, seed)?;
            row.push(key, named);
            i += 1;
        }
        Ok(true)
    }

    /// The key of name `name` at position `i`: the last row's if it is the same str object,
    /// else hashed (and kept when it is an exact str).
    #[inline]
    fn key(&mut self, i: usize, name: Borrowed<'_, '_, PyAny>, seed: Seeded) -> PyResult<NameKey> {
        match self.last.get(i) {
            Some((held, key)) if held.as_ptr() == name.as_ptr() => Ok(*key),
            _ => self.hash(i, name, seed),
        }
    }

    /// [`Keys::key`] for a name not at position `i` of the last row.
    #[cold]
    fn hash(&mut self, i: usize, name: Borrowed<'_, '_, PyAny>, seed: Seeded) -> PyResult<NameKey> {
        let Ok(s) = name.cast::<PyString>() else {
            return Err(crate::err(format!("feature names are str, not {}", name.get_type())));
        };
        let key = NameKey::new(seed, s.to_str()?);
        if let Ok(exact) = name.cast_exact::<PyString>() {
            let entry = (exact.to_owned().unbind(), key);
            if i < self.last.len() {
                self.last[i] = entry;
            } else if i == self.last.len() {
                self.last.push(entry);
            }
        }
        Ok(key)
    }
}

fn bad_value(k: &Bound<'_, PyAny>, v: &Bound<'_, PyAny>) -> PyErr {
    crate::err(format!("feature {k}: {} is neither a number nor a str", v.get_type()))
}
