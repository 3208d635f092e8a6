//! Prediction messages of one known schema decoded straight into columns.
//!
//! `stream_monitor.events.batch.BlockDecoder` decodes a batch whose messages all
//! have one (model, version)'s usual shape into a block: a column per signal.
//! With msgspec that costs a Python float per value and a tuple per message
//! before the columns are numpy arrays. This module parses each message with
//! sonic-rs (serde_json where sonic-rs refuses it, or reads a zero whose sign it
//! may lose) and writes the numbers into one float64 matrix (a row per numeric
//! feature, NaN for null), so no Python object is made per numeric value.
//!
//! It accepts the usual shape with the one-message decoder's values: every
//! schema feature present once (a number or null for a numeric one; a string, a
//! boolean, which is the category "true" or "false", or null for a categorical
//! one; any of these for an ignored one), no other feature or field, no field
//! twice, the schema's model and version, `event_id` a non-empty string, `ts` a
//! number in range, an RFC 3339 string in its plain forms, or absent (booleans and
//! RFC 3339 times are more than the msgspec block shape takes). On any doubt
//! about a message, it is not of the schema and the caller decodes it another
//! way (msgspec, or the one-message decoder, whose verdicts are the answer).

use std::collections::HashMap;
use std::fmt;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyFloat, PyList, PyString, PyTuple};
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Numeric,
    Categorical,
    Ignored,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Prediction {
    Absent,
    Numeric,
    Categorical,
    /// not monitored, but its values are kept (the label join scores them): a number, string or boolean
    Ignored,
}

/// One (model, version)'s message shape, as `BlockSchema` gives it.
#[pyclass(frozen, module = "stream_monitor_decode")]
struct Schema {
    names: Vec<String>,
    index: HashMap<String, usize>,
    kinds: Vec<Kind>,
    /// the feature's row in its kind's output (numeric matrix row, categorical list)
    slots: Vec<usize>,
    n_numeric: usize,
    n_categorical: usize,
    model: String,
    /// None: the version "unknown", which a message gives as "unknown", null or not at all
    version: Option<String>,
    prediction: Prediction,
    max_string_length: usize,
    max_message_bytes: usize,
    latest_ts: f64,
    /// top-level fields outside the contract are skipped and named (input.strict off)
    unknown_fields: bool,
}

