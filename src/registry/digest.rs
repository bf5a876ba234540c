//! The digest a pin records: SHA-256 over the RFC 8785 (JCS) canonical JSON of an Expert's
//! definition only (key, name, version, minRuntimeVersion, description, instruction, skills,
//! delegates), not its status, tags, dates or owner, which legitimately change.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The definition fields the digest covers, as the registry names them.
pub(crate) const DEFINITION_FIELDS: [&str; 8] = [
    "key",
    "name",
    "version",
    "minRuntimeVersion",
    "description",
    "instruction",
    "skills",
    "delegates",
];

/// `sha256:<hex>` of the canonical definition of `expert` (a registry answer's `expert`
/// object). Fields it lacks are left out.
pub(crate) fn definition_digest(expert: &Map<String, Value>) -> String {
    let definition: Map<String, Value> = DEFINITION_FIELDS
        .iter()
        .filter_map(|f| expert.get(*f).map(|v| ((*f).to_owned(), v.clone())))
        .collect();
    let mut text = String::new();
    canonical(&Value::Object(definition), &mut text);
    format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
}

/// RFC 8785: no whitespace, object members sorted by the UTF-16 code units of their names,
/// strings escaped as ECMAScript's `JSON.stringify` does (which `serde_json` matches), numbers
/// in ECMAScript's shortest form.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut members: Vec<(&String, &Value)> = m.iter().collect();
            members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push('{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                string(k, out);
                out.push(':');
                canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(v, out);
            }
            out.push(']');
        }
        Value::String(s) => string(s, out),
        Value::Number(n) => out.push_str(&number(n)),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Null => out.push_str("null"),
    }
}

fn string(s: &str, out: &mut String) {
    // serde_json escapes exactly `"`, `\` and the C0 controls, with the short forms for
    // \b \t \n \f \r and lowercase \u00xx otherwise: JCS's rule.
    out.push_str(&Value::String(s.to_owned()).to_string());
}

/// ECMAScript's Number-to-String for the values JSON carries: integers as digits, others in
/// the shortest round-tripping form, with an exponent from 1e21 up and below 1e-6.
fn number(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    let f = n.as_f64().unwrap_or(0.0);
    if f == 0.0 {
        return "0".into();
    }
    if f.fract() == 0.0 && f.abs() < 1e21 {
        return format!("{f:.0}");
    }
    let abs = f.abs();
    if (1e-6..1e21).contains(&abs) {
        return format!("{f}");
    }
    // `{:e}` gives `1.5e21` / `1e-7`; ECMAScript writes `1.5e+21` / `1e-7`.
    let e = format!("{f:e}");
    match e.split_once('e') {
        Some((m, exp)) if !exp.starts_with('-') => format!("{m}e+{exp}"),
        _ => e,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn canon(v: Value) -> String {
        let mut s = String::new();
        canonical(&v, &mut s);
        s
    }

    #[test]
    fn canonical_json_follows_rfc_8785() {
        assert_eq!(
            canon(json!({"b": [1, "x\n\u{1f}é", true, null], "a": {"z": 1.5, "\u{e9}": 1e30}})),
            "{\"a\":{\"z\":1.5,\"é\":1e+30},\"b\":[1,\"x\\n\\u001fé\",true,null]}"
        );
        assert_eq!(canon(json!(1e-7)), "1e-7");
        assert_eq!(canon(json!(100.0)), "100");
        // UTF-16 order: U+FB01 (one unit) sorts after U+1F600 (a surrogate pair, 0xD83D...).
        assert_eq!(
            canon(json!({"\u{fb01}": 1, "\u{1f600}": 2})),
            "{\"\u{1f600}\":2,\"\u{fb01}\":1}"
        );
    }

    #[test]
    fn the_digest_covers_the_definition_only() {
        let a = json!({"key": "@o/x@1.0.0", "name": "@o/x", "version": "1.0.0",
            "instruction": "i", "skills": {}, "delegates": [], "status": "available",
            "tags": ["latest"], "updatedAt": "2026-01-01"});
        let mut b = a.clone();
        b["status"] = json!("deprecated");
        b["tags"] = json!([]);
        b["updatedAt"] = json!("2027-01-01");
        let d = |v: &Value| definition_digest(v.as_object().unwrap());
        assert_eq!(d(&a), d(&b));
        assert!(d(&a).starts_with("sha256:") && d(&a).len() == 7 + 64);
        b["instruction"] = json!("j");
        assert_ne!(d(&a), d(&b));
    }
}
