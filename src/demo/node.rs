//! The K3s-shaped node, built for the fixed [`scenario`]: a node network namespace with the
//! bridge `cni0` (bridge netfilter on, so bridged pod traffic crosses iptables' FORWARD as
//! kube-router expects), one namespace per pod on a veth, kube-router's firewall for the
//! scenario's policies (the K3s fork's `pod.go`/`policy.go` shape, the one `tests/it/support/k3s.rs`
//! documents in detail), and a kube-proxy-style DNAT for the ClusterIP.
//!
//! ```text
//!  pod netns (eth0 10.42.0.N/24) ─veth─┐
//!  pod netns …                   ─veth─┴─ cni0 10.42.0.1/24   node netns (daemon, API, rules)
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::cleanup;
use super::scenario::{self, Policy, NODE_IP, PODS, POLICIES, SERVICE};
use crate::attribute::index::safe_join;

/// Runs a command, failing with its stderr.
pub fn run(cmd: &mut Command) -> Result<()> {
    run_stdin(cmd, None)
}

fn run_stdin(cmd: &mut Command, input: Option<&str>) -> Result<()> {
    let name = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {name} (is it installed?)"))?;
    if let (Some(text), Some(mut pipe)) = (input, child.stdin.take()) {
        pipe.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        let args: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        bail!(
            "`{} {}` failed: {}",
            cmd.get_program().to_string_lossy(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn in_ns(ns: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]);
    c
}

/// Runs `f` on a thread that entered the network namespace `ns`: sockets it creates live there
/// (and keep living there when handed back).
pub fn within<T: Send>(ns: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let file = std::fs::File::open(format!("/run/netns/{ns}"))
        .with_context(|| format!("open network namespace {ns}"))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            rustix::thread::move_into_link_name_space(
                file.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .with_context(|| format!("setns into {ns}"))?;
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("a thread in {ns} panicked"))?
    })
}

pub struct Node {
    pub ns: String,
    /// Pod app label → its network namespace.
    pub pod_ns: BTreeMap<&'static str, String>,
}

/// Checks the tools the node needs, before anything is created.
pub fn check_tools() -> Result<()> {
    for (tool, arg, package) in [
        ("ip", "-V", "iproute2"),
        ("iptables-restore", "--version", "iptables"),
        ("ipset", "version", "ipset"),
    ] {
        let ok = Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            bail!("the demo needs `{tool}` (Debian package {package}); `bash .ci/setup minimal` installs it");
        }
    }
    Ok(())
}

impl Node {
    pub fn build(tag: &str) -> Result<Node> {
        let ns = format!("{tag}-node");
        cleanup::add_netns(&ns)?;
        ip_batch(&ns, "link set lo up\nlink add cni0 type bridge\naddr add 10.42.0.1/24 dev cni0\nlink set cni0 up\n")?;
        bridge_netfilter(&ns)?;
        run(in_ns(&ns).args([
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
            "net.ipv4.conf.all.send_redirects=0",
            "net.ipv4.conf.cni0.send_redirects=0",
        ]))?;
        let mut pod_ns = BTreeMap::new();
        for (i, p) in PODS.iter().enumerate() {
            let pns = format!("{tag}-{}", p.app);
            cleanup::add_netns(&pns)?;
            let host_if = format!("veth{i}");
            run(Command::new("ip").args([
                "link", "add", &host_if, "netns", &ns, "type", "veth", "peer", "name", "eth0",
                "netns", &pns,
            ]))?;
            ip_batch(
                &ns,
                &format!("link set {host_if} master cni0\nlink set {host_if} up\n"),
            )?;
            ip_batch(
                &pns,
                &format!("link set lo up\naddr add {}/24 dev eth0\nlink set eth0 up\nroute add default via {NODE_IP}\n", p.ip),
            )?;
            pod_ns.insert(p.app, pns);
        }
        let node = Node { ns, pod_ns };
        node.load_firewall()?;
        Ok(node)
    }

