//! Checks of what ships next to the daemon: the Kubernetes manifests in `deploy/` and the log
//! parsers in `parsers/`.
//!
//! * Schema: every built-in manifest validates against the Kubernetes OpenAPI schemas of the
//!   versions K3s supports, with `kubernetes-validate --strict` (PyPI, works offline).
//! * Posture: the DaemonSet's security context, the ClusterRole's rules, and that the K3s bundle
//!   is the kustomization rendered into one file.
//! * Parsers: the Fluent Bit regex (read from `parsers/fluent-bit-parsers.conf`, never copied
//!   here) matches every line of `tests/fixtures/syslogemu-samples.log` and extracts exactly the
//!   fields listed in `tests/fixtures/syslogemu-samples.expected.json`; the time formats accept
//!   what ulogd2 and the daemon write.
//!
//! YAML is read by shelling out to Python's PyYAML (Debian `python3-yaml`, or the PyYAML that
//! kubernetes-validate installs) so the crate needs no YAML dependency. CI needs both; see
//! `deploy/validate.sh` for the same schema check by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use onig::{Regex, RegexOptions, Syntax};
use serde_json::Value;

/// Kubernetes versions validated against. K3s keeps several minor releases in support; these are
/// the ones it ships or supported recently.
const K8S_VERSIONS: &[&str] = &["1.32", "1.33", "1.34", "1.35"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// YAML through Python
// ---------------------------------------------------------------------------------------------

/// A Python interpreter that can `import yaml`: Debian's first (python3-yaml), then the one on
/// PATH (pip's PyYAML, a dependency of kubernetes-validate).
fn python() -> &'static str {
    static PY: OnceLock<&'static str> = OnceLock::new();
    PY.get_or_init(|| {
        for py in ["/usr/bin/python3", "python3"] {
            let ok = Command::new(py)
                .args(["-c", "import yaml"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                return py;
            }
        }
        panic!(
            "no python3 with PyYAML found: install it (Debian: apt-get install python3-yaml, \
             or pip install pyyaml)"
        )
    })
}

/// All non-empty documents of a YAML file, as JSON values.
fn yaml_docs(rel: &str) -> Vec<Value> {
    let path = root().join(rel);
    let out = Command::new(python())
        .args([
            "-c",
            "import json, sys, yaml\n\
             docs = [d for d in yaml.safe_load_all(open(sys.argv[1], encoding='utf-8')) if d is not None]\n\
             json.dump(docs, sys.stdout)",
        ])
        .arg(&path)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "YAML parse of {} failed:\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).expect("python printed JSON") {
        Value::Array(docs) => docs,
        other => panic!("expected a list of documents, got {other}"),
    }
}

fn yaml_one(rel: &str) -> Value {
    let mut docs = yaml_docs(rel);
    assert_eq!(docs.len(), 1, "{rel} must hold exactly one document");
    docs.remove(0)
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("missing string at {pointer} in {v}"))
}

/// `Kind/name` of a resource, the identity used for comparisons.
fn kind_name(v: &Value) -> String {
    format!("{}/{}", str_at(v, "/kind"), str_at(v, "/metadata/name"))
}

/// The files listed under `resources:` in deploy/kustomization.yaml, relative to the repo root.
fn kustomization_files() -> Vec<String> {
    let k = yaml_one("deploy/kustomization.yaml");
    let res = k["resources"].as_array().expect("kustomization resources");
    assert!(!res.is_empty(), "kustomization lists no resources");
    res.iter()
        .map(|r| format!("deploy/{}", r.as_str().expect("resource is a path")))
        .collect()
}

fn kustomization_resources() -> Vec<Value> {
    kustomization_files()
        .iter()
        .flat_map(|f| yaml_docs(f))
        .collect()
}

fn find<'a>(resources: &'a [Value], kind: &str) -> &'a Value {
    let hits: Vec<&Value> = resources.iter().filter(|r| r["kind"] == kind).collect();
    assert_eq!(
        hits.len(),
        1,
        "expected exactly one {kind} in the kustomization"
    );
    hits[0]
}

// ---------------------------------------------------------------------------------------------
// Kubernetes schemas
// ---------------------------------------------------------------------------------------------

