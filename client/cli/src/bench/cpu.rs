//! CPU accounting of a benchmark: the user + system CPU time of each
//! process under measure (the replicas or etcd members named by `--pid`, and
//! the load generator itself), read from `/proc/PID/stat` at the start and
//! end of a phase, and what it comes to per operation or as a share of a
//! core. `/proc/PID/stat` counts every thread of the process, in clock ticks
//! (`CLK_TCK`, usually 100 per second): a phase should last seconds, not
//! milliseconds, for the figures to mean something.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// The name the load generator reports itself under.
pub const SELF_NAME: &str = "bench";

/// One process under measure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watched {
    pub name: String,
    /// `None`: this process.
    pub pid: Option<u32>,
}

/// Parses a `--pid NAME=PID` value. A bare number for NAME is a replica's
/// node id and becomes `replica-N`.
pub fn parse_watched(s: &str) -> std::result::Result<Watched, String> {
    let (name, pid) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=PID"))?;
    let name = name.trim();
    if name.is_empty() || name == SELF_NAME {
        return Err(format!(
            "{s:?}: the name must be non-empty and not {SELF_NAME:?}"
        ));
    }
    let pid: u32 = pid
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: {pid:?} is not a process id"))?;
    if pid == 0 {
        return Err(format!("{s:?}: 0 is not a process id"));
    }
    let name = if name.bytes().all(|b| b.is_ascii_digit()) {
        format!("replica-{name}")
    } else {
        name.to_string()
    };
    Ok(Watched {
        name,
        pid: Some(pid),
    })
}

/// utime + stime (clock ticks) from the text of `/proc/PID/stat`. The
/// command name (field 2) is in parentheses and may itself hold spaces and
/// parentheses: the fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Result<u64> {
    let close = text.rfind(')').context("no command name in /proc stat")?;
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    if rest.len() < 13 {
        bail!("/proc stat has {} fields after the name", rest.len());
    }
    let utime: u64 = rest[11].parse().context("utime")?;
    let stime: u64 = rest[12].parse().context("stime")?;
    Ok(utime + stime)
}

/// Clock ticks per second of `/proc/PID/stat`.
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// CPU ticks of each watched process at one moment.
#[derive(Clone, Debug)]
pub struct Sample {
    at: Instant,
    ticks: Vec<Option<u64>>,
}

/// The processes of a run and how to read their CPU time.
#[derive(Clone, Debug)]
pub struct Probe {
    pub procs: Vec<Watched>,
    pub tck: u64,
}

/// CPU seconds one process used over a phase (`None`: it could not be read
/// at one end, e.g. the process had exited).
#[derive(Clone, Debug, PartialEq)]
pub struct Used {
    pub name: String,
    pub pid: u32,
    pub seconds: Option<f64>,
}

impl Probe {
    /// The named processes, then this one.
    pub fn new(mut procs: Vec<Watched>) -> Probe {
        procs.push(Watched {
            name: SELF_NAME.into(),
            pid: None,
        });
        Probe {
            procs,
            tck: clock_ticks(),
        }
    }

    /// Fails if a named process cannot be read now (a wrong pid).
    pub fn check(&self) -> Result<()> {
        for p in &self.procs {
            read_ticks(p.pid).with_context(|| {
                format!("--pid {}={}: cannot read its CPU time", p.name, pid_of(p))
            })?;
        }
        Ok(())
    }

    pub fn sample(&self) -> Sample {
        Sample {
            at: Instant::now(),
            ticks: self.procs.iter().map(|p| read_ticks(p.pid).ok()).collect(),
        }
    }

    /// What each process used from `a` to `b`, and the wall time between.
    pub fn between(&self, a: &Sample, b: &Sample) -> (Vec<Used>, Duration) {
        let used = self
            .procs
            .iter()
            .zip(a.ticks.iter().zip(&b.ticks))
            .map(|(p, (x, y))| Used {
                name: p.name.clone(),
                pid: pid_of(p),
                seconds: match (x, y) {
                    (Some(x), Some(y)) if y >= x => Some((y - x) as f64 / self.tck as f64),
                    _ => None,
                },
            })
            .collect();
        (used, b.at.saturating_duration_since(a.at))
    }
}

fn pid_of(p: &Watched) -> u32 {
    p.pid.unwrap_or_else(std::process::id)
}

fn read_ticks(pid: Option<u32>) -> Result<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat(&text)
}

/// CPU of a phase of `ops` operations: per process its CPU seconds and
/// microseconds per operation, and the total over the processes that could
/// be read. `leader` names the process to mark as the leader.
pub fn per_op(used: &[Used], ops: usize, leader: Option<&str>) -> Value {
    let per = |s: f64| {
        if ops == 0 {
            0.0
        } else {
            round1(s * 1e6 / ops as f64)
        }
    };
    let procs: Vec<Value> = used
        .iter()
        .map(|u| {
            let mut v = json!({
                "name": u.name,
                "pid": u.pid,
                "cpu_seconds": u.seconds.map(round3),
                "us_per_op": u.seconds.map(per),
            });
            if leader == Some(u.name.as_str()) {
                v["leader"] = json!(true);
            }
            v
        })
        .collect();
    let total: f64 = used.iter().filter_map(|u| u.seconds).sum();
    json!({
        "processes": procs,
        "total_cpu_seconds": round3(total),
        "total_us_per_op": per(total),
        "unreadable": used.iter().filter(|u| u.seconds.is_none()).count(),
    })
}