#[pymethods]
impl Schema {
    #[new]
    #[pyo3(signature = (numeric, categorical, ignored, model, model_version, prediction,
                        max_string_length, max_message_bytes, latest_ts, unknown_fields = false))]
    #[allow(clippy::too_many_arguments)]
    fn new(numeric: Vec<String>, categorical: Vec<String>, ignored: Vec<String>, model: String,
           model_version: String, prediction: &str, max_string_length: usize, max_message_bytes: usize,
           latest_ts: f64, unknown_fields: bool) -> PyResult<Self> {
        let prediction = match prediction {
            "absent" => Prediction::Absent,
            "numeric" => Prediction::Numeric,
            "categorical" => Prediction::Categorical,
            "ignored" => Prediction::Ignored,
            other => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "prediction kind {other:?} is not decoded here (absent, numeric, categorical)")))
            }
        };
        let mut names = Vec::new();
        let mut kinds = Vec::new();
        let mut slots = Vec::new();
        for (kind, group) in [(Kind::Numeric, &numeric), (Kind::Categorical, &categorical), (Kind::Ignored, &ignored)] {
            for (slot, name) in group.iter().enumerate() {
                names.push(name.clone());
                kinds.push(kind);
                slots.push(slot);
            }
        }
        let index: HashMap<String, usize> = names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
        if index.len() != names.len() {
            return Err(pyo3::exceptions::PyValueError::new_err("a feature name is given twice"));
        }
        let version = if model_version == "unknown" { None } else { Some(model_version) };
        Ok(Schema { names, index, kinds, slots, n_numeric: numeric.len(), n_categorical: categorical.len(),
                    model, version, prediction, max_string_length, max_message_bytes, latest_ts, unknown_fields })
    }

    /// The messages as columns, or None when any is not plainly of the schema.
    ///
    /// Returns `(numeric, categorical, event_ids, times, prediction, fits)`: `numeric`
    /// the float64 bytes of a (numeric features x messages) matrix, NaN for null;
    /// `categorical` a list (str or None) per categorical feature; `event_ids` a
    /// str per message; `times` each `ts` (float or None); `prediction` the float64
    /// bytes of the predictions (NaN: null or absent), a list of str or None, or
    /// None when the schema has no prediction; `fits` a byte per message, 1 when it
    /// is plainly of the schema. Without `partial` every message fits or the answer
    /// is None; with it, a message that does not fit has null in every column.
    ///
    /// With `screen` (and `partial`), each message's `model` and `model_version` are
    /// read first, skipping the rest: one of another model or version is marked as not
    /// fitting without being parsed (the batch of a partition carrying several).
    #[pyo3(signature = (raws, partial = false, screen = false))]
    fn decode<'py>(&self, py: Python<'py>, raws: &Bound<'py, PyList>, partial: bool, screen: bool)
                   -> PyResult<Option<Bound<'py, PyTuple>>> {
        let count = raws.len();
        let mut messages: Vec<Option<Bound<'py, PyBytes>>> = Vec::with_capacity(count);
        for item in raws.iter() {
            let raw = item.downcast_into::<PyBytes>().ok()
                .filter(|raw| (1..=self.max_message_bytes).contains(&raw.as_bytes().len()));
            if raw.is_none() && !partial {
                return Ok(None);
            }
            messages.push(raw);
        }
        let mut fits = vec![1u8; count];
        let mut out = Out {
            numeric: vec![f64::NAN; self.n_numeric * count],
            categorical: (0..self.n_categorical).map(|_| Vec::with_capacity(count)).collect(),
            event_ids: Vec::with_capacity(count),
            times: Vec::with_capacity(count),
            numeric_prediction: Vec::new(),
            categorical_prediction: Vec::new(),
            seen: vec![false; self.names.len()],
            foreign: false,
            unknown: Vec::with_capacity(count),
        };
        match self.prediction {
            Prediction::Numeric => out.numeric_prediction.reserve(count),
            Prediction::Categorical | Prediction::Ignored => out.categorical_prediction.reserve(count),
            Prediction::Absent => {}
        }
        for (row, raw) in messages.iter().enumerate() {
            let mark = out.mark();
            if let Some(raw) = raw.as_ref().filter(|raw| !(partial && screen && self.foreign(raw.as_bytes()))) {
                // sonic-rs first (SIMD, about 1.5x serde_json here); a message it refuses is read again
                // by serde_json from a clean row (a zero read as a float, say)
                let mut fast = sonic_rs::Deserializer::from_slice(raw.as_bytes());
                let seed = Message { schema: self, py, out: &mut out, row, count,
                                     number: Number { zero_is_doubtful: true } };
                if seed.deserialize(&mut fast).is_ok() && fast.end().is_ok() {
                    continue;
                }
                out.rewind(&mark, row, count);
                if out.foreign {
                    // another model's or version's message (a partition carries several): both
                    // parsers read a string alike, so it is not of the schema
                    out.foreign = false;
                    if !partial {
                        return Ok(None);
                    }
                    out.null_row(py, self.prediction);
                    fits[row] = 0;
                    continue;
                }
                let mut exact = serde_json::Deserializer::from_slice(raw.as_bytes());
                let seed = Message { schema: self, py, out: &mut out, row, count,
                                     number: Number { zero_is_doubtful: false } };
                if seed.deserialize(&mut exact).is_ok() && exact.end().is_ok() {
                    continue;
                }
            }
            // not plainly of the schema: the block ends here, or (partial) the row is left null
            if !partial {
                return Ok(None);
            }
            out.rewind(&mark, row, count);
            out.null_row(py, self.prediction);
            fits[row] = 0;
        }
        let numeric = PyBytes::new(py, as_bytes(&out.numeric));
        let categorical = PyList::empty(py);
        for column in out.categorical {
            categorical.append(PyList::new(py, column)?)?;
        }
        let event_ids = PyList::new(py, out.event_ids)?;
        let times = PyList::new(py, out.times)?;
        let prediction: Bound<'py, PyAny> = match self.prediction {
            Prediction::Numeric => PyBytes::new(py, as_bytes(&out.numeric_prediction)).into_any(),
            Prediction::Categorical | Prediction::Ignored => PyList::new(py, out.categorical_prediction)?.into_any(),
            Prediction::Absent => py.None().into_bound(py),
        };
        let unknown: Bound<'py, PyAny> = if out.unknown.iter().any(Option::is_some) {
            PyList::new(py, out.unknown)?.into_any()
        } else {
            py.None().into_bound(py)
        };
        Ok(Some(PyTuple::new(py, [numeric.into_any(), categorical.into_any(), event_ids.into_any(),
                                  times.into_any(), prediction, PyBytes::new(py, &fits).into_any(), unknown])?))
    }
}

