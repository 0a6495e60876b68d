//! The JSON record of a run (`--json PATH`):
//!
//! ```text
//! {"machine": {"cores", "cpu_model", "kernel", "date"}, "commit": "…", "settings": {…},
//!  "skipped": {"kernel": "socket(AF_KCM) failed: …"},
//!  "workloads": [{"id": "W1", "shape": "…",
//!                 "systems": {"thread": {"qps", "mean_us", "sd_us", "p50_us", "p99_us", "p999_us",
//!                                        "qps_min", "qps_max", "lg_cpu_share",
//!                                        "server_cpu_us_per_msg", "lg_cpu_us_per_msg",
//!                                        "work_cpu_us_per_msg" (W2), "reps", …}, …},
//!                 "one_way": {"kcm": {"qps", "bytes_per_s", …}, "raw": {…}},
//!                 "ratios": {"kcm/thread": F, …}, "errors": {…}}]}
//! ```
//!
//! Figures are medians over the repetitions; `qps` is messages/s for W3, and W5's systems are
//! the parsers, with `calls_per_s`. A ratio's `…_min`/`…_max` siblings give its spread. W2's
//! ratios include `ceiling/thread` and `kcm/ceiling` (`runner::ratios`).

use serde_json::{json, Map, Value};

use crate::results::{Mode, Row, Run, Spread, Suite, WorkloadResult};

