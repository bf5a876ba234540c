use serde_json::json;

use super::*;

fn step(s: &str) -> Result<StepFilter, ExprError> {
    s.parse()
}

fn field(s: &str) -> Result<FieldFilter, ExprError> {
    s.parse()
}

const USAGE: &str = r#"{"inputTokens":0,"outputTokens":0,"reasoningTokens":0,"totalTokens":0,"cachedInputTokens":0}"#;

/// A stored-looking event of `kind` at `step`, with the smallest valid payload.
fn event(kind: &str, step: u32, tools: &[&str]) -> Event {
    let calls: Vec<Value> = tools
        .iter()
        .enumerate()
        .map(|(i, t)| {
            json!({"id": format!("c{i}"), "skillName": "@perstack/base", "toolName": t, "args": {}})
        })
        .collect();
    let usage: Value = serde_json::from_str(USAGE).unwrap();
    let message = json!({"type": "expertMessage", "id": "m", "contents": []});
    let payload = match kind {
        "startGeneration" => json!({"messages": []}),
        "callTools" => json!({"newMessage": message, "toolCalls": calls, "usage": usage}),
        "retry" => json!({"reason": "r", "newMessages": [], "usage": usage}),
        "resolveToolResults" => json!({"toolResults": []}),
        "streamRunResult" => json!({"delta": "d"}),
        other => panic!("no fixture for {other}"),
    };
    let mut v = json!({
        "type": kind, "id": format!("e-{kind}-{step}"), "timestamp": 1000 + step,
        "jobId": "j", "runId": "r", "expertKey": "x", "stepNumber": step,
    });
    for (k, val) in payload.as_object().unwrap() {
        v[k] = val.clone();
    }
    serde_json::from_value(v).unwrap()
}

#[test]
fn step_expressions_parse_and_match() {
    assert_eq!(step("5"), Ok(StepFilter::Exact(5)));
    assert_eq!(step(" >5 "), Ok(StepFilter::Gt(5)));
    assert_eq!(step(">=5"), Ok(StepFilter::Ge(5)));
    assert_eq!(step("<5"), Ok(StepFilter::Lt(5)));
    assert_eq!(step("<=5"), Ok(StepFilter::Le(5)));
    assert_eq!(step("1-10"), Ok(StepFilter::Range(1, 10)));
    assert_eq!(step("3 - 3"), Ok(StepFilter::Range(3, 3)));
    assert!(StepFilter::Range(1, 10).matches(1) && StepFilter::Range(1, 10).matches(10));
    assert!(!StepFilter::Range(1, 10).matches(11));
    assert!(StepFilter::Gt(5).matches(6) && !StepFilter::Gt(5).matches(5));
    assert!(StepFilter::Ge(5).matches(5) && !StepFilter::Ge(5).matches(4));
    assert!(StepFilter::Lt(5).matches(4) && !StepFilter::Lt(5).matches(5));
    assert!(StepFilter::Le(5).matches(5) && !StepFilter::Le(5).matches(6));
    for s in ["1-10", ">=3", "7", "<2"] {
        assert_eq!(step(s).unwrap().to_string(), s);
    }
}

#[test]
fn bad_step_expressions_say_what_was_expected() {
    for bad in [
        "",
        "x",
        ">",
        ">=a",
        "5-",
        "-5",
        "1-2-3",
        "=5",
        "5.5",
        "99999999999",
        "10-1",
    ] {
        let e = step(bad).expect_err(bad);
        let msg = e.to_string();
        assert!(
            msg.contains("--step") && msg.contains(&format!("{bad:?}")),
            "{msg}"
        );
    }
    assert!(
        step("abc")
            .unwrap_err()
            .to_string()
            .contains("expected N, >N")
    );
    assert!(
        step("10-1")
            .unwrap_err()
            .to_string()
            .contains("start is after its end")
    );
}

