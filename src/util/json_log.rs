//! The `[log] format = "json"` line: one flat JSON object per event, with stable key
//! names, for log pipelines (Loki, Elasticsearch, Vector, `jq`) that index top-level
//! keys.
//!
//! tracing-subscriber's own JSON formatter nests the event's fields under `fields` and
//! the spans' under `span`/`spans`, and cannot put span fields at the top level, so this
//! module owns a small [`FormatEvent`]: [`FlatJson`]. Every line is an object of
//! scalars (strings, numbers, booleans; never an object or an array), keys in this
//! order:
//!
//! 1. `timestamp` (RFC 3339, UTC, microseconds), `level` (`ERROR` … `TRACE`), `target`
//!    (the event's target, e.g. `spoa_guard::deny`; for a `log`-crate record from a
//!    dependency, its own target) and `message` (empty when the event has none);
//! 2. every field of the event, under its own name, in the order written;
//! 3. every field of the spans the event is in (the SPOP connection's `conn` span:
//!    `peer`, `max_frame_size`, `engine_id`), innermost span first.
//!
//! Collisions: a key is written once, first come first served, so an event field wins
//! over a span field of the same name, and an inner span's over an outer one's. A field
//! named like one of the four standard keys (the ban logs' `target`, the address or
//! network banned) is written as `field_<name>` (`field_target`). The span fields come
//! from the fmt layer's [`FormattedFields`] of [`JsonFields`] (a JSON object per span,
//! kept up to date when the span records a field later), so the subscriber must be built
//! with `.fmt_fields(JsonFields::new())` (before `.event_format(FlatJson)`): see
//! [`FlatJson`].

use std::fmt;

use serde_json::{Map, Number, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The keys every line starts with; a field of one of these names is written as
/// `field_<name>`.
pub const STANDARD_KEYS: [&str; 4] = ["timestamp", "level", "target", "message"];

/// Prefix of a field whose name is one of [`STANDARD_KEYS`].
pub const RENAMED_PREFIX: &str = "field_";

/// Formats each event as one flat JSON object (see the module docs). Use with
/// `JsonFields` as the span field formatter:
///
/// ```
/// use spoa_guard::util::json_log::FlatJson;
/// use tracing_subscriber::fmt::format::JsonFields;
///
/// let subscriber = tracing_subscriber::fmt()
///     .fmt_fields(JsonFields::new())
///     .event_format(FlatJson)
///     .with_writer(std::io::sink)
///     .finish();
/// tracing::subscriber::with_default(subscriber, || tracing::info!(answer = 42, "hello"));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct FlatJson;

impl<S> FormatEvent<S, JsonFields> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut fields = EventFields::default();
        event.record(&mut fields);
        let metadata = event.metadata();
        let mut line = Line::default();
        line.put("timestamp", Value::String(timestamp))?;
        line.put("level", Value::String(metadata.level().as_str().into()))?;
        let target = fields.log_target.take();
        let target = target.unwrap_or_else(|| metadata.target().to_string());
        line.put("target", Value::String(target))?;
        let message = fields.message.take().unwrap_or_default();
        line.put("message", Value::String(message))?;
        for (name, value) in fields.values {
            line.field(name, value)?;
        }
        if let Some(scope) = ctx.event_scope() {
            for span in scope {
                let extensions = span.extensions();
                let Some(stored) = extensions.get::<FormattedFields<JsonFields>>() else {
                    continue;
                };
                let Ok(values) = serde_json::from_str::<Map<String, Value>>(stored) else {
                    continue;
                };
                for (name, value) in values {
                    line.field(&name, scalar(value))?;
                }
            }
        }
        writer.write_str(&line.finish())
    }
}

/// A line being written: the object so far, and the keys in it.
#[derive(Default)]
struct Line {
    text: String,
    keys: Vec<String>,
}

