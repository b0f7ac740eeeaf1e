//! OpenMetrics text: a strict parser, scraping `/metrics` in a sandbox, and waiting until the
//! counters say what a test expects. Also `/readyz`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::daemon::Daemon;
use super::sandbox::Sandbox;
use super::wait::Wait;

/// One sample: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed scrape.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scrape {
    pub samples: Vec<Sample>,
    /// `# TYPE` per metric family.
    pub types: BTreeMap<String, String>,
}

impl Scrape {
    /// The value of the one sample named `name` whose labels include all of `labels`; `None`
    /// when there is none; panics when several match.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert!(
            found.len() <= 1,
            "several samples match {name} {labels:?}: {found:?}"
        );
        found.first().map(|s| s.value)
    }

    /// [`Scrape::get`], 0 when there is no such sample.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// All samples of a name.
    pub fn all(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }
}

/// Parses OpenMetrics/Prometheus text exposition format strictly: every line is a comment
/// (`# HELP`, `# TYPE`, `# UNIT`, `# EOF`) or `name[{k="v",…}] value [timestamp]`.
pub(crate) fn parse_openmetrics(text: &str) -> Result<Scrape, String> {
    let mut scrape = Scrape::default();
    let mut eof = false;
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        if eof {
            return Err(format!("line {n}: content after # EOF: {line:?}"));
        }
        if line == "# EOF" {
            eof = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("TYPE"), Some(name), Some(ty)) => {
                    scrape.types.insert(name.to_string(), ty.to_string());
                }
                (Some("HELP" | "UNIT"), Some(_), _) => {}
                _ => return Err(format!("line {n}: unknown comment {line:?}")),
            }
            continue;
        }
        if line.is_empty() {
            return Err(format!("line {n}: empty line"));
        }
        let name_end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(line.len());
        let name = &line[..name_end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!("line {n}: bad metric name in {line:?}"));
        }
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices().peekable();
            let mut end = None;
            loop {
                // label name
                let start = match chars.peek() {
                    Some(&(_, '}')) => {
                        end = chars.next().map(|(i, _)| i);
                        break;
                    }
                    Some(&(i, _)) => i,
                    None => break,
                };
                let mut eq = None;
                for (i, c) in chars.by_ref() {
                    if c == '=' {
                        eq = Some(i);
                        break;
                    }
                }
                let eq = eq.ok_or_else(|| format!("line {n}: label without '=' in {line:?}"))?;
                let key = r[start..eq].to_string();
                if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!("line {n}: bad label name {key:?}"));
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err(format!("line {n}: label value not quoted in {line:?}"));
                }
                let mut value = String::new();
                let mut closed = false;
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next().map(|(_, c)| c) {
                            Some('n') => value.push('\n'),
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            other => return Err(format!("line {n}: bad escape {other:?}")),
                        },
                        '"' => {
                            closed = true;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                if !closed {
                    return Err(format!("line {n}: unterminated label value in {line:?}"));
                }
                if labels.insert(key.clone(), value).is_some() {
                    return Err(format!("line {n}: duplicate label {key}"));
                }
                match chars.next() {
                    Some((_, ',')) => continue,
                    Some((i, '}')) => {
                        end = Some(i);
                        break;
                    }
                    other => {
                        return Err(format!(
                            "line {n}: expected ',' or '}}' after a label, got {other:?}"
                        ))
                    }
                }
            }
            let end = end.ok_or_else(|| format!("line {n}: unterminated label set in {line:?}"))?;
            rest = &r[end + 1..];
        }
        let mut fields = rest.split(' ');
        if fields.next() != Some("") {
            return Err(format!("line {n}: no space before the value in {line:?}"));
        }
        let value = fields
            .next()
            .ok_or_else(|| format!("line {n}: no value in {line:?}"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .map_err(|_| format!("line {n}: bad value {v:?}"))?,
        };
        if let Some(ts) = fields.next() {
            ts.parse::<f64>()
                .map_err(|_| format!("line {n}: bad timestamp {ts:?}"))?;
        }
        if fields.next().is_some() {
            return Err(format!("line {n}: trailing fields in {line:?}"));
        }
        scrape.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    if !eof {
        return Err("no # EOF at the end (OpenMetrics requires it)".into());
    }
    Ok(scrape)
}