impl Schema {
    /// Whether the message surely is another model's or version's: a `model` or `model_version`
    /// among its leading top-level fields a string (or null) the full read would refuse.
    ///
    /// Reads the top-level fields in order while their values are plain (a string without
    /// escapes, a number, true, false, null) and stops at the first that is not (an object, an
    /// array, an escape): a message in any doubt is left to the full read, which decides.
    fn foreign(&self, raw: &[u8]) -> bool {
        let mut at = skip_space(raw, 0);
        if raw.get(at) != Some(&b'{') {
            return false;
        }
        at += 1;
        loop {
            at = skip_space(raw, at);
            let Some((key, after)) = plain_string(raw, at) else { return false };
            at = skip_space(raw, after);
            if raw.get(at) != Some(&b':') {
                return false;
            }
            at = skip_space(raw, at + 1);
            let value_at = at;
            let value = match raw.get(at) {
                Some(b'"') => {
                    let Some((text, after)) = plain_string(raw, at) else { return false };
                    at = after;
                    Some(text)
                }
                Some(b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
                    while at < raw.len() && !matches!(raw[at], b',' | b'}' | b' ' | b'\t' | b'\n' | b'\r') {
                        if matches!(raw[at], b'"' | b'{' | b'[' | b'\\') {
                            return false;
                        }
                        at += 1;
                    }
                    None
                }
                _ => return false,
            };
            let null = &raw[value_at..at] == b"null";
            if key == b"model" {
                match value {
                    Some(model) if model != self.model.as_bytes() => return true,
                    None if null => return true,
                    _ => {}
                }
            } else if key == b"model_version" {
                match (value, self.version.as_deref()) {
                    (Some(version), Some(want)) if version != want.as_bytes() => return true,
                    (Some(version), None) if version != b"unknown" => return true,
                    (None, Some(_)) if null => return true,
                    _ => {}
                }
            }
            at = skip_space(raw, at);
            match raw.get(at) {
                Some(b',') => at += 1,
                _ => return false,
            }
        }
    }
}

fn skip_space(raw: &[u8], mut at: usize) -> usize {
    while at < raw.len() && matches!(raw[at], b' ' | b'\t' | b'\n' | b'\r') {
        at += 1;
    }
    at
}

/// The string starting at `at` (its bytes between the quotes) and the index after it, when it
/// has no escape.
fn plain_string(raw: &[u8], at: usize) -> Option<(&[u8], usize)> {
    if raw.get(at) != Some(&b'"') {
        return None;
    }
    let length = raw[at + 1..].iter().position(|&byte| byte == b'"' || byte == b'\\')?;
    let end = at + 1 + length;
    (raw[end] == b'"').then(|| (&raw[at + 1..end], end + 1))
}