impl Line {
    /// Writes `key: value` unless `key` is already there.
    fn put(&mut self, key: &str, value: Value) -> fmt::Result {
        if self.keys.iter().any(|k| k == key) {
            return Ok(());
        }
        self.text.push(if self.keys.is_empty() { '{' } else { ',' });
        self.text
            .push_str(&serde_json::to_string(key).map_err(|_| fmt::Error)?);
        self.text.push(':');
        self.text
            .push_str(&serde_json::to_string(&value).map_err(|_| fmt::Error)?);
        self.keys.push(key.to_string());
        Ok(())
    }

    /// Writes a field: under its own name, or `field_<name>` for a standard key.
    fn field(&mut self, name: &str, value: Value) -> fmt::Result {
        if STANDARD_KEYS.contains(&name) {
            self.put(&format!("{RENAMED_PREFIX}{name}"), value)
        } else {
            self.put(name, value)
        }
    }

    /// The object and its newline.
    fn finish(mut self) -> String {
        if self.keys.is_empty() {
            self.text.push('{');
        }
        self.text.push_str("}\n");
        self.text
    }
}

/// An object or array (which no field visitor produces) as its JSON text.
fn scalar(value: Value) -> Value {
    match value {
        Value::Array(_) | Value::Object(_) => Value::String(value.to_string()),
        other => other,
    }
}

/// The fields of one event as JSON scalars, in the order recorded; the first `message`
/// and a `log` record's `log.target` apart.
#[derive(Default)]
struct EventFields {
    message: Option<String>,
    log_target: Option<String>,
    values: Vec<(&'static str, Value)>,
}

impl EventFields {
    fn put(&mut self, field: &Field, value: Value) {
        match field.name() {
            "message" if self.message.is_none() => {
                self.message = Some(match value {
                    Value::String(text) => text,
                    other => other.to_string(),
                });
            }
            "log.target" => {
                if let Value::String(target) = value {
                    self.log_target = Some(target);
                }
            }
            // What tracing-log adds to a `log` record: the target is taken above, the
            // rest is the source location, which the text format does not show either.
            "log.module_path" | "log.file" | "log.line" => {}
            name => self.values.push((name, value)),
        }
    }
}

impl Visit for EventFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let value =
            Number::from_f64(value).map_or_else(|| Value::String(value.to_string()), Value::Number);
        self.put(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        let value =
            i64::try_from(value).map_or_else(|_| Value::String(value.to_string()), Value::from);
        self.put(field, value);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        let value =
            u64::try_from(value).map_or_else(|_| Value::String(value.to_string()), Value::from);
        self.put(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}

/// What `emit` logs through [`FlatJson`] (every level on), for tests here and in other
/// modules.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn capture(emit: impl FnOnce()) -> String {
    use std::sync::{Arc, Mutex};

    /// What the subscriber wrote.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .fmt_fields(JsonFields::new())
        .event_format(FlatJson)
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, emit);
    let bytes = buffer.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines `emit` logs, as written and parsed.
    fn lines(emit: impl FnOnce()) -> Vec<(String, Map<String, Value>)> {
        let text = capture(emit);
        assert!(text.is_empty() || text.ends_with('\n'), "{text}");
        text.lines()
            .map(|line| {
                let parsed = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                (line.to_string(), parsed)
            })
            .collect()
    }

    /// The keys of `line` in the order written (every value is a scalar: no key inside
    /// a value but in a string, which `"key":` at a top-level position never is here).
    fn order(raw: &str, line: &Map<String, Value>) -> Vec<String> {
        let mut keys: Vec<(usize, String)> = line
            .keys()
            .map(|k| {
                (
                    raw.find(&format!("{}:", Value::from(k.as_str()))).unwrap(),
                    k.clone(),
                )
            })
            .collect();
        keys.sort();
        keys.into_iter().map(|(_, k)| k).collect()
    }

    fn assert_flat(line: &Map<String, Value>) {
        for (key, value) in line {
            assert!(
                !value.is_object() && !value.is_array(),
                "{key} is not a scalar: {line:?}"
            );
        }
    }