    fn load_firewall(&self) -> Result<()> {
        let (filter, sets) = firewall();
        run_stdin(in_ns(&self.ns).args(["ipset", "restore"]), Some(&sets))
            .context("loading kube-router's ipsets (kernel feature: ip_set, hash:ip)")?;
        run_stdin(in_ns(&self.ns).arg("iptables-restore"), Some(&filter)).context(
            "loading kube-router's filter rules (kernel features: xt_physdev, xt_set, xt_mark, \
             xt_limit, xt_conntrack, xt_addrtype, xt_comment, xt_NFLOG, REJECT)",
        )?;
        run_stdin(
            in_ns(&self.ns).args(["iptables-restore", "--noflush"]),
            Some(&nat()),
        )
        .context("loading the ClusterIP DNAT (kernel features: iptable_nat, xt_DNAT)")?;
        Ok(())
    }

    /// Sends one flow from its pod; `Ok(true)` if every attempt connected.
    pub fn send(&self, flow: &scenario::Flow) -> Result<bool> {
        let dst: SocketAddr = format!("{}:{}", flow.dest(), flow.port).parse()?;
        within(&self.pod_ns[flow.from], || {
            let mut connected = true;
            for _ in 0..flow.times {
                connected &= TcpStream::connect_timeout(&dst, Duration::from_millis(700)).is_ok();
            }
            Ok(connected)
        })
    }

    /// A listener in a pod (its socket lives in the pod's namespace; the kernel completes
    /// handshakes without `accept`).
    pub fn listen(&self, app: &str, port: u16) -> Result<TcpListener> {
        let addr = format!("{}:{port}", scenario::pod(app).ip);
        within(&self.pod_ns[app], || {
            TcpListener::bind(&addr).with_context(|| format!("listen on {addr}"))
        })
    }
}

fn ip_batch(ns: &str, cmds: &str) -> Result<()> {
    run_stdin(
        Command::new("ip").args(["-n", ns, "-batch", "-"]),
        Some(cmds),
    )
}

/// `net.bridge.bridge-nf-call-iptables=1` in the node (per network namespace since Linux 5.3);
/// loads br_netfilter if its sysctls are missing.
fn bridge_netfilter(ns: &str) -> Result<()> {
    let path = "/proc/sys/net/bridge/bridge-nf-call-iptables";
    let set = || run(in_ns(ns).args(["sh", "-c", &format!("echo 1 > {path}")]));
    if set().is_err() {
        let _ = Command::new("modprobe")
            .arg("br_netfilter")
            .stderr(Stdio::null())
            .status();
        set().context(
            "kernel feature missing: bridge netfilter (br_netfilter): cannot set \
             net.bridge.bridge-nf-call-iptables=1, so traffic between pods on the bridge would bypass iptables",
        )?;
    }
    Ok(())
}

// ---- kube-router's firewall --------------------------------------------------------------------

/// A short stable hash for chain and set names (kube-router uses sha256 + base32; the names
/// never reach NFLOG).
fn hash(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:016X}", h)
}

fn pod_chain(p: &scenario::Pod) -> String {
    format!("KUBE-POD-FW-{}", hash(&format!("{}{}", p.ns, p.name)))
}

fn policy_chain(pol: &Policy) -> String {
    format!("KUBE-NWPLCY-{}", hash(&format!("{}{}", pol.ns, pol.name)))
}