#[test]
fn manifests_validate_against_kubernetes_schemas() {
    let bin = std::env::var("KUBERNETES_VALIDATE").unwrap_or_else(|_| "kubernetes-validate".into());
    let mut files = kustomization_files();
    files.push("deploy/k3s-bundle.yaml".into());

    let mut cmd = Command::new(&bin);
    cmd.current_dir(root()).arg("--strict");
    for v in K8S_VERSIONS {
        cmd.args(["-k", v]);
    }
    cmd.args(&files);
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {bin}: {e}\ninstall it with: pip install kubernetes-validate")
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "kubernetes-validate failed ({}):\n{text}",
        out.status
    );
    // An unknown kind or apiVersion is only a WARN with exit code 0: for built-in kinds that is a
    // typo, so insist that every resource passed for every version.
    assert!(
        !text.contains("WARN") && !text.contains("ERROR"),
        "kubernetes-validate:\n{text}"
    );
    for file in &files {
        for res in yaml_docs(file) {
            let kn = format!(
                "{}/{}",
                str_at(&res, "/kind").to_lowercase(),
                str_at(&res, "/metadata/name")
            );
            for v in K8S_VERSIONS {
                let want = format!("INFO {file} passed for resource {kn} against version {v}");
                assert!(text.contains(&want), "missing `{want}` in:\n{text}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Security posture and consistency
// ---------------------------------------------------------------------------------------------

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected a list, got {v}"))
        .iter()
        .map(|s| s.as_str().expect("list of strings"))
        .collect()
}

#[test]
fn daemonset_security_posture() {
    let resources = kustomization_resources();
    let ds = find(&resources, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];

    assert_eq!(pod["hostNetwork"], true, "NFLOG is read in the host netns");
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    for k in ["hostPID", "hostIPC", "shareProcessNamespace"] {
        assert!(pod[k].is_null() || pod[k] == false, "{k} must not be set");
    }
    assert_eq!(
        pod["automountServiceAccountToken"],
        Value::Null,
        "the daemon needs its token"
    );
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let tolerations = pod["tolerations"].as_array().expect("tolerations");
    assert!(
        tolerations
            .iter()
            .any(|t| t["operator"] == "Exists" && t.get("key").is_none()),
        "must tolerate every taint (control-plane nodes too)"
    );

    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    assert!(pod["initContainers"].is_null() && pod["ephemeralContainers"].is_null());
    let c = &containers[0];
    let sc = &c["securityContext"];
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(strings(&sc["capabilities"]["add"]), ["NET_ADMIN"]);
    assert!(
        sc["privileged"].is_null() || sc["privileged"] == false,
        "privileged must be off"
    );
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(
        sc["runAsUser"], 0,
        "root: see the comment in daemonset.yaml"
    );
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert!(sc["procMount"].is_null() || sc["procMount"] == "Default");

    // hostPath volumes: only /var/log/ulog.
    let volumes = pod["volumes"].as_array().expect("volumes");
    let host_paths: Vec<&str> = volumes
        .iter()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect();
    assert_eq!(host_paths, ["/var/log/ulog"]);
    let ulog = volumes
        .iter()
        .find(|v| v["hostPath"].is_object())
        .expect("ulog volume");
    assert_eq!(ulog["hostPath"]["type"], "DirectoryOrCreate");

    // Resources, env, ports, probes, mounts, args.
    assert_eq!(c["resources"]["requests"]["cpu"], "20m");
    assert_eq!(c["resources"]["requests"]["memory"], "32Mi");
    assert_eq!(c["resources"]["limits"]["cpu"], "500m");
    assert_eq!(c["resources"]["limits"]["memory"], "128Mi");
    let env = c["env"].as_array().expect("env");
    assert!(
        env.iter().any(|e| e["name"] == "NODE_NAME"
            && e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"),
        "NODE_NAME from the downward API"
    );
    let ports = c["ports"].as_array().expect("ports");
    assert!(ports
        .iter()
        .any(|p| p["name"] == "metrics" && p["containerPort"] == 9109));
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert!(
            get["port"] == "metrics" || get["port"] == 9109,
            "{probe} port"
        );
    }
    let mounts: BTreeMap<&str, &str> = c["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .map(|m| (str_at(m, "/mountPath"), str_at(m, "/name")))
        .collect();
    assert!(mounts.contains_key("/var/log/ulog") && mounts.contains_key("/run"));
    let run = volumes
        .iter()
        .find(|v| v["name"] == mounts["/run"])
        .expect("/run volume");
    assert!(run["emptyDir"].is_object(), "/run is an emptyDir");
    assert_eq!(
        strings(&c["args"]),
        ["--config", "/etc/netpol-nflog/netpol-nflogd.toml"]
    );
    // The config file the args name is the ConfigMap key, mounted at /etc/netpol-nflog.
    let cfg_vol = volumes
        .iter()
        .find(|v| v["name"] == mounts["/etc/netpol-nflog"])
        .expect("config volume");
    let cm = find(&resources, "ConfigMap");
    assert_eq!(cfg_vol["configMap"]["name"], cm["metadata"]["name"]);
    assert!(cm["data"]["netpol-nflogd.toml"].is_string());

    let strategy = &ds["spec"]["updateStrategy"];
    assert_eq!(strategy["type"], "RollingUpdate");
    assert_eq!(strategy["rollingUpdate"]["maxUnavailable"], 1);
    assert_eq!(
        pod["serviceAccountName"],
        find(&resources, "ServiceAccount")["metadata"]["name"]
    );
}

#[test]
fn clusterrole_is_read_only_on_exactly_the_watched_resources() {
    let resources = kustomization_resources();
    let role = find(&resources, "ClusterRole");
    let mut granted = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        assert!(rule["resourceNames"].is_null() && rule["nonResourceURLs"].is_null());
        let mut verbs = strings(&rule["verbs"]);
        verbs.sort_unstable();
        assert_eq!(verbs, ["get", "list", "watch"], "rule {rule}");
        for group in strings(&rule["apiGroups"]) {
            for res in strings(&rule["resources"]) {
                assert!(
                    granted.insert((group.to_owned(), res.to_owned())),
                    "duplicate {res}"
                );
            }
        }
    }
    let want: BTreeSet<(String, String)> = [
        ("networking.k8s.io", "networkpolicies"),
        ("", "pods"),
        ("", "namespaces"),
        ("", "services"),
        ("discovery.k8s.io", "endpointslices"),
        ("", "nodes"),
    ]
    .iter()
    .map(|(g, r)| ((*g).to_owned(), (*r).to_owned()))
    .collect();
    assert_eq!(granted, want);
    assert!(role["aggregationRule"].is_null());

    let binding = find(&resources, "ClusterRoleBinding");
    let sa = find(&resources, "ServiceAccount");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    let subjects = binding["subjects"].as_array().expect("subjects");
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0]["kind"], "ServiceAccount");
    assert_eq!(subjects[0]["name"], sa["metadata"]["name"]);
    assert_eq!(subjects[0]["namespace"], sa["metadata"]["namespace"]);
    // No other RBAC objects sneak in.
    for r in &resources {
        let kind = str_at(r, "/kind");
        if kind.ends_with("Role") || kind.ends_with("RoleBinding") {
            assert!(
                r == role || r == binding,
                "unexpected RBAC object {}",
                kind_name(r)
            );
        }
    }
}

/// The bundle for K3s's manifests folder holds exactly the kustomization's resources, identical
/// field for field (regenerate with deploy/gen-bundle.sh).
#[test]
fn k3s_bundle_equals_kustomization() {
    let by_id = |docs: Vec<Value>| -> BTreeMap<String, Value> {
        let mut map = BTreeMap::new();
        for d in docs {
            let id = kind_name(&d);
            assert!(map.insert(id.clone(), d).is_none(), "{id} appears twice");
        }
        map
    };
    let kust = by_id(kustomization_resources());
    let bundle = by_id(yaml_docs("deploy/k3s-bundle.yaml"));
    assert_eq!(
        kust.keys().collect::<Vec<_>>(),
        bundle.keys().collect::<Vec<_>>(),
        "k3s-bundle.yaml and kustomization.yaml differ in resources; run deploy/gen-bundle.sh"
    );
    for (id, res) in &kust {
        // Not assert_eq!: printing two whole DaemonSets hides the point.
        assert!(
            res == &bundle[id],
            "{id} differs in k3s-bundle.yaml; run deploy/gen-bundle.sh"
        );
    }
    // Namespaced resources all go to the project's namespace.
    let ns =
        find(&kust.values().cloned().collect::<Vec<_>>(), "Namespace")["metadata"]["name"].clone();
    for res in kust.values() {
        let kind = str_at(res, "/kind");
        if !matches!(kind, "Namespace" | "ClusterRole" | "ClusterRoleBinding") {
            assert_eq!(res["metadata"]["namespace"], ns, "{}", kind_name(res));
        }
    }
    // The PodMonitor example needs CRDs, so it must stay out of both.
    assert!(!kust.keys().any(|k| k.starts_with("PodMonitor/")));
}

/// The ConfigMap carries config/netpol-nflogd.toml verbatim, once that file exists.
#[test]
fn configmap_matches_config_file() {
    let cfg = root().join("config/netpol-nflogd.toml");
    let cm = yaml_one("deploy/configmap.yaml");
    let data = str_at(&cm, "/data/netpol-nflogd.toml");
    match std::fs::read_to_string(&cfg) {
        Ok(toml) => assert_eq!(
            data.trim_end(),
            toml.trim_end(),
            "deploy/configmap.yaml is stale; run deploy/gen-bundle.sh"
        ),
        Err(_) => assert!(
            data.contains("PLACEHOLDER"),
            "configmap without a config file"
        ),
    }
}

/// Service, PodMonitor, Flow and DaemonSet agree on the labels and the metrics port.
#[test]
fn selectors_match_the_daemonset_pods() {
    let resources = kustomization_resources();
    let ds = find(&resources, "DaemonSet");
    let pod_labels = ds["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .expect("labels");
    let selected_by = |sel: &Value, what: &str| {
        for (k, v) in sel
            .as_object()
            .unwrap_or_else(|| panic!("{what}: selector"))
        {
            assert_eq!(
                pod_labels.get(k),
                Some(v),
                "{what} selects {k}={v}, pods lack it"
            );
        }
    };
    selected_by(&ds["spec"]["selector"]["matchLabels"], "DaemonSet");
    assert_eq!(pod_labels["app.kubernetes.io/name"], "netpol-nflog");

    let svc = find(&resources, "Service");
    selected_by(&svc["spec"]["selector"], "Service");
    assert_eq!(svc["spec"]["clusterIP"], "None");
    let port = &svc["spec"]["ports"][0];
    assert_eq!(port["name"], "metrics");
    assert_eq!(port["port"], 9109);

    let pm = yaml_one("deploy/podmonitor.yaml");
    assert_eq!(pm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(pm["metadata"]["namespace"], ds["metadata"]["namespace"]);
    selected_by(&pm["spec"]["selector"]["matchLabels"], "PodMonitor");
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["port"], "metrics");

    let flow = yaml_one("parsers/rancher-logging/flow.yaml");
    assert_eq!(flow["metadata"]["namespace"], ds["metadata"]["namespace"]);
    selected_by(&flow["spec"]["match"][0]["select"]["labels"], "Flow");
    let container = &ds["spec"]["template"]["spec"]["containers"][0]["name"];
    assert_eq!(
        &flow["spec"]["match"][0]["select"]["container_names"][0],
        container
    );
}

// ---------------------------------------------------------------------------------------------
// Fluent Bit / fluentd parsers
// ---------------------------------------------------------------------------------------------

/// `[PARSER]` sections of a Fluent Bit classic parsers file, as key → value maps (keys lowercased,
/// as Fluent Bit compares them case-insensitively).
fn fluent_bit_parsers() -> BTreeMap<String, BTreeMap<String, String>> {
    let text = read("parsers/fluent-bit-parsers.conf");
    let mut parsers = BTreeMap::new();
    let mut current: Option<BTreeMap<String, String>> = None;
    let mut finish = |sect: Option<BTreeMap<String, String>>| {
        if let Some(s) = sect {
            let name = s.get("name").expect("[PARSER] without Name").clone();
            assert!(
                parsers.insert(name.clone(), s).is_none(),
                "parser {name} twice"
            );
        }
    };
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if t.starts_with('[') {
            finish(current.take());
            assert_eq!(t, "[PARSER]", "unexpected section");
            current = Some(BTreeMap::new());
            continue;
        }
        let (k, v) = t.split_once(char::is_whitespace).expect("key value");
        let sect = current.as_mut().expect("key outside a section");
        sect.insert(k.to_lowercase(), v.trim().to_owned());
    }
    finish(current);
    parsers
}

fn syslogemu_regex_source() -> String {
    let parsers = fluent_bit_parsers();
    let p = parsers
        .get("netpol_syslogemu")
        .expect("parser netpol_syslogemu");
    assert_eq!(p["format"], "regex");
    p["regex"].clone()
}

/// Compiled as Fluent Bit does: Onigmo, Ruby syntax, UTF-8.
fn syslogemu_regex() -> &'static Regex {
    static RX: OnceLock<Regex> = OnceLock::new();
    RX.get_or_init(|| {
        let src = syslogemu_regex_source();
        Regex::with_options(&src, RegexOptions::REGEX_OPTION_NONE, Syntax::ruby())
            .unwrap_or_else(|e| panic!("netpol_syslogemu does not compile: {e}"))
    })
}