fn num(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

fn spread_fields(obj: &mut Map<String, Value>, key: &str, s: Option<Spread>) {
    if let Some(s) = s {
        obj.insert(key.to_string(), num(s.median));
        obj.insert(format!("{key}_min"), num(s.min));
        obj.insert(format!("{key}_max"), num(s.max));
    }
}

fn row_json(r: &Row) -> Value {
    let mut o = Map::new();
    spread_fields(&mut o, "qps", r.spread(|x| Some(x.qps)));
    if r.mode == Mode::OneWay {
        spread_fields(&mut o, "bytes_per_s", r.spread(|x| Some(x.bytes_per_s)));
    }
    let lat = |f: fn(&crate::results::Latency) -> f64| {
        r.spread(|x| x.latency.as_ref().map(f)).map(|s| s.median)
    };
    for (k, v) in [
        ("mean_us", lat(|l| l.mean)),
        ("sd_us", lat(|l| l.sd)),
        ("p50_us", lat(|l| l.p50)),
        ("p99_us", lat(|l| l.p99)),
        ("p999_us", lat(|l| l.p999)),
    ] {
        if let Some(v) = v {
            o.insert(k.into(), num(v));
        }
    }
    if let Some(s) = r.spread(|x| Some(x.lg_cpu_share)) {
        o.insert("lg_cpu_share".into(), num(s.median));
    }
    if let Some(s) = r.spread(|x| Some(x.server_cpu_us)) {
        o.insert("server_cpu_us_per_msg".into(), num(s.median));
    }
    if let Some(s) = r.spread(Run::work) {
        o.insert("work_cpu_us_per_msg".into(), num(s.median));
    }
    if let Some(s) = r.spread(|x| Some(x.lg_cpu_us)) {
        o.insert("lg_cpu_us_per_msg".into(), num(s.median));
    }
    o.insert("reps".into(), json!(r.runs.len()));
    o.insert(
        "requests".into(),
        json!(r.runs.iter().map(|x| x.requests).sum::<u64>()),
    );
    o.insert(
        "verified".into(),
        json!(r.runs.iter().map(|x| x.verified).sum::<u64>()),
    );
    if let Some(e) = &r.error {
        o.insert("error".into(), json!(e));
    }
    Value::Object(o)
}

/// One workload's entry.
pub fn workload_json(w: &WorkloadResult) -> Value {
    let mut systems = Map::new();
    let mut one_way = Map::new();
    for r in &w.rows {
        let target = match r.mode {
            // W3's raw row is its ceiling and stands with the other systems.
            Mode::OneWay if w.workload == crate::config::Workload::W1 => &mut one_way,
            _ => &mut systems,
        };
        target.insert(r.system.name().to_string(), row_json(r));
    }
    for p in &w.parsers {
        let mut o = Map::new();
        spread_fields(&mut o, "calls_per_s", Spread::of(&p.calls_per_s));
        if let Some(why) = &p.unavailable {
            o.insert("unavailable".into(), json!(why));
        }
        systems.insert(p.name.clone(), Value::Object(o));
    }
    let mut ratios = Map::new();
    for r in &w.ratios {
        spread_fields(&mut ratios, &r.name, Spread::of(&r.values));
    }
    let mut o = Map::new();
    o.insert("id".into(), json!(w.workload.id()));
    o.insert("shape".into(), json!(w.shape));
    o.insert("systems".into(), Value::Object(systems));
    if !one_way.is_empty() {
        o.insert("one_way".into(), Value::Object(one_way));
    }
    o.insert("ratios".into(), Value::Object(ratios));
    Value::Object(o)
}

/// The whole record.
pub fn suite_json(s: &Suite) -> Value {
    let p = &s.plan;
    let skipped: Map<String, Value> = s
        .skipped
        .iter()
        .map(|(sys, why)| (sys.name().to_string(), json!(why)))
        .collect();
    json!({
        "machine": s.machine,
        "commit": s.commit,
        "settings": {
            "workers": p.workers,
            "connections": p.connections,
            "depth": p.depth,
            "reps": p.reps,
            "duration_s": p.duration.as_secs_f64(),
            "warmup_s": p.warmup.as_secs_f64(),
            "lg_threads": p.lg_threads,
            "hot_share": p.hot_share,
            "parser_messages": p.parser_messages,
        },
        "skipped": skipped,
        "workloads": s.workloads.iter().map(workload_json).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BenchArgs, System, Workload};
    use crate::results::{Latency, Machine, ParserRow};

    fn run(qps: f64) -> Run {
        Run {
            bytes_per_s: qps * 5000.0,
            requests: 10,
            verified: 10,
            latency: Some(Latency {
                mean: 2.0,
                sd: 1.0,
                p50: 2.0,
                p99: 5.0,
                p999: 9.0,
            }),
            lg_cpu_share: 0.25,
            ..Run::sample(qps, 1.5, 0.0, 2.0)
        }
    }

    fn suite() -> Suite {
        let plan = BenchArgs::default().plan().unwrap();
        let row = |system, mode, q: [f64; 3]| Row {
            system,
            mode,
            runs: q.map(run).to_vec(),
            error: None,
        };
        let mut w1 = WorkloadResult {
            workload: Workload::W1,
            shape: "w1".into(),
            rows: vec![
                row(System::Thread, Mode::ClosedLoop, [100.0, 110.0, 90.0]),
                row(System::Kcm, Mode::ClosedLoop, [120.0, 110.0, 90.0]),
                row(System::Kcm, Mode::OneWay, [50.0, 50.0, 50.0]),
                row(System::Raw, Mode::OneWay, [100.0, 100.0, 100.0]),
            ],
            parsers: vec![],
            ratios: vec![],
        };
        w1.ratios = crate::runner::ratios(&w1, 2);
        let w5 = WorkloadResult {
            workload: Workload::W5,
            shape: "w5".into(),
            rows: vec![],
            parsers: vec![ParserRow {
                name: "native".into(),
                calls_per_s: vec![1e8, 2e8, 3e8],
                unavailable: None,
            }],
            ratios: vec![],
        };
        Suite {
            machine: Machine {
                cores: 2,
                cpu_model: "cpu".into(),
                kernel: "6.1".into(),
                date: "d".into(),
            },
            commit: "abc1234".into(),
            plan,
            skipped: vec![(System::Kernel, "socket(AF_KCM) failed: x".into())],
            workloads: vec![w1, w5],
        }
    }

    #[test]
    fn shape_matches_the_brief() {
        let v = suite_json(&suite());
        assert_eq!(v["machine"]["cores"], 2);
        assert_eq!(v["machine"]["cpu_model"], "cpu");
        assert_eq!(v["commit"], "abc1234");
        assert_eq!(v["skipped"]["kernel"], "socket(AF_KCM) failed: x");
        let w1 = &v["workloads"][0];
        assert_eq!(w1["id"], "W1");
        let t = &w1["systems"]["thread"];
        for k in ["qps", "mean_us", "sd_us", "p50_us", "p99_us", "p999_us"] {
            assert!(t[k].is_f64(), "{k} missing in {t}");
        }
        assert_eq!(t["qps"], 100.0);
        assert_eq!(t["qps_min"], 90.0);
        assert_eq!(t["server_cpu_us_per_msg"], 1.5);
        assert_eq!(w1["systems"].as_object().unwrap().len(), 2);
        assert_eq!(w1["one_way"]["raw"]["bytes_per_s"], 500_000.0);
        // Per-repetition ratios 1.2, 1.0, 1.0 → median 1.0.
        assert_eq!(w1["ratios"]["kcm/thread"], 1.0);
        assert_eq!(w1["ratios"]["kcm/thread_max"], 1.2);
        assert_eq!(w1["ratios"]["kcm/raw"], 0.5);
        let w5 = &v["workloads"][1];
        assert_eq!(w5["systems"]["native"]["calls_per_s"], 2e8);
    }

    #[test]
    fn system_order_is_kept() {
        let v = suite_json(&suite());
        let keys: Vec<&String> = v["workloads"][0]["systems"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(keys, ["thread", "kcm"]);
    }
}
