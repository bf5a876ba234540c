//! Tool input schemas → the OpenAPI 3.0 subset Gemini accepts in
//! `functionDeclarations[].parameters`.
//!
//! Gemini rejects a request whose schemas hold JSON Schema keywords it does not know
//! (`$schema`, `additionalProperties`, `$ref`, ...), type arrays, unsupported formats, and
//! `object`s without properties. The normaliser keeps a whitelist and rewrites the rest:
//!
//! | JSON Schema | Gemini |
//! | --- | --- |
//! | `type: ["string", "null"]` | `type: "string", nullable: true` |
//! | `type: ["string", "number"]` | `anyOf: [{type: "string"}, {type: "number"}]` |
//! | `anyOf`/`oneOf` with a `{type: "null"}` branch | `nullable: true`, the one other branch inlined |
//! | `oneOf` | `anyOf` |
//! | `allOf` | its branches merged (properties and `required` united) |
//! | `$ref` to `#/...` (`$defs`, `definitions`) | the target inlined (depth-limited) |
//! | `const: x` | `enum: [x]` |
//! | `enum` with non-string values | dropped (Gemini enums are strings) |
//! | `format` other than `enum` / `date-time` | dropped |
//! | an `object` without properties | dropped (the root: no `parameters` at all) |
//! | `required` naming a dropped property | the name is dropped |
//! | `$schema`, `$id`, `additionalProperties`, `default`, `examples`, `pattern`, ... | dropped |

use std::cell::Cell;

use serde_json::{Map, Value, json};

/// How deep nesting is followed before a subschema is dropped.
const MAX_DEPTH: usize = 32;

/// How many `$ref`s are inlined along one path before a subschema is dropped (bounds the
/// expansion of recursive references).
const MAX_REFS: usize = 3;

/// How many subschemas one normalisation visits at most; past that, the rest are dropped
/// (bounds the expansion of repeated references in a hostile schema).
const MAX_NODES: usize = 10_000;

/// Numeric constraints Gemini understands, copied when they are numbers.
const NUMERIC: [&str; 8] = [
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
];

/// `schema` in the form Gemini accepts, or `None` when nothing is left to send (an object
/// schema without properties, `false`): the caller then omits `parameters`.
pub fn normalize_schema(schema: &Value) -> Option<Value> {
    let cx = Context {
        root: schema,
        budget: Cell::new(MAX_NODES),
    };
    convert(schema, &cx, Level::default())
}

/// What every step of one normalisation shares.
struct Context<'a> {
    /// The whole schema, which `$ref`s point into.
    root: &'a Value,
    /// Subschemas still allowed to be visited.
    budget: Cell<usize>,
}

impl Context<'_> {
    /// Count one visit; `false` once the budget is spent.
    fn visit(&self) -> bool {
        let left = self.budget.get();
        self.budget.set(left.saturating_sub(1));
        left > 0
    }
}

/// Where a subschema sits: how deep, and behind how many inlined `$ref`s.
#[derive(Debug, Clone, Copy, Default)]
struct Level {
    depth: usize,
    refs: usize,
}

impl Level {
    fn deeper(self) -> Level {
        Level {
            depth: self.depth + 1,
            ..self
        }
    }
}