/// The named captures of `line`, or None when it does not match: the groups that took part in the
/// match, empty ones included (`OUT=` gives `out: ""`). This is what fluentd records; Fluent Bit
/// additionally drops the empty ones (Skip_Empty_Values On). expected.json uses these semantics.
pub(crate) fn extract(line: &str) -> Option<BTreeMap<String, String>> {
    let rx = syslogemu_regex();
    let caps = rx.captures(line)?;
    let mut fields = BTreeMap::new();
    rx.foreach_name(|name, groups| {
        assert_eq!(groups.len(), 1, "capture name {name} is used twice");
        if let Some((b, e)) = caps.pos(groups[0] as usize) {
            fields.insert(name.to_owned(), line[b..e].to_owned());
        }
        true
    });
    Some(fields)
}

fn sample_lines() -> Vec<String> {
    let text = read("tests/fixtures/syslogemu-samples.log");
    // Only the newline is stripped: the trailing space belongs to the line (ulogd prints it).
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn syslogemu_regex_has_only_named_groups() {
    // Fluent Bit and fluentd differ in whether plain `( )` groups capture once named groups
    // exist (ONIG_OPTION_CAPTURE_GROUP); with only `(?:` and `(?<name>` both behave the same.
    let src = syslogemu_regex_source();
    let bytes = src.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'[' => {
                // Skip a bracket expression, where `(` is literal.
                while i < bytes.len() && bytes[i] != b']' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'(' => assert_eq!(bytes.get(i + 1), Some(&b'?'), "unnamed group at byte {i}"),
            _ => {}
        }
        i += 1;
    }
    assert!(
        src.starts_with('^') && src.ends_with('$'),
        "anchor the regex"
    );
    assert!(
        !src.contains('#'),
        "a '#' could be taken for a comment by config loaders"
    );
}

