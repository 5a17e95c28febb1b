//! The `tojson` filter of HF transformers' chat templates, written byte for byte as Python's `json.dumps` writes it.
//!
//! transformers registers `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`, which
//! returns `json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)`.
//! minijinja's built-in `tojson` is another filter (compact, HTML-safe: it escapes `<`, `>`, `&` and `'`), so the chat
//! environment replaces it with this one. What Python writes, and this module too:
//!
//! - separators `", "` and `": "`, or `","` and `": "` when `indent` is given; `separators=(item, key)` overrides both;
//! - `indent`: an integer (that many spaces; 0 or less: newlines only), a string (used as is), `True` (one space);
//!   every item on its own line, empty containers as `[]` / `{}`;
//! - strings escape `"`, `\`, `\n`, `\r`, `\t`, `\b`, `\f` and other C0 controls as `\u00XX` (lowercase hex);
//!   `ensure_ascii=True` also escapes everything from U+007F up, astral characters as surrogate pairs;
//! - floats in Python's `repr` form (`1.0`, `1e+16`), `NaN`, `Infinity`, `-Infinity`; integers exact;
//! - dict keys: strings, or numbers, booleans and none turned into strings; `sort_keys` sorts keys of one kind;
//! - `Undefined`, functions and other objects Python cannot serialise are errors (`TypeError` in Python).

use super::pyfmt::py_float_repr;
use minijinja::value::{from_args, Kwargs, Rest, Value, ValueKind, ValueOrKwargs};
use minijinja::{Error, ErrorKind};
use std::cmp::Ordering;
use std::fmt::Write;

/// Deeper nesting is an error (Python's own limit is its recursion limit, about 1000).
const MAX_DEPTH: usize = 256;

/// How to write: the arguments of `json.dumps` that the filter passes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JsonStyle {
    pub ensure_ascii: bool,
    /// `None` writes everything on one line; `Some(unit)` one item per line, indented by `unit` per level.
    pub indent: Option<String>,
    pub item_separator: String,
    pub key_separator: String,
    pub sort_keys: bool,
}

impl Default for JsonStyle {
    fn default() -> Self {
        Self {
            ensure_ascii: false,
            indent: None,
            item_separator: ", ".into(),
            key_separator: ": ".into(),
            sort_keys: false,
        }
    }
}

/// The filter: `value | tojson(ensure_ascii=False, indent=None, separators=None, sort_keys=False)`.
pub(crate) fn tojson_filter(value: &Value, args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    let args: Vec<Value> = args.0.into_iter().map(Value::from).collect();
    let style = parse_style(&args)?;
    to_json(value, &style).map(Value::from)
}

fn parse_style(args: &[Value]) -> Result<JsonStyle, Error> {
    let (ensure_ascii, indent, separators, sort_keys, kwargs): (
        Option<Value>,
        Option<Value>,
        Option<Value>,
        Option<Value>,
        Kwargs,
    ) = from_args(args)?;
    let ensure_ascii = argument(ensure_ascii, &kwargs, "ensure_ascii")?;
    let indent = argument(indent, &kwargs, "indent")?;
    let separators = argument(separators, &kwargs, "separators")?;
    let sort_keys = argument(sort_keys, &kwargs, "sort_keys")?;
    kwargs.assert_all_used()?;

    let indent = indent.map(|v| indent_unit(&v)).transpose()?;
    let (item_separator, key_separator) = match separators {
        Some(v) => separator_pair(&v)?,
        None if indent.is_some() => (",".into(), ": ".into()),
        None => (", ".into(), ": ".into()),
    };
    Ok(JsonStyle {
        ensure_ascii: ensure_ascii.is_some_and(|v| v.is_true()),
        indent,
        item_separator,
        key_separator,
        sort_keys: sort_keys.is_some_and(|v| v.is_true()),
    })
}

/// One argument given by position or by name (not both); none and undefined count as not given.
fn argument(positional: Option<Value>, kwargs: &Kwargs, name: &str) -> Result<Option<Value>, Error> {
    let named: Option<Value> = kwargs.get(name)?;
    if positional.is_some() && named.is_some() {
        return Err(Error::new(ErrorKind::TooManyArguments, format!("tojson() got multiple values for '{name}'")));
    }
    Ok(positional.or(named).filter(|v| !v.is_none() && !v.is_undefined()))
}

/// Python: `' ' * indent` for an integer (booleans are integers), the string itself for a string.
fn indent_unit(value: &Value) -> Result<String, Error> {
    match value.kind() {
        ValueKind::String => Ok(value.as_str().unwrap_or_default().to_string()),
        ValueKind::Bool => Ok(if value.is_true() { " " } else { "" }.to_string()),
        ValueKind::Number if value.is_integer() => {
            let n = i64::try_from(value.clone()).unwrap_or(i64::MAX);
            if n > 1024 {
                return Err(Error::new(ErrorKind::InvalidOperation, format!("tojson indent {n} is too large")));
            }
            Ok(" ".repeat(n.max(0) as usize))
        }
        _ => {
            Err(Error::new(ErrorKind::InvalidOperation, format!("tojson indent must be an int or a str, not {value}")))
        }
    }
}