fn convert(node: &Value, cx: &Context<'_>, level: Level) -> Option<Value> {
    if level.depth > MAX_DEPTH || !cx.visit() {
        return None;
    }
    let node = match node {
        Value::Bool(true) => return Some(json!({})),
        Value::Object(map) => map,
        _ => return None,
    };
    // Children count the `$ref`s inlined into this node.
    let (merged, level) = flatten(node, cx, level)?;
    let mut out = Map::new();
    for key in ["title", "description"] {
        if let Some(Value::String(s)) = merged.get(key) {
            out.insert(key.into(), json!(s));
        }
    }
    let mut nullable = merged.get("nullable") == Some(&Value::Bool(true));
    match merged.get("type") {
        Some(Value::String(t)) => {
            out.insert("type".into(), json!(t));
        }
        Some(Value::Array(types)) => {
            let named: Vec<&str> = types.iter().filter_map(Value::as_str).collect();
            let concrete: Vec<&str> = named.iter().copied().filter(|t| *t != "null").collect();
            nullable |= concrete.len() < named.len();
            match concrete.as_slice() {
                [] if !named.is_empty() => {
                    out.insert("type".into(), json!("null"));
                }
                [] => {}
                [one] => {
                    out.insert("type".into(), json!(one));
                }
                many => {
                    let branches = many.iter().map(|t| json!({"type": t})).collect();
                    out.insert("anyOf".into(), Value::Array(branches));
                }
            }
        }
        _ => {}
    }
    if let Some(Value::String(f)) = merged.get("format")
        && matches!(f.as_str(), "enum" | "date-time")
    {
        out.insert("format".into(), json!(f));
    }
    let values = match (merged.get("const"), merged.get("enum")) {
        (Some(c), _) => Some(vec![c.clone()]),
        (None, Some(Value::Array(values))) => Some(values.clone()),
        _ => None,
    };
    if let Some(values) = values {
        nullable |= values.iter().any(Value::is_null);
        let values: Vec<Value> = values.into_iter().filter(|v| !v.is_null()).collect();
        if !values.is_empty() && values.iter().all(Value::is_string) {
            out.insert("enum".into(), Value::Array(values));
        }
    }
    for key in NUMERIC {
        if let Some(n @ Value::Number(_)) = merged.get(key) {
            out.insert(key.into(), n.clone());
        }
    }
    if let Some(Value::Object(props)) = merged.get("properties") {
        let props: Map<String, Value> = props
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), convert(v, cx, level.deeper())?)))
            .collect();
        if let Some(Value::Array(required)) = merged.get("required") {
            let required: Vec<Value> = required
                .iter()
                .filter(|r| r.as_str().is_some_and(|r| props.contains_key(r)))
                .cloned()
                .collect();
            if !required.is_empty() {
                out.insert("required".into(), Value::Array(required));
            }
        }
        if !props.is_empty() {
            out.insert("properties".into(), Value::Object(props));
        }
    }
    let items = match merged.get("items") {
        Some(Value::Array(tuple)) => tuple.first(),
        other => other,
    };
    if let Some(items) = items.and_then(|i| convert(i, cx, level.deeper())) {
        out.insert("items".into(), items);
    }
    let branches = ["anyOf", "oneOf"]
        .iter()
        .filter_map(|k| merged.get(*k).and_then(Value::as_array))
        .flatten();
    let mut kept = Vec::new();
    for b in branches.filter_map(|b| convert(b, cx, level.deeper())) {
        if b.get("type").and_then(Value::as_str) == Some("null") {
            nullable = true;
        } else {
            kept.push(b);
        }
    }
    match kept.len() {
        0 => {}
        1 => {
            if let Some(Value::Object(only)) = kept.pop() {
                for (k, v) in only {
                    out.entry(k).or_insert(v);
                }
            }
        }
        _ => {
            out.insert("anyOf".into(), Value::Array(kept));
        }
    }
    if nullable {
        out.insert("nullable".into(), Value::Bool(true));
    }
    let is_object = out.get("type").and_then(Value::as_str) == Some("object");
    if is_object && !out.contains_key("properties") {
        return None;
    }
    Some(Value::Object(out))
}

/// `node` with its `$ref` inlined and its `allOf` branches merged into it, and the level its
/// children are at: as deep and behind as many `$ref`s as the deepest part merged.
fn flatten(
    node: &Map<String, Value>,
    cx: &Context<'_>,
    level: Level,
) -> Option<(Map<String, Value>, Level)> {
    if level.depth > MAX_DEPTH || !cx.visit() {
        return None;
    }
    let mut merged = node.clone();
    let mut reached = level;
    let mut absorb = |merged: &mut Map<String, Value>, (part, at): (Map<String, Value>, Level)| {
        merge_into(merged, part);
        reached.depth = reached.depth.max(at.depth);
        reached.refs = reached.refs.max(at.refs);
    };
    if let Some(Value::String(r)) = merged.remove("$ref") {
        if level.refs >= MAX_REFS {
            return None;
        }
        if let Some(Value::Object(target)) = pointer(cx.root, &r) {
            let inner = Level {
                depth: level.depth + 1,
                refs: level.refs + 1,
            };
            absorb(&mut merged, flatten(target, cx, inner)?);
        }
    }
    if let Some(Value::Array(all)) = merged.remove("allOf") {
        for branch in all {
            if let Value::Object(b) = branch {
                absorb(&mut merged, flatten(&b, cx, level.deeper())?);
            }
        }
    }
    Some((merged, reached))
}