#[test]
fn syslogemu_regex_matches_every_sample_line() {
    let lines = sample_lines();
    assert!(lines.len() >= 30, "fixture too small: {}", lines.len());
    let failed: Vec<&String> = lines.iter().filter(|l| extract(l).is_none()).collect();
    assert!(
        failed.is_empty(),
        "lines the regex does not match:\n{failed:#?}"
    );
    for line in &lines {
        let f = extract(line).expect("matched above");
        for key in ["time", "host", "prefix", "mac", "mark"] {
            assert!(f.contains_key(key), "{key} missing for {line:?}: {f:?}");
        }
    }
}

#[test]
fn syslogemu_regex_extracts_exact_fields() {
    let expected: Vec<Value> =
        serde_json::from_str(&read("tests/fixtures/syslogemu-samples.expected.json"))
            .expect("expected.json is a JSON list");
    assert!(expected.len() >= 20, "too few expectations");
    let samples: BTreeSet<String> = sample_lines().into_iter().collect();
    let mut errors = Vec::new();
    for case in &expected {
        let line = str_at(case, "/line");
        assert!(
            samples.contains(line),
            "expected.json line not in the .log fixture: {line:?}"
        );
        let want: BTreeMap<String, String> = case["fields"]
            .as_object()
            .expect("fields object")
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().expect("field values are strings").to_owned(),
                )
            })
            .collect();
        match extract(line) {
            None => errors.push(format!("no match: {line:?}")),
            Some(got) if got != want => {
                let diff: Vec<String> = want
                    .keys()
                    .chain(got.keys())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .filter(|k| want.get(*k) != got.get(*k))
                    .map(|k| format!("  {k}: want {:?}, got {:?}", want.get(k), got.get(k)))
                    .collect();
                errors.push(format!("{line:?}\n{}", diff.join("\n")));
            }
            Some(_) => {}
        }
    }
    assert!(
        errors.is_empty(),
        "field mismatches:\n{}",
        errors.join("\n")
    );
}