/// CPU of an idle window: per process the share of one core it used
/// (100 = one core busy all the time), and the total.
pub fn idle(used: &[Used], window: Duration, leader: Option<&str>) -> Value {
    let secs = window.as_secs_f64();
    let pct = |s: f64| {
        if secs <= 0.0 {
            0.0
        } else {
            round2(s * 100.0 / secs)
        }
    };
    let procs: Vec<Value> = used
        .iter()
        .map(|u| {
            let mut v = json!({
                "name": u.name,
                "pid": u.pid,
                "cpu_seconds": u.seconds.map(round3),
                "pct_core": u.seconds.map(pct),
            });
            if leader == Some(u.name.as_str()) {
                v["leader"] = json!(true);
            }
            v
        })
        .collect();
    // The cluster is everything but the load generator.
    let cluster: f64 = used
        .iter()
        .filter(|u| u.name != SELF_NAME)
        .filter_map(|u| u.seconds)
        .sum();
    json!({
        "window_seconds": round3(secs),
        "processes": procs,
        "cluster_pct_core": pct(cluster),
        "unreadable": used.iter().filter(|u| u.seconds.is_none()).count(),
    })
}

/// "name 12.3" pairs of a per-op or idle object, for the text report.
pub fn brief(v: &Value, field: &str) -> String {
    v["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let star = if p["leader"] == true { "*" } else { "" };
            let x = match p[field].as_f64() {
                Some(x) => format!("{x}"),
                None => "?".into(),
            };
            format!("{}{star} {x}", p["name"].as_str().unwrap_or("?"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line = "4242 (arbor-node) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    250 75 0 0 20 0 9 0 12345 1000000 2000 18446744073709551615";
        assert_eq!(parse_stat(line).unwrap(), 325);
        // A command name with spaces and a ')' of its own.
        let odd = "7 (a b) c)) R 1 7 7 0 -1 0 0 0 0 0 11 22 0 0 20 0 1 0 1 1 1";
        assert_eq!(parse_stat(odd).unwrap(), 33);
        assert!(parse_stat("7 (x) R 1 2 3").is_err());
        assert!(parse_stat("no name here").is_err());
        assert!(parse_stat("7 (x) R 1 7 7 0 -1 0 0 0 0 0 u s 0 0").is_err());
    }

    #[test]
    fn this_process_can_be_read_and_its_cpu_grows() {
        let p = Probe::new(vec![]);
        assert_eq!(p.procs.len(), 1);
        p.check().unwrap();
        let a = p.sample();
        // Burn a little CPU: enough for at least one tick.
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(60) {
            x = x.wrapping_mul(31).wrapping_add(std::hint::black_box(7));
        }
        std::hint::black_box(x);
        let b = p.sample();
        let (used, wall) = p.between(&a, &b);
        assert_eq!(used[0].name, SELF_NAME);
        assert_eq!(used[0].pid, std::process::id());
        assert!(used[0].seconds.unwrap() >= 0.0);
        assert!(wall >= Duration::from_millis(60));
    }

    #[test]
    fn a_wrong_pid_is_refused_and_an_exited_one_is_unreadable() {
        // Pid numbers stop well below this (pid_max is at most 2^22).
        let gone = Watched {
            name: "replica-9".into(),
            pid: Some(u32::MAX - 1),
        };
        let p = Probe::new(vec![gone]);
        let e = p.check().unwrap_err().to_string();
        assert!(e.contains("replica-9"), "{e}");
        let a = p.sample();
        let (used, _) = p.between(&a, &p.sample());
        assert_eq!(used[0].seconds, None);
        let v = per_op(&used, 10, None);
        assert_eq!(v["unreadable"], 1);
        assert_eq!(v["processes"][0]["us_per_op"], Value::Null);
    }

    #[test]
    fn pid_flags() {
        assert_eq!(
            parse_watched("2=123").unwrap(),
            Watched {
                name: "replica-2".into(),
                pid: Some(123)
            }
        );
        assert_eq!(parse_watched("etcd-1=9").unwrap().name, "etcd-1");
        for bad in ["", "x", "=1", "a=", "a=0", "a=-3", "a=b", "bench=5"] {
            assert!(parse_watched(bad).is_err(), "{bad:?}");
        }
    }

    fn used(name: &str, s: Option<f64>) -> Used {
        Used {
            name: name.into(),
            pid: 1,
            seconds: s,
        }
    }

    #[test]
    fn per_operation_and_idle_figures() {
        let u = [
            used("replica-1", Some(2.0)),
            used("replica-2", Some(0.5)),
            used(SELF_NAME, Some(0.25)),
        ];
        let v = per_op(&u, 25_000, Some("replica-1"));
        assert_eq!(v["processes"][0]["us_per_op"], 80.0);
        assert_eq!(v["processes"][0]["leader"], true);
        assert_eq!(v["processes"][1]["us_per_op"], 20.0);
        assert_eq!(v["processes"][1].get("leader"), None);
        assert_eq!(v["processes"][2]["us_per_op"], 10.0);
        assert_eq!(v["total_us_per_op"], 110.0);
        assert_eq!(v["total_cpu_seconds"], 2.75);
        assert_eq!(v["unreadable"], 0);
        assert_eq!(per_op(&u, 0, None)["total_us_per_op"], 0.0);
        assert_eq!(
            brief(&v, "us_per_op"),
            "replica-1* 80, replica-2 20, bench 10"
        );

        let i = idle(&u, Duration::from_secs(10), None);
        assert_eq!(i["processes"][0]["pct_core"], 20.0);
        assert_eq!(i["processes"][1]["pct_core"], 5.0);
        // The load generator is not part of the cluster's share.
        assert_eq!(i["cluster_pct_core"], 25.0);
        assert_eq!(i["window_seconds"], 10.0);
        assert_eq!(idle(&u, Duration::ZERO, None)["cluster_pct_core"], 0.0);
    }
}