fn as_bytes(values: &[f64]) -> &[u8] {
    // SAFETY: f64 has no padding and any alignment suits u8; the slice covers the same memory
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values)) }
}

struct Out {
    numeric: Vec<f64>,
    categorical: Vec<Vec<Option<PyObject>>>,
    event_ids: Vec<PyObject>,
    times: Vec<Option<f64>>,
    numeric_prediction: Vec<f64>,
    categorical_prediction: Vec<Option<PyObject>>,
    /// the features the current message has given
    seen: Vec<bool>,
    /// the current message is of another model or version: no other parser is tried
    foreign: bool,
    /// each message's top-level fields outside the contract (a tuple of names, sorted), or None
    unknown: Vec<Option<PyObject>>,
}

/// How far the outputs were filled before a message.
struct Mark {
    unknown: usize,
    categorical: Vec<usize>,
    event_ids: usize,
    times: usize,
    numeric_prediction: usize,
    categorical_prediction: usize,
}

impl Out {
    fn mark(&self) -> Mark {
        Mark {
            unknown: self.unknown.len(),
            categorical: self.categorical.iter().map(Vec::len).collect(),
            event_ids: self.event_ids.len(),
            times: self.times.len(),
            numeric_prediction: self.numeric_prediction.len(),
            categorical_prediction: self.categorical_prediction.len(),
        }
    }

    /// Undo what a message that was then refused wrote (its row of the numeric matrix back to null).
    fn rewind(&mut self, mark: &Mark, row: usize, count: usize) {
        for (column, &length) in self.categorical.iter_mut().zip(&mark.categorical) {
            column.truncate(length);
        }
        self.event_ids.truncate(mark.event_ids);
        self.unknown.truncate(mark.unknown);
        self.times.truncate(mark.times);
        self.numeric_prediction.truncate(mark.numeric_prediction);
        self.categorical_prediction.truncate(mark.categorical_prediction);
        for cell in self.numeric.iter_mut().skip(row).step_by(count) {
            *cell = f64::NAN;
        }
    }
}

impl Out {
    /// A row of nulls, for a message that is not of the schema (the caller decodes it another way).
    fn null_row(&mut self, py: Python<'_>, prediction: Prediction) {
        for column in self.categorical.iter_mut() {
            column.push(None);
        }
        self.event_ids.push(py.None());
        self.times.push(None);
        self.unknown.push(None);
        match prediction {
            Prediction::Numeric => self.numeric_prediction.push(f64::NAN),
            Prediction::Categorical | Prediction::Ignored => self.categorical_prediction.push(None),
            Prediction::Absent => {}
        }
    }
}

/// The top-level fields of a prediction message.
#[derive(Clone, Copy)]
enum Field {
    EventId = 0,
    Model = 1,
    ModelVersion = 2,
    Ts = 3,
    Features = 4,
    Prediction = 5,
}

/// A top-level key: a field of the contract, or another one's name (when such fields are skipped).
enum Key {
    Known(Field),
    Unknown(String),
}

struct FieldKey {
    unknown_fields: bool,
}

impl<'de> DeserializeSeed<'de> for FieldKey {
    type Value = Key;
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for FieldKey {
    type Value = Key;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field of the prediction contract")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        Ok(Key::Known(match key {
            "event_id" => Field::EventId,
            "model" => Field::Model,
            "model_version" => Field::ModelVersion,
            "ts" => Field::Ts,
            "features" => Field::Features,
            "prediction" => Field::Prediction,
            _ if self.unknown_fields => return Ok(Key::Unknown(key.to_owned())),
            _ => return Err(E::custom("a field outside the contract")),
        }))
    }
}

/// Any JSON value, checked and dropped (a field outside the contract): nested at most
/// `MAX_SKIPPED_DEPTH` deep, numbers finite (anything else is left to the one-message decoder).
struct Skip {
    depth: usize,
}