#[test]
fn syslogemu_regex_rejects_other_formats() {
    for line in [
        // kernel LOG target via syslog: no MAC= glued after a separator, TOS with 0x, no MARK
        "Nov 27 20:59:32 node kernel: [1.0] REF IN=lo OUT= MAC=00:00 SRC=1.1.1.1 DST=2.2.2.2 LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=1 DF PROTO=TCP SPT=1 DPT=2 WINDOW=1 RES=0x00 SYN URGP=0 ",
        // a netpol-nflogd JSON record
        r#"{"timestamp":"2026-11-27T20:59:32.686935+00:00","action":"drop"}"#,
        // missing MARK
        "Nov 27 20:59:32 ulogd-ref REF IN=lo OUT= MAC= ",
    ] {
        assert!(extract(line).is_none(), "should not match: {line:?}");
    }
}

/// fluentd (Logging Operator ClusterFlow) uses the same Onigmo regex: keep them identical.
#[test]
fn clusterflow_regex_equals_fluent_bit_regex() {
    let flow = yaml_one("parsers/rancher-logging/clusterflow.yaml");
    assert_eq!(flow["kind"], "ClusterFlow");
    let parse = &flow["spec"]["filters"]
        .as_array()
        .expect("filters")
        .iter()
        .find(|f| f["parser"].is_object())
        .expect("a parser filter")["parser"]["parse"];
    assert_eq!(parse["type"], "regexp");
    let expr = str_at(parse, "/expression");
    let inner = expr
        .strip_prefix('/')
        .and_then(|e| e.strip_suffix('/'))
        .expect("fluentd expression is /regex/");
    assert_eq!(inner, syslogemu_regex_source());
    assert_eq!(parse["time_key"], "time");
    let fb = &fluent_bit_parsers()["netpol_syslogemu"];
    assert_eq!(parse["time_format"], fb["time_format"].as_str());
    // Same integer casts (fluentd: comma-separated, Fluent Bit: space-separated).
    let fd_types: Vec<&str> = str_at(parse, "/types").split(',').collect();
    let fb_types: Vec<&str> = fb["types"].split_whitespace().collect();
    assert_eq!(fd_types, fb_types);

    let tailer = yaml_one("parsers/rancher-logging/hosttailer.yaml");
    assert_eq!(tailer["kind"], "HostTailer");
    let ft = &tailer["spec"]["fileTailers"][0];
    assert_eq!(ft["path"], "/var/log/ulog/syslogemu.log");
    assert_eq!(
        flow["spec"]["match"][0]["select"]["container_names"][0],
        ft["name"]
    );
    assert_eq!(
        flow["metadata"]["namespace"],
        tailer["metadata"]["namespace"]
    );
}

