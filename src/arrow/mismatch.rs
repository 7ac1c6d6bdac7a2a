//! The difference between two schemas, in words, for
//! [`ArrowRingError::SchemaMismatch`](super::ArrowRingError::SchemaMismatch).

use arrow_schema::{Field, Schema};

/// The first difference between the schema of a stream (`expected`) and
/// another one (`found`), in words: the first column whose name, type or
/// nullability differs, a column count that differs, or else metadata.
///
/// `expected` is called "the stream" and `found` "here", as
/// [`ArrowRingError::SchemaMismatch`](super::ArrowRingError::SchemaMismatch)
/// prints them.
///
/// # Examples
///
/// ```
/// use laminar_ring::arrow::schema::{DataType, Field, Schema};
/// use laminar_ring::arrow::schema_difference;
///
/// let stream = Schema::new(vec![Field::new("price", DataType::Float64, true)]);
/// let here = Schema::new(vec![Field::new("price", DataType::Int64, true)]);
/// assert_eq!(
///     schema_difference(&stream, &here),
///     "column 'price' is Float64 in the stream, Int64 here"
/// );
/// ```
pub fn schema_difference(expected: &Schema, found: &Schema) -> String {
    let (a, b) = (expected.fields(), found.fields());
    for (i, (fa, fb)) in a.iter().zip(b.iter()).enumerate() {
        if let Some(why) = field_difference(i, fa, fb) {
            return why;
        }
    }
    let names = |fields: &[std::sync::Arc<Field>]| {
        fields
            .iter()
            .map(|f| format!("'{}'", f.name()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if a.len() > b.len() {
        return format!(
            "the stream has {}, here {}: no {} here",
            columns(a.len()),
            b.len(),
            names(&a[b.len()..])
        );
    }
    if b.len() > a.len() {
        return format!(
            "the stream has {}, here {}: {} only here",
            columns(a.len()),
            b.len(),
            names(&b[a.len()..])
        );
    }
    if expected.metadata() != found.metadata() {
        return "the schemas' metadata differ".to_owned();
    }
    "the schemas are the same".to_owned()
}

/// "1 column", "3 columns".
fn columns(n: usize) -> String {
    if n == 1 {
        "1 column".to_owned()
    } else {
        format!("{n} columns")
    }
}

/// How column `i` differs, if it does.
fn field_difference(i: usize, a: &Field, b: &Field) -> Option<String> {
    if a.name() != b.name() {
        return Some(format!(
            "column {} is '{}' in the stream, '{}' here",
            i + 1,
            a.name(),
            b.name()
        ));
    }
    let name = a.name();
    if a.data_type() != b.data_type() {
        return Some(format!(
            "column '{name}' is {} in the stream, {} here",
            a.data_type(),
            b.data_type()
        ));
    }
    if a.is_nullable() != b.is_nullable() {
        let says = |f: &Field| {
            if f.is_nullable() {
                "nullable"
            } else {
                "non-null"
            }
        };
        return Some(format!(
            "column '{name}' is {} in the stream, {} here",
            says(a),
            says(b)
        ));
    }
    if a != b {
        return Some(format!(
            "column '{name}' has other metadata in the stream than here"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::{DataType, TimeUnit};
    use std::collections::HashMap;

    fn schema(fields: &[(&str, DataType, bool)]) -> Schema {
        Schema::new(
            fields
                .iter()
                .map(|(n, t, null)| Field::new(*n, t.clone(), *null))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn the_first_differing_column_is_named_with_both_types() {
        let stream = schema(&[
            ("id", DataType::Int64, true),
            ("price", DataType::Float64, true),
            ("sym", DataType::Utf8, true),
        ]);
        let here = schema(&[
            ("id", DataType::Int64, true),
            ("price", DataType::Int64, true),
            ("sym", DataType::Int32, true),
        ]);
        assert_eq!(
            schema_difference(&stream, &here),
            "column 'price' is Float64 in the stream, Int64 here"
        );
        let ts = schema(&[("t", DataType::Timestamp(TimeUnit::Millisecond, None), true)]);
        let utc = schema(&[(
            "t",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        )]);
        assert_eq!(
            schema_difference(&ts, &utc),
            "column 't' is Timestamp(ms) in the stream, Timestamp(ms, \"UTC\") here"
        );
    }

    #[test]
    fn names_counts_nullability_and_metadata_are_told_apart() {
        let a = schema(&[("id", DataType::Int64, true), ("x", DataType::Utf8, true)]);
        let renamed = schema(&[("id", DataType::Int64, true), ("y", DataType::Utf8, true)]);
        assert_eq!(
            schema_difference(&a, &renamed),
            "column 2 is 'x' in the stream, 'y' here"
        );
        let shorter = schema(&[("id", DataType::Int64, true)]);
        assert_eq!(
            schema_difference(&a, &shorter),
            "the stream has 2 columns, here 1: no 'x' here"
        );
        assert_eq!(
            schema_difference(&shorter, &a),
            "the stream has 1 column, here 2: 'x' only here"
        );
        let strict = schema(&[("id", DataType::Int64, false), ("x", DataType::Utf8, true)]);
        assert_eq!(
            schema_difference(&a, &strict),
            "column 'id' is nullable in the stream, non-null here"
        );
        let tagged = Schema::new(vec![
            Field::new("id", DataType::Int64, true)
                .with_metadata(HashMap::from([("k".into(), "v".into())])),
            Field::new("x", DataType::Utf8, true),
        ]);
        assert_eq!(
            schema_difference(&a, &tagged),
            "column 'id' has other metadata in the stream than here"
        );
        let meta = a
            .clone()
            .with_metadata(HashMap::from([("k".into(), "v".into())]));
        assert_eq!(schema_difference(&a, &meta), "the schemas' metadata differ");
    }
}