/// `(iptables-restore filter table, ipset restore input)`.
pub fn firewall() -> (String, String) {
    let mut sets = String::new();
    let mut set = |name: String, ips: Vec<&str>| {
        let _ = writeln!(
            sets,
            "create {name} hash:ip family inet hashsize 1024 maxelem 65536 timeout 0"
        );
        for ip in ips {
            let _ = writeln!(sets, "add {name} {ip} timeout 0");
        }
        name
    };
    let mut chains = vec![
        "KUBE-ROUTER-INPUT".to_string(),
        "KUBE-ROUTER-FORWARD".into(),
        "KUBE-ROUTER-OUTPUT".into(),
        "KUBE-NWPLCY-DEFAULT".into(),
    ];
    let mut rules = Vec::new();

    // policy.go: one chain per policy; per accept rule and port MARK, RETURN, then the NFLOG
    // rule with the policy's limit (from its annotations), after each accept rule.
    for pol in POLICIES {
        let chain = policy_chain(pol);
        chains.push(chain.clone());
        let targets: Vec<&str> = PODS
            .iter()
            .filter(|p| pol.selects(p))
            .map(|p| p.ip)
            .collect();
        let (dir, here) = if pol.egress {
            ("egress", "src")
        } else {
            ("ingress", "dst")
        };
        let target_set = set(
            format!(
                "KUBE-{}-{}",
                here.to_uppercase(),
                &hash(&format!("{}{}", pol.ns, pol.name))[..12]
            ),
            targets,
        );
        let get = |k: &str, d: &'static str| {
            pol.annotations
                .iter()
                .find(|(a, _)| *a == k)
                .map_or(d, |(_, v)| *v)
        };
        let limit = get("kube-router.io/netpol-nflog-limit", "10/minute");
        let burst = get("kube-router.io/netpol-nflog-limit-burst", "10");
        for (idx, rule) in pol.rules.iter().enumerate() {
            let peers: Vec<&str> = PODS
                .iter()
                .filter(|p| p.ns == pol.ns && p.app == rule.peer_app)
                .map(|p| p.ip)
                .collect();
            let peer_set = set(
                format!(
                    "KUBE-{}-{}",
                    if pol.egress { "DST" } else { "SRC" },
                    &hash(&format!("{}{}{dir}rule{idx}", pol.ns, pol.name))[..12]
                ),
                peers,
            );
            let (src, dst) = if pol.egress {
                (&target_set, &peer_set)
            } else {
                (&peer_set, &target_set)
            };
            for port in rule.tcp_ports {
                let m = format!(
                    "-A {chain} -m comment --comment \"rule to ACCEPT traffic from source pods to dest pods selected by policy name {} namespace {}\" \
                     -m set --match-set {src} src -m set --match-set {dst} dst -p tcp --dport {port}",
                    pol.name, pol.ns
                );
                rules.push(format!("{m} -j MARK --set-xmark 0x10000/0x10000"));
                rules.push(format!("{m} -m mark --mark 0x10000/0x10000 -j RETURN"));
                rules.push(format!(
                    "-A {chain} -m comment --comment \"rule to log dropped traffic\" -m limit --limit {limit} --limit-burst {burst} \
                     -m mark ! --mark 0x10000/0x10000 -j NFLOG --nflog-group 100 --nflog-prefix \"DROP by policy {}\"",
                    safe_join(pol.ns, pol.name)
                ));
            }
        }
    }

    // pod.go: one chain per pod (rules inserted at the top, so listed here in final order),
    // the jumps into it, and the empty-prefix NFLOG rule + REJECT at its end.
    let mut jumps = Vec::new();
    for p in PODS {
        let fw = pod_chain(p);
        chains.push(fw.clone());
        let ip = p.ip;
        rules.push(format!("-A {fw} -m comment --comment \"rule for stateful firewall for pod\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"));
        rules.push(format!("-A {fw} -m comment --comment \"rule to drop invalid state for pod\" -m conntrack --ctstate INVALID -j DROP"));
        rules.push(format!("-A {fw} -m comment --comment \"rule to permit the traffic traffic to pods when source is the pod's local node\" -m addrtype --src-type LOCAL -d {ip} -j ACCEPT"));
        let selecting: Vec<&Policy> = POLICIES.iter().filter(|pol| pol.selects(p)).collect();
        if !selecting.iter().any(|pol| pol.egress) {
            rules.push(format!("-A {fw} -s {ip} -m comment --comment \"run through default egress network policy chain\" -j KUBE-NWPLCY-DEFAULT"));
        }
        if !selecting.iter().any(|pol| !pol.egress) {
            rules.push(format!("-A {fw} -d {ip} -m comment --comment \"run through default ingress network policy chain\" -j KUBE-NWPLCY-DEFAULT"));
        }
        for pol in selecting.iter().rev() {
            let side = if pol.egress { "-s" } else { "-d" };
            rules.push(format!(
                "-A {fw} {side} {ip} -m comment --comment \"run through nw policy {}\" -j {}",
                pol.name,
                policy_chain(pol)
            ));
        }
        let who = format!("POD name:{} namespace: {}", p.name, p.ns);
        rules.push(format!("-A {fw} -m comment --comment \"rule to log dropped traffic {who}\" -m mark ! --mark 0x10000/0x10000 -j NFLOG --nflog-group 100 -m limit --limit 10/minute --limit-burst 10"));
        rules.push(format!("-A {fw} -m comment --comment \"rule to REJECT traffic destined for {who}\" -m mark ! --mark 0x10000/0x10000 -j REJECT"));
        rules.push(format!("-A {fw} -j MARK --set-mark 0/0x10000"));
        rules.push(format!("-A {fw} -m comment --comment \"set mark to ACCEPT traffic that comply to network policies\" -j MARK --set-mark 0x20000/0x20000"));
        let to = format!(
            "-m comment --comment \"rule to jump traffic destined to {who} to chain {fw}\""
        );
        let from =
            format!("-m comment --comment \"rule to jump traffic from {who} to chain {fw}\"");
        jumps.push(format!("-A KUBE-ROUTER-FORWARD {to} -d {ip} -j {fw}"));
        jumps.push(format!("-A KUBE-ROUTER-OUTPUT {to} -d {ip} -j {fw}"));
        jumps.push(format!(
            "-A KUBE-ROUTER-FORWARD -m physdev --physdev-is-bridged {to} -d {ip} -j {fw}"
        ));
        for c in [
            "KUBE-ROUTER-INPUT",
            "KUBE-ROUTER-FORWARD",
            "KUBE-ROUTER-OUTPUT",
        ] {
            jumps.push(format!("-A {c} {from} -s {ip} -j {fw}"));
        }
        jumps.push(format!(
            "-A KUBE-ROUTER-FORWARD -m physdev --physdev-is-bridged {from} -s {ip} -j {fw}"
        ));
    }

    let mut t =
        String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for c in &chains {
        let _ = writeln!(t, ":{c} - [0:0]");
    }
    // network_policy_controller.go: the top-level jumps and the explicit accept of marked traffic.
    for (builtin, custom) in [
        ("INPUT", "KUBE-ROUTER-INPUT"),
        ("FORWARD", "KUBE-ROUTER-FORWARD"),
        ("OUTPUT", "KUBE-ROUTER-OUTPUT"),
    ] {
        let _ = writeln!(
            t,
            "-A {builtin} -m comment --comment \"kube-router netpol - {}\" -j {custom}",
            &hash(builtin)[..16]
        );
        let _ = writeln!(t, "-A {builtin} -m comment --comment \"KUBE-ROUTER rule to explicitly ACCEPT traffic that comply to network policies\" -m mark --mark 0x20000/0x20000 -j ACCEPT");
    }
    t += "-A KUBE-ROUTER-INPUT -m comment --comment \"allow traffic to primary/secondary cluster IP range\" -d 10.43.0.0/16 -j RETURN\n";
    t += "-A KUBE-NWPLCY-DEFAULT -m comment --comment \"rule to mark traffic matching a network policy\" -j MARK --set-xmark 0x10000/0x10000\n";
    for r in rules.iter().chain(&jumps) {
        t += r;
        t.push('\n');
    }
    t += "COMMIT\n";
    (t, sets)
}

/// kube-proxy's shape for the ClusterIP: KUBE-SERVICES → KUBE-SVC-… → KUBE-SEP-… DNAT.
fn nat() -> String {
    let (ns, name, ip, port) = SERVICE;
    let db = scenario::pod("db").ip;
    let h = &hash(&format!("{ns}/{name}"))[..16];
    format!(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-{h} - [0:0]\n:KUBE-SEP-{h} - [0:0]\n\
         -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A KUBE-SERVICES -d {ip}/32 -p tcp -m comment --comment \"{ns}/{name} cluster IP\" -m tcp --dport {port} -j KUBE-SVC-{h}\n\
         -A KUBE-SVC-{h} -j KUBE-SEP-{h}\n\
         -A KUBE-SEP-{h} -p tcp -m tcp -j DNAT --to-destination {db}:{port}\n\
         COMMIT\n"
    )
}