/// Scrapes `/metrics` in the namespace and parses it (panicking on malformed text).
pub(crate) fn scrape(sb: &Sandbox, port: u16) -> Scrape {
    let (code, body) = sb.http_get(port, "/metrics");
    assert_eq!(code, 200, "/metrics answered {code}: {body}");
    parse_openmetrics(&body).unwrap_or_else(|e| panic!("malformed /metrics: {e}\n{body}"))
}

/// Polls `/metrics` (every 100 ms) until `check` returns no complaint or `timeout` passes;
/// returns the last scrape, or panics with the last complaints and the whole last scrape.
pub(crate) fn wait_metrics(
    sb: &Sandbox,
    port: u16,
    timeout: Duration,
    what: &str,
    check: impl Fn(&Scrape) -> Vec<String>,
) -> Scrape {
    let every = Duration::from_millis(100);
    Wait::up_to(timeout).every(every).until(what, || {
        let s = scrape(sb, port);
        let problems = check(&s);
        if problems.is_empty() {
            return Ok(s);
        }
        let dump: Vec<String> = s
            .samples
            .iter()
            .map(|x| format!("  {}{:?} {}", x.name, x.labels, x.value))
            .collect();
        Err(format!(
            "still wrong:\n  {}\nlast scrape:\n{}",
            problems.join("\n  "),
            dump.join("\n")
        ))
    })
}

/// Polls (every 50 ms, up to 10 s) until the counter `name` (no labels) is `want`; panics, with
/// the daemon's stderr, if it passes `want` or time runs out.
pub(crate) fn wait_counter(sb: &Sandbox, port: u16, d: &Daemon, name: &str, want: f64) {
    let wait = Wait::up_to(Duration::from_secs(10)).every(Duration::from_millis(50));
    wait.until(format_args!("{name} = {want}"), || {
        let got = scrape(sb, port).get(name, &[]).unwrap_or(-1.0);
        let complaint = format!(
            "{name}: expected {want}, got {got}; stderr:\n{}",
            d.stderr_text()
        );
        assert!(got <= want, "{complaint}");
        if got == want {
            Ok(())
        } else {
            Err(complaint)
        }
    })
}

/// Polls `/readyz` (every 100 ms) until it answers 200 with a body `ok` accepts, or `timeout`
/// passes; returns the body.
pub(crate) fn wait_readyz(
    sb: &Sandbox,
    port: u16,
    d: &Daemon,
    timeout: Duration,
    what: &str,
    ok: impl Fn(&str) -> bool,
) -> String {
    let wait = Wait::up_to(timeout).every(Duration::from_millis(100));
    wait.until(format_args!("/readyz to show {what}"), || {
        let (code, body) = sb.http_get(port, "/readyz");
        if code == 200 && ok(&body) {
            return Ok(body);
        }
        Err(format!(
            "last answer {code}:\n{body}\nstderr:\n{}",
            d.stderr_text()
        ))
    })
}

/// `/readyz` says all three watches are synced.
pub(crate) fn all_synced(body: &str) -> bool {
    ["networkpolicies", "pods", "namespaces"].iter().all(|r| {
        body.lines()
            .any(|l| l.starts_with(&format!("kubernetes {r}: synced")))
    })
}

/// Compares a sample with an expected value, for [`wait_metrics`] checks.
pub(crate) fn expect(
    problems: &mut Vec<String>,
    s: &Scrape,
    name: &str,
    labels: &[(&str, &str)],
    want: f64,
) {
    let got = s.get(name, labels);
    if got != Some(want) {
        problems.push(format!("{name}{labels:?}: expected {want}, got {got:?}"));
    }
}