    #[test]
    fn an_event_in_a_span_is_one_flat_object_with_the_span_fields_at_the_top() {
        let lines = lines(|| {
            let span = tracing::info_span!(
                "conn",
                peer = %"127.0.0.1:4321",
                engine_id = tracing::field::Empty,
                max_frame_size = tracing::field::Empty
            );
            let _in = span.enter();
            span.record("max_frame_size", 16380u32);
            span.record("engine_id", "a-b-c");
            tracing::warn!(
                target: "spoa_guard::server::conn",
                error = %"frame of 9000 bytes exceeds max-frame-size 16380",
                kind = "too-big",
                status = 3,
                suppressed = 0u64,
                ratio = 0.5,
                fatal = true,
                "protocol error; disconnecting"
            );
        });
        let [(raw, line)] = &lines[..] else {
            panic!("one line expected: {lines:?}")
        };
        assert_flat(line);
        let keys = order(raw, line);
        assert_eq!(keys[..4], STANDARD_KEYS);
        assert_eq!(
            keys[4..10],
            ["error", "kind", "status", "suppressed", "ratio", "fatal"]
        );
        let mut spans = keys[10..].to_vec();
        spans.sort();
        assert_eq!(spans, ["engine_id", "max_frame_size", "peer"]);
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["target"], "spoa_guard::server::conn");
        assert_eq!(line["message"], "protocol error; disconnecting");
        assert_eq!(line["status"], 3);
        assert_eq!(line["ratio"], 0.5);
        assert_eq!(line["fatal"], true);
        assert_eq!(line["peer"], "127.0.0.1:4321");
        assert_eq!(line["max_frame_size"], 16380);
        assert_eq!(line["engine_id"], "a-b-c");
        let timestamp = line["timestamp"].as_str().unwrap();
        assert!(
            timestamp.len() >= 20 && timestamp.ends_with('Z') && timestamp.contains('T'),
            "{timestamp}"
        );
    }

    #[test]
    fn collisions_event_over_span_inner_over_outer_standard_keys_renamed() {
        let lines = lines(|| {
            let outer = tracing::info_span!("outer", peer = "outer", depth = 1);
            let _outer = outer.enter();
            let inner = tracing::info_span!("inner", peer = "inner", rule = "span");
            let _inner = inner.enter();
            tracing::info!(
                target: "spoa_guard::bans",
                target = "203.0.113.0/24",
                rule = "event",
                level = 7,
                "ban set"
            );
            tracing::info!(answer = 42);
            tracing::debug!(message = "bye", "HAProxy disconnected");
        });
        let [(_, ban), (raw, bare), (_, twice)] = &lines[..] else {
            panic!("three lines expected: {lines:?}")
        };
        assert_flat(ban);
        assert_eq!(ban["target"], "spoa_guard::bans");
        assert_eq!(ban["field_target"], "203.0.113.0/24");
        assert_eq!(ban["level"], "INFO");
        assert_eq!(ban["field_level"], 7);
        assert_eq!(ban["rule"], "event");
        assert_eq!(ban["peer"], "inner");
        assert_eq!(ban["depth"], 1);
        assert_eq!(ban["message"], "ban set");
        // No message: an empty one. The inner span's fields before the outer one's.
        assert_eq!(
            order(raw, bare),
            [&STANDARD_KEYS[..], &["answer", "peer", "rule", "depth"]].concat()
        );
        assert_eq!(bare["message"], "");
        // A field named `message` besides the message itself.
        assert_eq!(twice["message"], "HAProxy disconnected");
        assert_eq!(twice["field_message"], "bye");
    }

    #[test]
    fn values_that_are_not_json_numbers_become_strings() {
        let lines = lines(|| {
            tracing::info!(nan = f64::NAN, big = u128::MAX, list = ?vec![1, 2], "odd values");
        });
        let [(_, line)] = &lines[..] else {
            panic!("one line expected: {lines:?}")
        };
        assert_flat(line);
        assert_eq!(line["nan"], "NaN");
        assert_eq!(line["big"], u128::MAX.to_string());
        // A Debug list is a string: code logs lists joined, or one field per item.
        assert_eq!(line["list"], "[1, 2]");
    }
}