#[test]
fn filter_expressions_parse() {
    let f = field(r#".toolCalls[].skillName == "@perstack/base""#).unwrap();
    assert_eq!(
        f.path,
        vec![
            Segment::Key("toolCalls".into()),
            Segment::Any,
            Segment::Key("skillName".into())
        ]
    );
    assert_eq!(f.op, Op::Eq);
    assert_eq!(f.value, Literal::Str("@perstack/base".into()));
    assert_eq!(field(".stepNumber>=3").unwrap().op, Op::Ge);
    assert_eq!(field(".stepNumber <= 3").unwrap().op, Op::Le);
    assert_eq!(field(".stepNumber < 3").unwrap().value, Literal::Num(3.0));
    assert_eq!(field(".a.b != -1.5").unwrap().value, Literal::Num(-1.5));
    assert_eq!(field(".ok == true").unwrap().value, Literal::Bool(true));
    assert_eq!(
        field(".s == 'x y'").unwrap().value,
        Literal::Str("x y".into())
    );
    assert_eq!(
        field(r#".s == "a \"q\" b""#).unwrap().value,
        Literal::Str("a \"q\" b".into())
    );
    assert_eq!(field(".m[][] == 1").unwrap().path.len(), 3);
}

#[test]
fn bad_filter_expressions_say_what_is_wrong() {
    let cases = [
        ("toolCalls == 1", "expected .<path>"),
        (". == 1", "missing field name"),
        (".a..b == 1", "empty field name"),
        (".a == ", "missing value"),
        (".a = 1", "unknown operator"),
        (".a 1", "missing operator"),
        (".a == foo", "bad value foo"),
        (".a == \"open", "malformed string"),
        (".a == 'open", "unterminated string"),
        (".a[0] == 1", "only [] (any element)"),
        (".1a == 1", "bad field name"),
        (".a > \"x\"", "compare numbers only"),
        (".a < true", "compare numbers only"),
    ];
    for (input, want) in cases {
        let msg = field(input).expect_err(input).to_string();
        assert!(
            msg.contains("--filter") && msg.contains(want),
            "{input}: {msg}"
        );
    }
}

#[test]
fn filters_evaluate_like_perstack() {
    let v = json!({
        "type": "callTools", "stepNumber": 3, "flag": false,
        "toolCalls": [
            {"toolName": "readTextFile", "skillName": "@perstack/base"},
            {"toolName": "child", "skillName": "child"}
        ],
        "tags": ["a", "b"],
        "usage": {"inputTokens": 120}
    });
    let yes = |s: &str| assert!(field(s).unwrap().matches(&v), "{s} should match");
    let no = |s: &str| assert!(!field(s).unwrap().matches(&v), "{s} should not match");
    yes(r#".toolCalls[].toolName == "child""#);
    yes(r#".toolCalls[].skillName == "@perstack/base""#);
    no(r#".toolCalls[].toolName == "writeTextFile""#);
    // Any element that differs is enough for != (Perstack's rule).
    yes(r#".toolCalls[].toolName != "child""#);
    yes(".stepNumber == 3");
    yes(".stepNumber >= 3");
    yes(".stepNumber > 2.5");
    no(".stepNumber < 3");
    yes(".usage.inputTokens <= 120");
    yes(".flag == false");
    no(".flag == true");
    yes(r#".type != "retry""#);
    yes(r#".tags == "b""#);
    yes(r#".tags[] == "a""#);
    // Missing fields never match, not even with !=.
    no(r#".nope != "x""#);
    no(r#".usage.nope.deeper == 1"#);
    // [] on an object, or a key on an array, finds nothing.
    no(r#".usage[].inputTokens == 120"#);
    no(r#".toolCalls.toolName == "child""#);
    // Types differ: never equal, so != holds; ordering does not.
    no(r#".stepNumber == "3""#);
    yes(r#".stepNumber != "3""#);
    no(".type > 1");
}

#[test]
fn selection_filters_by_step_type_sets_and_field() {
    let evs = vec![
        event("startGeneration", 1, &[]),
        event("callTools", 1, &["attemptCompletion"]),
        event("retry", 2, &[]),
        event("callTools", 3, &["readTextFile"]),
        event("resolveToolResults", 3, &[]),
        event("streamRunResult", 4, &[]),
    ];
    let pick = |sel: Selection| -> Vec<usize> {
        sel.apply(&evs).shown.into_iter().map(|(i, _)| i).collect()
    };
    assert_eq!(pick(Selection::default()), vec![0, 1, 2, 3, 4, 5]);
    let by_step = |s: &str| Selection {
        step: Some(step(s).unwrap()),
        ..Selection::default()
    };
    assert_eq!(pick(by_step("1")), vec![0, 1]);
    assert_eq!(pick(by_step(">=3")), vec![3, 4, 5]);
    assert_eq!(pick(by_step("2-3")), vec![2, 3, 4]);
    let types = Selection {
        types: vec!["callTools".into(), "retry".into()],
        ..Selection::default()
    };
    assert_eq!(pick(types), vec![1, 2, 3]);
    let errors = Selection {
        sets: ERROR_TYPES.to_vec(),
        ..Selection::default()
    };
    assert_eq!(pick(errors), vec![2]);
    let union = Selection {
        sets: [ERROR_TYPES, TOOL_TYPES].concat(),
        ..Selection::default()
    };
    assert_eq!(pick(union), vec![1, 2, 3, 4]);
    let f = Selection {
        field: Some(field(r#".toolCalls[].toolName == "attemptCompletion""#).unwrap()),
        ..Selection::default()
    };
    assert_eq!(pick(f), vec![1]);
    let combined = Selection {
        step: Some(StepFilter::Ge(2)),
        sets: TOOL_TYPES.to_vec(),
        ..Selection::default()
    };
    assert_eq!(pick(combined), vec![3, 4]);
}

#[test]
fn selection_pages_then_adds_context() {
    let evs: Vec<Event> = (1..=10).map(|s| event("startGeneration", s, &[])).collect();
    let page = Selection {
        offset: 2,
        take: Some(3),
        ..Selection::default()
    }
    .apply(&evs);
    assert_eq!(page.matched, 10);
    assert_eq!(page.shown, vec![(2, true), (3, true), (4, true)]);
    let beyond = Selection {
        offset: 20,
        ..Selection::default()
    }
    .apply(&evs);
    assert!(beyond.shown.is_empty());
    assert_eq!(beyond.matched, 10);

    // Matches at steps 1, 5 and 10 with one neighbour each side, clipped at both ends.
    let ctx = Selection {
        step: Some(StepFilter::Exact(5)),
        context: 1,
        ..Selection::default()
    }
    .apply(&evs);
    assert_eq!(ctx.shown, vec![(3, false), (4, true), (5, false)]);
    assert_eq!(ctx.matched, 1);
    let edges = Selection {
        step: Some(StepFilter::Range(1, 1)),
        context: 3,
        ..Selection::default()
    }
    .apply(&evs);
    assert_eq!(
        edges.shown,
        vec![(0, true), (1, false), (2, false), (3, false)]
    );
    // Overlapping windows merge; a neighbouring match stays a match.
    let both = Selection {
        step: Some(StepFilter::Range(5, 6)),
        context: 1,
        ..Selection::default()
    }
    .apply(&evs);
    assert_eq!(
        both.shown,
        vec![(3, false), (4, true), (5, true), (6, false)]
    );
    // A match outside the page may appear, but only as context.
    let paged = Selection {
        step: Some(StepFilter::Range(5, 6)),
        take: Some(1),
        context: 1,
        ..Selection::default()
    }
    .apply(&evs);
    assert_eq!(paged.shown, vec![(3, false), (4, true), (5, false)]);
    assert_eq!(Selection::default().apply(&[]), Selected::default());
}