fn separator_pair(value: &Value) -> Result<(String, String), Error> {
    let bad = || Error::new(ErrorKind::InvalidOperation, "tojson separators must be a pair of strings");
    let items: Vec<Value> = value.try_iter().map_err(|_| bad())?.collect();
    match items.as_slice() {
        [item, key] => match (item.as_str(), key.as_str()) {
            (Some(item), Some(key)) => Ok((item.to_string(), key.to_string())),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// `json.dumps(value, ...)` with the given style.
pub(crate) fn to_json(value: &Value, style: &JsonStyle) -> Result<String, Error> {
    let mut writer = JsonWriter { style, out: String::new() };
    writer.value(value, 0)?;
    Ok(writer.out)
}

struct JsonWriter<'a> {
    style: &'a JsonStyle,
    out: String,
}

impl JsonWriter<'_> {
    fn value(&mut self, value: &Value, depth: usize) -> Result<(), Error> {
        if depth > MAX_DEPTH {
            return Err(Error::new(ErrorKind::InvalidOperation, "tojson: value nested too deeply"));
        }
        match value.kind() {
            ValueKind::None => self.out.push_str("null"),
            ValueKind::Bool => self.out.push_str(if value.is_true() { "true" } else { "false" }),
            ValueKind::Number => self.out.push_str(&json_number(value)),
            ValueKind::String => self.string(value.as_str().unwrap_or_default()),
            ValueKind::Seq | ValueKind::Iterable => self.seq(value, depth)?,
            ValueKind::Map => self.map(value, depth)?,
            _ => return Err(not_serializable(value)),
        }
        Ok(())
    }

    /// The line break and indentation before an item at `depth` (nothing when not indenting).
    fn newline(&mut self, depth: usize) {
        if let Some(unit) = &self.style.indent {
            self.out.push('\n');
            for _ in 0..depth {
                self.out.push_str(unit);
            }
        }
    }

    fn seq(&mut self, value: &Value, depth: usize) -> Result<(), Error> {
        let items: Vec<Value> = value.try_iter()?.collect();
        if items.is_empty() {
            self.out.push_str("[]");
            return Ok(());
        }
        self.out.push('[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.out.push_str(&self.style.item_separator);
            }
            self.newline(depth + 1);
            self.value(item, depth + 1)?;
        }
        self.newline(depth);
        self.out.push(']');
        Ok(())
    }

    fn map(&mut self, value: &Value, depth: usize) -> Result<(), Error> {
        let mut keys: Vec<Value> = value.try_iter()?.collect();
        if keys.is_empty() {
            self.out.push_str("{}");
            return Ok(());
        }
        if self.style.sort_keys {
            sort_keys(&mut keys)?;
        }
        self.out.push('{');
        for (i, key) in keys.iter().enumerate() {
            if i > 0 {
                self.out.push_str(&self.style.item_separator);
            }
            self.newline(depth + 1);
            self.string(&key_text(key)?);
            self.out.push_str(&self.style.key_separator);
            self.value(&value.get_item(key)?, depth + 1)?;
        }
        self.newline(depth);
        self.out.push('}');
        Ok(())
    }

    /// A JSON string as Python's `encode_basestring` (or `encode_basestring_ascii`) writes it.
    fn string(&mut self, s: &str) {
        self.out.push('"');
        for c in s.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                '\r' => self.out.push_str("\\r"),
                '\t' => self.out.push_str("\\t"),
                '\u{8}' => self.out.push_str("\\b"),
                '\u{c}' => self.out.push_str("\\f"),
                c if c < ' ' => self.unicode_escape(c),
                c if self.style.ensure_ascii && c > '~' => self.unicode_escape(c),
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }

    /// `\uXXXX`, lowercase hex; a surrogate pair above U+FFFF.
    fn unicode_escape(&mut self, c: char) {
        let mut units = [0u16; 2];
        for unit in c.encode_utf16(&mut units) {
            // Writing to a String cannot fail.
            let _ = write!(self.out, "\\u{unit:04x}");
        }
    }
}

/// A number as Python's JSON encoder writes it: integers exact, floats as `repr`, `NaN` / `Infinity`.
fn json_number(value: &Value) -> String {
    if value.is_integer() {
        return value.to_string();
    }
    match f64::try_from(value.clone()) {
        Ok(f) if f.is_nan() => "NaN".into(),
        Ok(f) if f.is_infinite() => if f > 0.0 { "Infinity" } else { "-Infinity" }.into(),
        Ok(f) => py_float_repr(f),
        Err(_) => value.to_string(),
    }
}