/// Every Time_Key of the Fluent Bit parsers is a capture of the regex / a JSON key, and the
/// example pipeline uses the parser names that exist.
#[test]
fn fluent_bit_config_is_consistent() {
    let parsers = fluent_bit_parsers();
    let sys = &parsers["netpol_syslogemu"];
    assert_eq!(sys["time_key"], "time");
    assert_eq!(sys["time_format"], "%b %e %H:%M:%S");
    // Unmatched groups reach Fluent Bit's parser as empty values; this keeps them out of records
    // (and keeps Types from casting them to 0).
    assert_eq!(sys["skip_empty_values"].to_lowercase(), "on");
    let names: BTreeSet<String> = {
        let mut n = BTreeSet::new();
        syslogemu_regex().foreach_name(|name, _| {
            n.insert(name.to_owned());
            true
        });
        n
    };
    for field in sys["types"].split_whitespace() {
        let (name, ty) = field.split_once(':').expect("name:type");
        assert!(names.contains(name), "Types names unknown capture {name}");
        assert_eq!(ty, "integer");
    }
    for want in [
        "time",
        "host",
        "prefix",
        "policy_namespace",
        "policy_name",
        "in",
        "out",
        "mac",
        "src",
        "dst",
        "len",
        "tos",
        "prec",
        "ttl",
        "id",
        "flags",
        "frag",
        "frag_id",
        "tc",
        "hoplimit",
        "flowlbl",
        "proto",
        "incomplete",
        "spt",
        "dpt",
        "seq",
        "ack",
        "window",
        "tcp_flags",
        "urgp",
        "udp_len",
        "icmp_type",
        "icmp_code",
        "icmp_id",
        "icmp_seq",
        "parameter",
        "gateway",
        "mtu",
        "uid",
        "gid",
        "mark",
    ] {
        assert!(names.contains(want), "regex lacks capture {want}");
    }

    let json = &parsers["netpol_json"];
    assert_eq!(json["format"], "json");
    assert_eq!(json["time_key"], "timestamp");
    assert_eq!(json["time_format"], "%Y-%m-%dT%H:%M:%S.%L%z");
    assert_eq!(json["time_keep"].to_lowercase(), "on");

    let conf = read("parsers/fluent-bit.conf");
    assert!(conf.contains("Parsers_File fluent-bit-parsers.conf"));
    assert!(conf.contains("Path              /var/log/ulog/syslogemu.log"));
    assert!(conf.contains("Parser            netpol_syslogemu"));
    assert!(conf.contains("Parser        netpol_json"));
}