const MAX_SKIPPED_DEPTH: usize = 32;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, _value: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _value: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _value: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, value: f64) -> Result<(), E> {
        if value.is_finite() { Ok(()) } else { Err(E::custom("not finite")) }
    }
    fn visit_str<E: de::Error>(self, _value: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth >= MAX_SKIPPED_DEPTH {
            return Err(de::Error::custom("nested too deep"));
        }
        while seq.next_element_seed(Skip { depth: self.depth + 1 })?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.depth >= MAX_SKIPPED_DEPTH {
            return Err(de::Error::custom("nested too deep"));
        }
        while map.next_key::<de::IgnoredAny>()?.is_some() {
            map.next_value_seed(Skip { depth: self.depth + 1 })?;
        }
        Ok(())
    }
}

struct Message<'a, 'py> {
    schema: &'a Schema,
    py: Python<'py>,
    out: &'a mut Out,
    row: usize,
    count: usize,
    number: Number,
}

impl<'de> DeserializeSeed<'de> for Message<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Message<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a prediction message")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let schema = self.schema;
        let py = self.py;
        let out = self.out;
        let number = self.number;
        let mut given = 0u8;
        let mut ts = None;
        let mut numeric_prediction = f64::NAN;
        let mut categorical_prediction = None;
        let mut unknown: Vec<String> = Vec::new();
        while let Some(key) = map.next_key_seed(FieldKey { unknown_fields: schema.unknown_fields })? {
            let field = match key {
                Key::Known(field) => field,
                Key::Unknown(name) => {
                    if unknown.contains(&name) {
                        return Err(de::Error::custom("a field given twice"));
                    }
                    map.next_value_seed(Skip { depth: 0 })?;
                    unknown.push(name);
                    continue;
                }
            };
            let bit = 1u8 << field as u8;
            if given & bit != 0 {
                return Err(de::Error::custom("a field given twice"));
            }
            given |= bit;
            match field {
                Field::EventId => {
                    let id = map.next_value_seed(Text { py, min: 1, max: schema.max_string_length, booleans: false })?;
                    out.event_ids.push(id.ok_or_else(|| de::Error::custom("a null event_id"))?);
                }
                Field::Model => map.next_value_seed(Exactly { want: Some(&schema.model), integers: false })
                    .inspect_err(|_| out.foreign = true)?,
                Field::ModelVersion => map.next_value_seed(Exactly { want: schema.version.as_deref(), integers: true })
                    .inspect_err(|_| out.foreign = true)?,
                Field::Ts => {
                    ts = map.next_value_seed(Time { number })?;
                    if let Some(t) = ts {
                        if !(0.0..=schema.latest_ts).contains(&t) {
                            return Err(de::Error::custom("a time out of range"));
                        }
                    }
                }
                Field::Features => map.next_value_seed(Features { schema, py, out: &mut *out, row: self.row,
                                                                  count: self.count, number })?,
                Field::Prediction => match schema.prediction {
                    Prediction::Numeric => numeric_prediction = map.next_value_seed(number)?.unwrap_or(f64::NAN),
                    Prediction::Categorical => {
                        categorical_prediction =
                            map.next_value_seed(Text { py, min: 0, max: schema.max_string_length, booleans: true })?
                    }
                    Prediction::Ignored => {
                        categorical_prediction = map.next_value_seed(AnyValue { py, max: schema.max_string_length, number })?
                    }
                    Prediction::Absent => map.next_value_seed(Null)?,
                },
            }
        }
        let required = (1u8 << Field::EventId as u8) | (1 << Field::Model as u8) | (1 << Field::Features as u8)
            | if schema.version.is_some() { 1 << Field::ModelVersion as u8 } else { 0 };
        if given & required != required {
            return Err(de::Error::custom("a required field is missing"));
        }
        out.times.push(ts);
        out.unknown.push(if unknown.is_empty() {
            None
        } else {
            // as the one-message decoder names them: each cut to 64 characters, sorted
            let mut names: Vec<String> = unknown.iter().map(|name| name.chars().take(64).collect()).collect();
            names.sort_unstable();
            Some(PyTuple::new(py, names).map_err(|_| de::Error::custom("a name Python refused"))?.into_any().unbind())
        });
        match schema.prediction {
            Prediction::Numeric => out.numeric_prediction.push(numeric_prediction),
            Prediction::Categorical | Prediction::Ignored => out.categorical_prediction.push(categorical_prediction),
            Prediction::Absent => {}
        }
        Ok(())
    }
}

