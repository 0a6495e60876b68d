//! The whole run: machine facts, the kernel probe, every workload × repetition × system, and
//! the progress display.

use std::io::IsTerminal;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{Plan, System, Workload};
use crate::parsebench;
use crate::results::{Machine, ParserRow, Row, Suite, WorkloadResult};
use crate::runner::{self, describe, rows, shape};

/// Progress to stderr: a bar on a terminal, one plain line per step otherwise.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    done: u64,
    quiet: bool,
}

impl Progress {
    /// A progress display for `total` steps; `quiet` prints nothing at all (tests).
    pub fn new(total: u64, quiet: bool) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::new(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
            ) {
                b.set_style(style);
            }
            b
        });
        Progress {
            bar,
            total,
            done: 0,
            quiet,
        }
    }

    /// Announces the step about to run.
    pub fn step(&mut self, what: &str) {
        self.done += 1;
        match &self.bar {
            Some(b) => {
                b.set_message(what.to_string());
                b.set_position(self.done - 1);
            }
            None if !self.quiet => eprintln!("kcm bench [{}/{}] {what}", self.done, self.total),
            None => {}
        }
    }

    /// Prints a line without breaking the bar.
    pub fn note(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None if !self.quiet => eprintln!("{line}"),
            None => {}
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// The machine's facts, as the report records them.
pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string());
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        kernel,
        date: iso8601(secs),
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch (UTC).
pub fn iso8601(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (proleptic Gregorian), eras of 400 years.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `git rev-parse --short HEAD` in the working directory, else in the source tree this harness
/// was built from, else "unknown".
pub fn commit() -> String {
    let here = std::path::PathBuf::from(".");
    let src = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    [here, src]
        .iter()
        .find_map(|dir| {
            let o = std::process::Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(["rev-parse", "--short", "HEAD"])
                .stderr(std::process::Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())?;
            let s = String::from_utf8(o.stdout).ok()?.trim().to_string();
            (!s.is_empty()).then_some(s)
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// Runs every workload of the plan. A failing run is recorded in its row, not returned: the
/// other systems' figures still stand.
pub fn run_suite(plan: &Plan, quiet: bool) -> Suite {
    crate::work::calibrate();
    let mut systems = plan.systems.clone();
    let mut skipped = Vec::new();
    if systems.contains(&System::Kernel) {
        if let Err(e) = crate::systems::kernel::probe() {
            skipped.push((System::Kernel, format!("socket(AF_KCM) failed: {e}")));
            systems.retain(|s| *s != System::Kernel);
        }
    }
    let total: usize = plan
        .workloads
        .iter()
        .map(|&w| {
            if w == Workload::W5 {
                1
            } else {
                rows(w, &systems).len()
            }
        })
        .sum::<usize>()
        * plan.reps;
    // The skipped systems are named once, in the report.
    let mut progress = Progress::new(total as u64, quiet);
    let mut workloads = Vec::new();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for &w in &plan.workloads {
        let mut result = WorkloadResult {
            workload: w,
            shape: describe(w, plan),
            rows: Vec::new(),
            parsers: Vec::new(),
            ratios: Vec::new(),
        };
        if w == Workload::W5 {
            progress.step("W5 parsers");
            result.parsers = run_w5(plan);
            for _ in 1..plan.reps {
                progress.step("W5 parsers");
            }
        } else if let Some(sh) = shape(w, plan) {
            result.rows = rows(w, &systems)
                .into_iter()
                .map(|(system, mode)| Row {
                    system,
                    mode,
                    runs: Vec::new(),
                    error: None,
                })
                .collect();
            for rep in 0..plan.reps {
                for row in &mut result.rows {
                    progress.step(&format!(
                        "{} {} rep {}/{}",
                        w.id(),
                        row.label(),
                        rep + 1,
                        plan.reps
                    ));
                    if row.error.is_some() {
                        continue;
                    }
                    match runner::run_once(row.system, row.mode, &sh, plan) {
                        Ok(run) => row.runs.push(run),
                        Err(e) => {
                            progress.note(&format!("{} {}: failed: {e:#}", w.id(), row.label()));
                            row.error = Some(format!("{e:#}"));
                        }
                    }
                    // Let the previous server's sockets and threads wind down before the next.
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        result.ratios = runner::ratios(&result, cores);
        workloads.push(result);
    }
    progress.finish();
    Suite {
        machine: machine(),
        commit: commit(),
        plan: plan.clone(),
        skipped,
        workloads,
    }
}

/// W5: every parser, `reps` times each.
fn run_w5(plan: &Plan) -> Vec<ParserRow> {
    let buf = parsebench::buffer(plan.parser_messages);
    // Each repetition measures for a quarter of a run's window: plenty for millions of calls.
    let min_time = plan.duration / 4;
    parsebench::parsers(&plan.bpf_object)
        .into_iter()
        .map(|(name, p)| {
            let mut row = ParserRow {
                name: name.to_string(),
                calls_per_s: Vec::new(),
                unavailable: None,
            };
            match p {
                Err(why) => row.unavailable = Some(why),
                Ok(p) => {
                    for _ in 0..plan.reps {
                        match parsebench::calls_per_s(&*p, &buf, min_time) {
                            Ok(v) => row.calls_per_s.push(v),
                            Err(e) => {
                                row.unavailable = Some(format!("failed: {e:#}"));
                                break;
                            }
                        }
                    }
                }
            }
            row
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn machine_facts_are_filled() {
        let m = machine();
        assert!(m.cores >= 1);
        assert!(m.date.ends_with('Z'));
        assert!(!m.kernel.is_empty());
    }
}