/// What Fluent Bit's strptime (src/flb_strptime.c, plus its own %L handling) accepts for each
/// conversion used by our formats, as a regex. Fluent Bit itself cannot run here; this encodes
/// the reading of its source so that a format change is checked against the strings we produce.
fn flb_time_format_regex(format: &str) -> Regex {
    let mut rx = String::from("^");
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            if c.is_whitespace() {
                // strptime: white space in the format matches any run of white space (or none).
                rx.push_str("\\s*");
            } else {
                rx.push_str(&onig_escape(c));
            }
            continue;
        }
        let conv = chars.next().expect("dangling %");
        rx.push_str(match conv {
            'Y' => "[0-9]{4}",
            'm' | 'd' | 'H' | 'M' | 'S' => "[0-9]{2}",
            // %e: an optional leading space, then one or two digits.
            'e' => " ?[0-9]{1,2}",
            'b' => "(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)",
            // %L: fractional seconds, up to 9 digits (nanoseconds).
            'L' => "[0-9]{1,9}",
            // %z: Z, UT/UTC, GMT, [+-]hh, [+-]hhmm, [+-]hh:mm (and US zone names, unused here).
            'z' => "(?:Z|UTC?|GMT|[+-][0-9]{2}(?::?[0-9]{2})?)",
            other => panic!("conversion %{other} not modelled; extend flb_time_format_regex"),
        });
    }
    rx.push('$');
    Regex::with_options(&rx, RegexOptions::REGEX_OPTION_NONE, Syntax::ruby()).expect("format rx")
}

fn onig_escape(c: char) -> String {
    if c.is_ascii_alphanumeric() {
        c.to_string()
    } else {
        format!("\\x{:02x}", c as u32)
    }
}

#[test]
fn time_formats_accept_what_the_writers_emit() {
    let parsers = fluent_bit_parsers();

    let json = flb_time_format_regex(&parsers["netpol_json"]["time_format"]);
    // netpol-nflogd: RFC 3339, microseconds, numeric offset with a colon (also in UTC).
    for ts in [
        "2026-11-27T20:59:32.686935+00:00",
        "2026-11-28T02:30:19.000001+05:30",
        "2026-11-27T12:59:32.686935-08:00",
        "2026-11-27T20:59:32.686935+0000",
        "2026-11-27T20:59:32.686935Z",
    ] {
        assert!(json.is_match(ts), "netpol_json Time_Format rejects {ts}");
    }
    // ulogd2's JSON output omits the offset in UTC; %z then fails. The daemon must not copy that.
    assert!(!json.is_match("2026-11-27T20:59:32.686935"));

    let sys = flb_time_format_regex(&parsers["netpol_syslogemu"]["time_format"]);
    for line in sample_lines() {
        let fields = extract(&line).expect("sample matches");
        assert!(
            sys.is_match(&fields["time"]),
            "Time_Format rejects {:?}",
            fields["time"]
        );
    }
    assert!(sys.is_match("Nov  7 09:05:03"));
}

#[test]
fn flb_time_format_model_is_sane() {
    // Guards the model above against being too permissive.
    let rx = flb_time_format_regex("%Y-%m-%dT%H:%M:%S.%L%z");
    assert!(!rx.is_match("2026-11-27 20:59:32.686935+00:00"));
    assert!(!rx.is_match("2026-11-27T20:59:32+00:00"));
    assert!(!rx.is_match("2026-11-27T20:59:32.686935+0"));
    assert!(Path::new(&root())
        .join("parsers/fluent-bit-parsers.conf")
        .exists());
}
