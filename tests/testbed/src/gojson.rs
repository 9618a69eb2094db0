//! The bytes Go's `encoding/json` writes for a JSON leaf, a scanner that keeps the raw bytes a client sent, and
//! Go's `%q` / `strconv.Atoi` texts. kube-apiserver applies JSON patches to the object as Go serialised it, and
//! evanphx/json-patch compares leaves as raw bytes, so these bytes are what a `test` operation is checked against.

use serde_json::Value;

/// Go `encoding/json` (HTML escaping on, as `json.Marshal` and the apiserver's serializer use it) for a scalar.
/// Objects and arrays are never passed here (the patch engine walks them itself).
pub fn encode_leaf(v: &Value) -> Vec<u8> {
    match v {
        Value::Null => b"null".to_vec(),
        Value::Bool(b) => (if *b { "true" } else { "false" }).as_bytes().to_vec(),
        Value::Number(n) => encode_number(n).into_bytes(),
        Value::String(s) => encode_string(s),
        other => serde_json::to_vec(other).unwrap_or_default(),
    }
}

/// A whole value as Go's `json.Marshal` writes it from a `map[string]interface{}`: compact, keys sorted,
/// leaves as `encode_leaf`.
pub fn encode_value(v: &Value) -> String {
    let mut out = Vec::new();
    write_value(v, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

fn write_value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&encode_string(k));
                out.push(b':');
                write_value(&m[*k], out);
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, it) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(it, out);
            }
            out.push(b']');
        }
        leaf => out.extend_from_slice(&encode_leaf(leaf)),
    }
}

fn encode_number(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    encode_float(n.as_f64().unwrap_or(0.0))
}

/// Go's float64 encoding: shortest round-trip digits, `%f` style between 1e-6 and 1e21, else `1e+21` / `1e-7`.
pub fn encode_float(f: f64) -> String {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((mant, exp)) if exp.starts_with('-') => format!("{mant}e{exp}"),
            Some((mant, exp)) => format!("{mant}e+{exp}"),
            None => s,
        }
    } else {
        format!("{f}")
    }
}

/// A Go-encoded JSON string: `<`, `>`, `&`, U+2028 and U+2029 escaped as `\u003c`…, `\b` `\f` `\n` `\r` `\t`
/// short escapes, other control bytes as `\u00XX` (lower-case hex).
pub fn encode_string(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 2);
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
            }
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
    out
}

/// What `json.Marshal` does to already-encoded JSON (a `json.RawMessage`): HTML characters inside strings are
/// escaped, everything else is kept byte for byte.
pub fn html_escape_raw(raw: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(raw);
    let mut out = Vec::with_capacity(raw.len());
    for c in text.chars() {
        match c {
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out
}

/// A JSON value as the client wrote it: containers parsed, leaves kept as their (compact) raw bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Raw {
    Null,
    Leaf(Vec<u8>),
    Array(Vec<Raw>),
    /// Members in order; a repeated key keeps its last value (as Go's decoder does).
    Object(Vec<(String, Raw)>),
}

impl Raw {
    /// Parses JSON that is already known to be valid (checked with serde_json first).
    pub fn parse(bytes: &[u8]) -> Option<Raw> {
        let mut s = Scanner { b: bytes, i: 0 };
        let v = s.value()?;
        s.ws();
        (s.i == bytes.len()).then_some(v)
    }

    pub fn get(&self, key: &str) -> Option<&Raw> {
        match self {
            Raw::Object(m) => m.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn value(&mut self) -> Option<Raw> {
        self.ws();
        match *self.b.get(self.i)? {
            b'{' => {
                self.i += 1;
                let mut members = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Some(Raw::Object(members));
                }
                loop {
                    self.ws();
                    let start = self.i;
                    self.string()?;
                    let key: String = serde_json::from_slice(&self.b[start..self.i]).ok()?;
                    self.ws();
                    if self.b.get(self.i) != Some(&b':') {
                        return None;
                    }
                    self.i += 1;
                    let v = self.value()?;
                    members.retain(|(k, _): &(String, Raw)| *k != key);
                    members.push((key, v));
                    self.ws();
                    match self.b.get(self.i)? {
                        b',' => self.i += 1,
                        b'}' => {
                            self.i += 1;
                            return Some(Raw::Object(members));
                        }
                        _ => return None,
                    }
                }
            }
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Some(Raw::Array(items));
                }
                loop {
                    items.push(self.value()?);
                    self.ws();
                    match self.b.get(self.i)? {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            return Some(Raw::Array(items));
                        }
                        _ => return None,
                    }
                }
            }
            b'"' => {
                let start = self.i;
                self.string()?;
                Some(Raw::Leaf(self.b[start..self.i].to_vec()))
            }
            _ => {
                let start = self.i;
                while self.i < self.b.len()
                    && !matches!(
                        self.b[self.i],
                        b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'
                    )
                {
                    self.i += 1;
                }
                let lit = &self.b[start..self.i];
                if lit == b"null" {
                    Some(Raw::Null)
                } else if lit.is_empty() {
                    None
                } else {
                    Some(Raw::Leaf(lit.to_vec()))
                }
            }
        }
    }

    fn string(&mut self) -> Option<()> {
        if self.b.get(self.i) != Some(&b'"') {
            return None;
        }
        self.i += 1;
        while self.i < self.b.len() {
            match self.b[self.i] {
                b'\\' => self.i += 2,
                b'"' => {
                    self.i += 1;
                    return Some(());
                }
                _ => self.i += 1,
            }
        }
        None
    }
}

