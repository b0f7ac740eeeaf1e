//! What the demo prints after the traffic, section by section.

use std::path::Path;

use serde_json::Value;

use super::scenario::{LONG, NOISY};
use crate::attribute::index::safe_join;

pub fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn heading(title: &str) {
    println!("\n== {title} ==");
}

pub fn syslogemu(path: &Path) {
    heading("syslogemu lines: what ulogd2 would write to /var/log/ulog/syslogemu.log (one per NFLOG message)");
    print!("{}", std::fs::read_to_string(path).unwrap_or_default());
}

/// The fields that say who and why, in a readable order, from each record as the daemon wrote it.
pub fn json(path: &Path) {
    heading("JSON records: one per dropped packet, with the policy, pods, workloads and direction (selected fields)");
    let mut truncated = None;
    for r in records(path).iter().filter(|r| r.get("type").is_none()) {
        let mut line = String::from("{");
        for key in [
            "protocol",
            "src_ip",
            "dest_ip",
            "dest_port",
            "oob.prefix",
            "policy_source",
            "policy",
            "direction",
            "src",
            "dest",
            "count",
        ] {
            if let Some(v) = r.get(key) {
                if line.len() > 1 {
                    line.push(',');
                }
                line += &format!("{}:{}", Value::from(key), without_node(v));
            }
        }
        println!("{line}}}");
        let prefix = r["oob.prefix"].as_str().unwrap_or("");
        if r["policy"]["resolved"] == Value::Bool(true) && r["policy"]["name"] == LONG {
            truncated = Some(prefix.to_string());
        }
    }
    if let Some(prefix) = truncated {
        println!(
            "  ↳ the prefix {prefix:?} is kube-router's safeJoin cut of the name; the daemon resolved it \
             to payments-production/{LONG} (the only policy with that prefix selecting the destination pod)"
        );
    }
}

/// `node` is the same for every pod of the demo; left out to keep lines short.
fn without_node(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("node");
    }
    v
}

pub fn suppressed(path: &Path) {
    heading(&format!(
        "Suppression summary: {}/{} is annotated kube-router.io/netpol-nflog-limit: \"2/minute\", -limit-burst: \"2\"",
        NOISY.0, NOISY.1
    ));
    let summaries: Vec<Value> = records(path)
        .into_iter()
        .filter(|r| r["type"] == "suppressed")
        .collect();
    if summaries.is_empty() {
        println!("(no summary was written)");
    }
    for s in &summaries {
        println!("{s}");
    }
    println!(
        "  ↳ its two ports are two accept rules, each followed by a \"DROP by policy {}\" NFLOG rule: every \
         dropped packet is logged twice; the daemon wrote the first 2 messages and counted the rest",
        safe_join(NOISY.0, NOISY.1)
    );
}

pub fn tail(out: &str, err: &str) {
    heading("nflog-tail: the same events, compact, as it followed the daemon's tail socket during the traffic");
    print!("{out}");
    // Its notes (suppression summaries among them) go to stderr, so a pipe of events stays clean.
    for line in err.lines().filter(|l| l.contains("suppressed")) {
        println!("{line}");
    }
}

pub fn next_steps() {
    heading("Next, on a real K3s node");
    println!("  kubectl apply -k deploy/                                        # the DaemonSet, RBAC and config");
    println!("  kubectl -n netpol-nflog exec -it ds/netpol-nflogd -- nflog-tail  # follow the drops live");
    println!("  fluent-bit -c parsers/fluent-bit.conf                           # ship /var/log/ulog/syslogemu.log");
}