/// A dict key as Python's encoder turns it into a string.
fn key_text(key: &Value) -> Result<String, Error> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or_default().to_string()),
        ValueKind::Number => Ok(json_number(key)),
        ValueKind::Bool => Ok(if key.is_true() { "true" } else { "false" }.into()),
        ValueKind::None => Ok("null".into()),
        _ => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("tojson: keys must be str, int, float, bool or None, not {}", key.kind()),
        )),
    }
}

/// Python's `sorted(dict.items())`: keys of one kind (all strings, or all numbers and booleans); a mix is an error.
fn sort_keys(keys: &mut [Value]) -> Result<(), Error> {
    if keys.iter().all(|k| k.kind() == ValueKind::String) {
        keys.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
        return Ok(());
    }
    if keys.iter().all(|k| matches!(k.kind(), ValueKind::Number | ValueKind::Bool)) {
        let number = |v: &Value| f64::try_from(v.clone()).unwrap_or(if v.is_true() { 1.0 } else { 0.0 });
        keys.sort_by(|a, b| number(a).partial_cmp(&number(b)).unwrap_or(Ordering::Equal));
        return Ok(());
    }
    Err(Error::new(ErrorKind::InvalidOperation, "tojson: sort_keys cannot order keys of different types"))
}

fn not_serializable(value: &Value) -> Error {
    let kind = match value.kind() {
        ValueKind::Undefined => "Undefined".to_string(),
        other => other.to_string(),
    };
    Error::new(ErrorKind::InvalidOperation, format!("tojson: object of type {kind} is not JSON serializable"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dumps(json: serde_json::Value, style: &JsonStyle) -> String {
        to_json(&Value::from(minijinja::value::Serde(json)), style).unwrap()
    }

    #[test]
    fn default_style_is_python_json_dumps() {
        let v = serde_json::json!({"name": "f", "args": {"x": [1, 2.0, "a<b>&'c\"\\", null, true]}, "e": [], "o": {}});
        assert_eq!(
            dumps(v, &JsonStyle::default()),
            r#"{"name": "f", "args": {"x": [1, 2.0, "a<b>&'c\"\\", null, true]}, "e": [], "o": {}}"#
        );
    }

    #[test]
    fn escapes_match_python() {
        let v = serde_json::json!("é中😀\u{7f}\u{1}\u{8}\u{c}\n\r\t");
        assert_eq!(dumps(v.clone(), &JsonStyle::default()), "\"é中😀\u{7f}\\u0001\\b\\f\\n\\r\\t\"");
        let ascii = JsonStyle { ensure_ascii: true, ..JsonStyle::default() };
        assert_eq!(dumps(v, &ascii), r#""\u00e9\u4e2d\ud83d\ude00\u007f\u0001\b\f\n\r\t""#);
    }

    #[test]
    fn indent_puts_items_on_lines() {
        let style = JsonStyle { indent: Some("  ".into()), item_separator: ",".into(), ..JsonStyle::default() };
        let v = serde_json::json!({"a": [1, {"b": null}], "c": [], "d": {}});
        assert_eq!(
            dumps(v, &style),
            "{\n  \"a\": [\n    1,\n    {\n      \"b\": null\n    }\n  ],\n  \"c\": [],\n  \"d\": {}\n}"
        );
    }

    #[test]
    fn filter_arguments_follow_hf_signature() {
        let env = {
            let mut env = minijinja::Environment::new();
            env.add_filter("tojson", tojson_filter);
            env
        };
        let render = |src: &str| {
            env.render_str(src, minijinja::context! { x => Value::from(minijinja::value::Serde(serde_json::json!({"b": 1, "a": "é"}))) })
        };
        assert_eq!(render("{{ x|tojson }}").unwrap(), r#"{"b": 1, "a": "é"}"#);
        assert_eq!(render("{{ x|tojson(sort_keys=true) }}").unwrap(), r#"{"a": "é", "b": 1}"#);
        assert_eq!(render("{{ x|tojson(true) }}").unwrap(), r#"{"b": 1, "a": "\u00e9"}"#);
        assert_eq!(render("{{ x|tojson(indent=2) }}").unwrap(), "{\n  \"b\": 1,\n  \"a\": \"é\"\n}");
        assert_eq!(render("{{ x|tojson(indent=0) }}").unwrap(), "{\n\"b\": 1,\n\"a\": \"é\"\n}");
        assert_eq!(render("{{ x|tojson(separators=(',', ':')) }}").unwrap(), r#"{"b":1,"a":"é"}"#);
        assert_eq!(render("{{ x|tojson(false, '\t') }}").unwrap(), "{\n\t\"b\": 1,\n\t\"a\": \"é\"\n}");
        assert!(render("{{ nothing|tojson }}").is_err());
        assert!(render("{{ x|tojson(bogus=1) }}").is_err());
        assert!(render("{{ x|tojson(true, ensure_ascii=true) }}").is_err());
    }
}