/// Go's `strconv.Quote` for the strings we quote (field values in messages).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `strconv.Atoi` (optional sign, decimal digits), with its error texts.
pub fn atoi(s: &str) -> Result<i64, String> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "strconv.Atoi: parsing {}: invalid syntax",
            quote(s)
        ));
    }
    s.trim_start_matches('+')
        .parse::<i64>()
        .map_err(|_| format!("strconv.Atoi: parsing {}: value out of range", quote(s)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn leaves_encode_like_go() {
        assert_eq!(
            encode_leaf(&json!("a&&b<c>")),
            br#""a\u0026\u0026b\u003cc\u003e""#
        );
        assert_eq!(encode_leaf(&json!("10.0.0.1")), br#""10.0.0.1""#);
        assert_eq!(
            encode_leaf(&json!("l\u{2028}\u{8}\u{1}")),
            br#""l\u2028\b\u0001""#
        );
        assert_eq!(encode_leaf(&json!(1.0)), b"1");
        assert_eq!(encode_leaf(&json!(1.5)), b"1.5");
        assert_eq!(encode_leaf(&json!(1e21)), b"1e+21");
        assert_eq!(encode_leaf(&json!(1.5e-7)), b"1.5e-7");
        assert_eq!(encode_leaf(&json!(0.000001)), b"0.000001");
        assert_eq!(encode_leaf(&json!(-7)), b"-7");
    }

    #[test]
    fn raw_scanner_keeps_leaf_bytes() {
        let r = Raw::parse(br#" {"a": [1.0, "x\u0026y", null, {}], "a": true, "b" : {"c":1e2}} "#)
            .unwrap();
        assert_eq!(r.get("a"), Some(&Raw::Leaf(b"true".to_vec())));
        assert_eq!(
            r.get("b").and_then(|b| b.get("c")),
            Some(&Raw::Leaf(b"1e2".to_vec()))
        );
        let arr = Raw::parse(br#"[1.0, "x\u0026y", null]"#).unwrap();
        assert_eq!(
            arr,
            Raw::Array(vec![
                Raw::Leaf(b"1.0".to_vec()),
                Raw::Leaf(br#""x\u0026y""#.to_vec()),
                Raw::Null
            ])
        );
    }

    #[test]
    fn atoi_texts() {
        assert_eq!(atoi("-1"), Ok(-1));
        assert_eq!(atoi("+2"), Ok(2));
        assert_eq!(
            atoi("x").unwrap_err(),
            "strconv.Atoi: parsing \"x\": invalid syntax"
        );
    }
}
