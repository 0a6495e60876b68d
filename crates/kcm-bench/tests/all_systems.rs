//! Every system on every workload, very short: each must produce requests, and every reply must
//! have passed the load generator's checks (a run with a bad reply fails instead of posting).

use kcm_bench::results::Mode;
use kcm_bench::{BenchArgs, System, Workload};

#[test]
fn every_system_serves_every_workload() {
    let args = BenchArgs {
        duration: Some(0.3),
        warmup: Some(0.05),
        reps: Some(1),
        connections: 2,
        depth: 8,
        parser_messages: 10_000,
        ..BenchArgs::default()
    };
    let plan = args.plan().unwrap();
    let suite = kcm_bench::suite::run_suite(&plan, true);
    let kernel_ran = !suite.skipped.iter().any(|(s, _)| *s == System::Kernel);
    if !kernel_ran {
        let (_, why) = &suite.skipped[0];
        assert!(why.starts_with("socket(AF_KCM) failed: "), "{why}");
    }
    assert_eq!(suite.workloads.len(), 5);
    for w in &suite.workloads {
        if w.workload == Workload::W5 {
            let native = w.parsers.iter().find(|p| p.name == "native").unwrap();
            assert!(native.calls_per_s[0] > 0.0);
            continue;
        }
        let mut expected = vec![
            (System::Thread, Mode::ClosedLoop),
            (System::Tokio, Mode::ClosedLoop),
            (System::Kcm, Mode::ClosedLoop),
        ];
        if matches!(w.workload, Workload::W1 | Workload::W3) {
            expected.push((System::Raw, Mode::OneWay));
        }
        if w.workload == Workload::W1 {
            expected.push((System::Kcm, Mode::OneWay));
        }
        for (system, mode) in expected {
            let row = w
                .row(system, mode)
                .unwrap_or_else(|| panic!("{:?}: no {system:?} {mode:?} row", w.workload));
            assert!(
                row.error.is_none(),
                "{:?} {}: {:?}",
                w.workload,
                row.label(),
                row.error
            );
            let run = &row.runs[0];
            assert!(run.requests > 0, "{:?} {}", w.workload, row.label());
            assert_eq!(
                run.verified,
                run.requests,
                "{:?} {}",
                w.workload,
                row.label()
            );
            assert!(run.qps > 0.0);
            match mode {
                Mode::ClosedLoop => assert!(run.latency.is_some_and(|l| l.p50 > 0.0)),
                Mode::OneWay => assert!(run.bytes_per_s > 0.0),
            }
            // Only W2's requests carry work, and each of them asks for 20 µs on average.
            if w.workload == Workload::W2 {
                assert!(run.work_us > 5.0, "{} work {}", row.label(), run.work_us);
                assert!(run.server_cpu_us >= run.work_us * 0.9);
            } else {
                assert_eq!(run.work_us, 0.0, "{:?} {}", w.workload, row.label());
            }
            assert!(run.lg_cpu_us > 0.0, "{:?} {}", w.workload, row.label());
        }
        // The kernel's rows exist only where it has AF_KCM (and may fail there: kcm-spec §4.2).
        assert_eq!(
            w.row(System::Kernel, Mode::ClosedLoop).is_some(),
            kernel_ran
        );
        assert!(!w.ratios.is_empty(), "{:?}: no ratios", w.workload);
    }
    let w2 = &suite.workloads[1];
    assert_eq!(w2.workload, Workload::W2);
    assert!(w2.ratios.iter().any(|r| r.name == "ceiling/thread"));
    let text = kcm_bench::report::render(&suite);
    assert!(text.contains("W3:") && text.contains("kcm/tokio"));
    assert!(text.contains("per request: the work"));
}