/// A string equal to `want`; with `want` None, null (or "unknown", for the version).
struct Exactly<'a> {
    want: Option<&'a str>,
    /// an integer is its decimal text (the version; a model must be a string)
    integers: bool,
}

impl<'de> DeserializeSeed<'de> for Exactly<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Exactly<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the schema's value")
    }
    fn visit_str<E: de::Error>(self, value: &str) -> Result<(), E> {
        match self.want {
            Some(want) if want == value => Ok(()),
            None if value == "unknown" => Ok(()),
            _ => Err(E::custom("another value")),
        }
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        if self.want.is_none() { Ok(()) } else { Err(E::custom("a null")) }
    }
    // an integer version is its decimal text to the one-message decoder (3 is the version "3")
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<(), E> {
        self.integer(i128::from(value))
    }
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<(), E> {
        self.integer(i128::from(value))
    }
}

impl Exactly<'_> {
    fn integer<E: de::Error>(self, value: i128) -> Result<(), E> {
        match self.want {
            Some(want) if self.integers && want == value.to_string() => Ok(()),
            _ => Err(E::custom("another value")),
        }
    }
}

/// Null only (a prediction where the schema has none: anything else is not of the schema).
struct Null;

impl<'de> DeserializeSeed<'de> for Null {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Null {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("null")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// A number (an integer is its nearest float) or null (None).
///
/// With `zero_is_doubtful` (sonic-rs reading), a zero read as a float is refused: sonic-rs reads
/// `-0.0` as 0.0, so the message is read again by serde_json, which keeps the sign.
#[derive(Clone, Copy)]
struct Number {
    zero_is_doubtful: bool,
}

impl<'de> DeserializeSeed<'de> for Number {
    type Value = Option<f64>;
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Option<f64>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Number {
    type Value = Option<f64>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number or null")
    }
    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Option<f64>, E> {
        // serde_json gives -0.0 for both `-0.0` and `-0`, which the one-message decoder reads as
        // -0.0 and 0.0: such a message is left to msgspec
        if !value.is_finite() || (value == 0.0 && (self.zero_is_doubtful || value.is_sign_negative())) {
            return Err(E::custom("not finite, or a zero whose sign is in doubt"));
        }
        Ok(Some(value))
    }
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Option<f64>, E> {
        Ok(Some(value as f64))
    }
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Option<f64>, E> {
        Ok(Some(value as f64))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<f64>, E> {
        Ok(None)
    }
}

/// The message's `ts`: epoch seconds (a number), null, or an RFC 3339 string in its plain forms
/// (read as the one-message decoder reads it; any other string is not of the schema).
#[derive(Clone, Copy)]
struct Time {
    number: Number,
}

impl<'de> DeserializeSeed<'de> for Time {
    type Value = Option<f64>;
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Option<f64>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Time {
    type Value = Option<f64>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("epoch seconds, null or an RFC 3339 time")
    }
    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Option<f64>, E> {
        self.number.visit_f64(value)
    }
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Option<f64>, E> {
        self.number.visit_u64(value)
    }
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Option<f64>, E> {
        self.number.visit_i64(value)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<f64>, E> {
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, value: &str) -> Result<Option<f64>, E> {
        rfc3339_seconds(value).map(Some).ok_or_else(|| E::custom("a time string left to the one-message decoder"))
    }
}

/// Epoch seconds of an RFC 3339 time as the one-message decoder computes them (Python's
/// `datetime.fromisoformat(...).timestamp()`, the fraction cut to 6 digits): the integer
/// microseconds since the epoch divided by 10^6, correctly rounded. Only the plain forms
/// `YYYY-MM-DD[Tt ]HH:MM:SS[.f{1,9}](Z|z|+HH:MM|-HH:MM)` with ASCII digits and valid fields;
/// None for anything else (the one-message decoder decides).
fn rfc3339_seconds(text: &str) -> Option<f64> {
    let b = text.as_bytes();
    let number = |from: usize, to: usize| -> Option<i64> {
        let digits = b.get(from..to)?;
        digits.iter().try_fold(0i64, |sum, &d| d.is_ascii_digit().then(|| sum * 10 + i64::from(d - b'0')))
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
    let (hour, minute, second) = (number(11, 13)?, number(14, 16)?, number(17, 19)?);
    let mut at = 19;
    let mut micros = 0i64;
    if b[at] == b'.' {
        let digits = b[at + 1..].iter().take_while(|d| d.is_ascii_digit()).count();
        if !(1..=9).contains(&digits) {
            return None;
        }
        let kept = digits.min(6);
        micros = number(at + 1, at + 1 + kept)? * 10i64.pow((6 - kept) as u32);
        at += 1 + digits;
    }
    let offset = match b.get(at..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (hours, minutes) = (number(at + 1, at + 3)?, number(at + 4, at + 6)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            (hours * 3600 + minutes * 60) * if *sign == b'-' { -1 } else { 1 }
        }
        _ => return None,
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if year < 1 || !(1..=12).contains(&month) || day < 1 || day > days_in_month[(month - 1) as usize]
        || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    // days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil)
    let shifted = if month <= 2 { year - 1 } else { year };
    let era = shifted.div_euclid(400);
    let of_era = shifted - era * 400;
    let of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let days = era * 146_097 + of_era * 365 + of_era / 4 - of_era / 100 + of_year - 719_468;
    let total = (days * 86_400 + hour * 3600 + minute * 60 + second - offset) * 1_000_000 + micros;
    // exact as a double below 2^53 microseconds (year 2255): one correctly rounded division
    (total.unsigned_abs() < 1u64 << 53).then(|| total as f64 / 1e6)
}

/// A string of `min` to `max` characters (a Python str) or null (None).
struct Text<'py> {
    py: Python<'py>,
    min: usize,
    max: usize,
    /// a JSON boolean is the category "true" or "false" (a feature's or prediction's value)
    booleans: bool,
}

impl<'de> DeserializeSeed<'de> for Text<'_> {
    type Value = Option<PyObject>;
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Option<PyObject>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Text<'_> {
    type Value = Option<PyObject>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or null")
    }
    fn visit_str<E: de::Error>(self, value: &str) -> Result<Option<PyObject>, E> {
        // a byte is at most a character: count characters only when the bytes say it may be too long
        let length = if value.len() <= self.max && value.len() >= self.min { value.len() } else { value.chars().count() };
        if length < self.min || length > self.max {
            return Err(E::custom("a string of the wrong length"));
        }
        Ok(Some(PyString::new(self.py, value).into_any().unbind()))
    }
    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Option<PyObject>, E> {
        if !self.booleans {
            return Err(E::custom("a boolean"));
        }
        let text = if value { pyo3::intern!(self.py, "true") } else { pyo3::intern!(self.py, "false") };
        Ok(Some(text.clone().into_any().unbind()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<PyObject>, E> {
        Ok(None)
    }
}

/// A number (a Python float), a string, a boolean (the category "true"/"false") or null (None):
/// a prediction that is not monitored, as the one-message decoder reads it.
struct AnyValue<'py> {
    py: Python<'py>,
    max: usize,
    number: Number,
}

impl<'de> DeserializeSeed<'de> for AnyValue<'_> {
    type Value = Option<PyObject>;
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Option<PyObject>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AnyValue<'_> {
    type Value = Option<PyObject>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number, a string, a boolean or null")
    }
    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Option<PyObject>, E> {
        self.float(self.number.visit_f64(value)?)
    }
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Option<PyObject>, E> {
        self.float(self.number.visit_u64(value)?)
    }
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Option<PyObject>, E> {
        self.float(self.number.visit_i64(value)?)
    }
    fn visit_str<E: de::Error>(self, value: &str) -> Result<Option<PyObject>, E> {
        self.text().visit_str(value)
    }
    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Option<PyObject>, E> {
        self.text().visit_bool(value)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<PyObject>, E> {
        Ok(None)
    }
}

impl<'py> AnyValue<'py> {
    fn float<E: de::Error>(&self, value: Option<f64>) -> Result<Option<PyObject>, E> {
        Ok(value.map(|value| PyFloat::new(self.py, value).into_any().unbind()))
    }
    fn text(&self) -> Text<'py> {
        Text { py: self.py, min: 0, max: self.max, booleans: true }
    }
}

/// A number, a string or null, checked and dropped (an ignored feature's value).
struct Ignored {
    max: usize,
    number: Number,
}

impl<'de> DeserializeSeed<'de> for Ignored {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Ignored {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number, a string or null")
    }
    fn visit_f64<E: de::Error>(self, value: f64) -> Result<(), E> {
        self.number.visit_f64(value).map(|_| ())
    }
    fn visit_u64<E: de::Error>(self, _value: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _value: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, value: &str) -> Result<(), E> {
        if value.len() > self.max && value.chars().count() > self.max {
            return Err(E::custom("a string too long"));
        }
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _value: bool) -> Result<(), E> {
        Ok(())  // the category "true" or "false"
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// A feature name of the schema: its index (the expected next one is tried first).
struct FeatureKey<'a> {
    schema: &'a Schema,
    expected: usize,
}

impl<'de> DeserializeSeed<'de> for FeatureKey<'_> {
    type Value = usize;
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<usize, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for FeatureKey<'_> {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a feature of the schema")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<usize, E> {
        if self.schema.names.get(self.expected).is_some_and(|name| name == key) {
            return Ok(self.expected);
        }
        self.schema.index.get(key).copied().ok_or_else(|| E::custom("a feature outside the schema"))
    }
}

struct Features<'a, 'py> {
    schema: &'a Schema,
    py: Python<'py>,
    out: &'a mut Out,
    row: usize,
    count: usize,
    number: Number,
}

impl<'de> DeserializeSeed<'de> for Features<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Features<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the schema's features")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let schema = self.schema;
        let out = self.out;
        let number = self.number;
        out.seen.iter_mut().for_each(|seen| *seen = false);
        let mut given = 0;
        let mut expected = 0;
        while let Some(index) = map.next_key_seed(FeatureKey { schema, expected })? {
            if out.seen[index] {
                return Err(de::Error::custom("a feature given twice"));
            }
            out.seen[index] = true;
            given += 1;
            expected = index + 1;
            let slot = schema.slots[index];
            match schema.kinds[index] {
                Kind::Numeric => {
                    if let Some(value) = map.next_value_seed(number)? {
                        out.numeric[slot * self.count + self.row] = value;
                    }
                }
                Kind::Categorical => {
                    let value = map.next_value_seed(Text { py: self.py, min: 0, max: schema.max_string_length, booleans: true })?;
                    out.categorical[slot].push(value);
                }
                Kind::Ignored => map.next_value_seed(Ignored { max: schema.max_string_length, number })?,
            }
        }
        if given != schema.names.len() {
            return Err(de::Error::custom("a feature of the schema is missing"));
        }
        Ok(())
    }
}

#[pymodule]
fn stream_monitor_decode(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Schema>()?;
    Ok(())
}