/// `other`'s keys into `into`: `properties` and `required` united, other keys kept when
/// `into` has none.
fn merge_into(into: &mut Map<String, Value>, other: Map<String, Value>) {
    for (k, v) in other {
        match (k.as_str(), into.get_mut(&k), v) {
            ("properties", Some(Value::Object(mine)), Value::Object(theirs)) => {
                for (pk, pv) in theirs {
                    mine.entry(pk).or_insert(pv);
                }
            }
            ("required", Some(Value::Array(mine)), Value::Array(theirs)) => {
                for r in theirs {
                    if !mine.contains(&r) {
                        mine.push(r);
                    }
                }
            }
            (_, Some(_), _) => {}
            (_, None, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// The subschema a local reference (`#`, `#/$defs/x`, `#/properties/a`) points at.
fn pointer<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let path = reference.strip_prefix('#')?;
    if path.is_empty() {
        return Some(root);
    }
    root.pointer(path)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn unsupported_keywords_are_dropped_and_type_arrays_rewritten() {
        let schema = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "path": {"type": "string", "description": "A path", "format": "uri"},
                "when": {"type": "string", "format": "date-time"},
                "limit": {"type": ["integer", "null"], "minimum": 1, "default": 10},
                "either": {"type": ["string", "number"]},
                "mode": {"const": "fast"},
                "level": {"enum": [1, 2]},
                "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": true},
                "meta": {"type": "object", "additionalProperties": {"type": "string"}}
            },
            "required": ["path", "meta"]
        });
        assert_eq!(
            normalize_schema(&schema).unwrap(),
            json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "A path"},
                    "when": {"type": "string", "format": "date-time"},
                    "limit": {"type": "integer", "nullable": true, "minimum": 1},
                    "either": {"anyOf": [{"type": "string"}, {"type": "number"}]},
                    "mode": {"enum": ["fast"]},
                    "level": {},
                    "tags": {"type": "array", "items": {"type": "string"}}
                },
                "required": ["path"]
            })
        );
    }

    #[test]
    fn refs_all_of_and_nullable_unions_are_inlined() {
        let schema = json!({
            "type": "object",
            "$defs": {"Pt": {"type": "object", "properties": {"x": {"type": "number"}},
                             "required": ["x"]}},
            "properties": {
                "a": {"$ref": "#/$defs/Pt"},
                "b": {"anyOf": [{"$ref": "#/$defs/Pt"}, {"type": "null"}]},
                "c": {"allOf": [{"$ref": "#/$defs/Pt"},
                                {"properties": {"y": {"type": "number"}}, "required": ["y"]}]},
                "d": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
                "self": {"$ref": "#"}
            }
        });
        let pt = json!({"type": "object", "properties": {"x": {"type": "number"}},
                        "required": ["x"]});
        let got = normalize_schema(&schema).unwrap();
        assert_eq!(got["properties"]["a"], pt);
        let mut nullable_pt = pt;
        nullable_pt["nullable"] = json!(true);
        assert_eq!(got["properties"]["b"], nullable_pt);
        assert_eq!(
            got["properties"]["c"],
            json!({"type": "object", "required": ["x", "y"],
                   "properties": {"x": {"type": "number"}, "y": {"type": "number"}}})
        );
        assert_eq!(
            got["properties"]["d"],
            json!({"anyOf": [{"type": "string"}, {"type": "integer"}]})
        );
        // A recursive reference is followed a bounded number of times, then dropped.
        assert_eq!(got["properties"]["self"]["type"], "object");
        assert!(got.get("$defs").is_none());
    }

    #[test]
    fn empty_object_schemas_normalise_to_nothing() {
        for empty in [
            json!({"type": "object"}),
            json!({"type": "object", "properties": {}, "additionalProperties": false}),
            json!({"type": "object", "properties": {"x": {"type": "object"}}}),
            json!(false),
            json!("string"),
        ] {
            assert_eq!(normalize_schema(&empty), None, "{empty}");
        }
        assert_eq!(normalize_schema(&json!(true)), Some(json!({})));
    }

    #[test]
    fn repeated_references_are_expanded_a_bounded_number_of_times() {
        let wide: Map<String, Value> = (0..40)
            .map(|i| (format!("p{i}"), json!({"$ref": "#"})))
            .chain([("leaf".to_string(), json!({"type": "string"}))])
            .collect();
        let schema = json!({"type": "object", "properties": wide});
        let started = std::time::Instant::now();
        let got = normalize_schema(&schema).unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(got["properties"]["leaf"], json!({"type": "string"}));
        assert_eq!(
            got["properties"]["p0"]["properties"]["leaf"]["type"],
            "string"
        );
    }

    fn arb_schema() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(json!({"type": "string"})),
            Just(json!({"type": ["string", "null"], "format": "email"})),
            Just(json!({"type": "integer", "minimum": 0, "exclusiveMaximum": 9})),
            Just(json!({"enum": ["a", null]})),
            Just(json!({"const": 3})),
            Just(json!({"type": "object", "additionalProperties": true})),
            Just(json!({"$ref": "#/$defs/missing"})),
            Just(json!({"$ref": "#"})),
            Just(json!(true)),
            Just(json!({})),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::btree_map("[a-c]", inner.clone(), 0..4).prop_map(|props| {
                    let required: Vec<_> = props.keys().cloned().chain(["zz".into()]).collect();
                    json!({"type": "object", "$schema": "x", "additionalProperties": false,
                           "properties": props, "required": required})
                }),
                inner
                    .clone()
                    .prop_map(|i| json!({"type": ["array", "null"], "items": i})),
                prop::collection::vec(inner.clone(), 1..3).prop_map(
                    |v| json!({"anyOf": v.into_iter().chain([json!({"type": "null"})])
                        .collect::<Vec<_>>()})
                ),
                prop::collection::vec(inner.clone(), 1..3).prop_map(|v| json!({"oneOf": v})),
                prop::collection::vec(inner, 1..3).prop_map(|v| json!({"allOf": v})),
            ]
        })
    }

    /// Every node Gemini would see: only whitelisted keys, string types, supported formats,
    /// non-empty object properties, and `required` ⊆ `properties`.
    fn assert_gemini_shape(v: &Value) {
        let Value::Object(m) = v else {
            panic!("not a schema object: {v}");
        };
        let allowed = [
            "type",
            "format",
            "title",
            "description",
            "nullable",
            "enum",
            "properties",
            "required",
            "items",
            "anyOf",
        ];
        for k in m.keys() {
            assert!(
                allowed.contains(&k.as_str()) || NUMERIC.contains(&k.as_str()),
                "{k} in {v}"
            );
        }
        if let Some(t) = m.get("type") {
            assert!(t.is_string(), "{v}");
        }
        if let Some(f) = m.get("format") {
            assert!(f == "enum" || f == "date-time", "{v}");
        }
        if m.get("type") == Some(&json!("object")) {
            assert!(
                m.get("properties")
                    .and_then(Value::as_object)
                    .is_some_and(|p| !p.is_empty())
            );
        }
        if let Some(Value::Array(req)) = m.get("required") {
            let props = m.get("properties").and_then(Value::as_object);
            for r in req {
                let name = r.as_str().unwrap_or_default();
                assert!(props.is_some_and(|p| p.contains_key(name)), "{r} in {v}");
            }
        }
        for p in m
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            assert_gemini_shape(p.1);
        }
        for i in m.get("items").into_iter().chain(
            m.get("anyOf")
                .and_then(Value::as_array)
                .into_iter()
                .flatten(),
        ) {
            assert_gemini_shape(i);
        }
    }

    proptest! {
        #[test]
        fn normalised_schemas_have_gemini_shape_and_normalising_is_idempotent(s in arb_schema()) {
            if let Some(n) = normalize_schema(&s) {
                assert_gemini_shape(&n);
                let again = normalize_schema(&n);
                prop_assert_eq!(again, Some(n));
            }
        }
    }
}
