//! `nflog-tail`: watch the packets NetworkPolicies drop, live, next to a running `netpol-nflogd`
//! (which holds the NFLOG group), directly on the group, or from a file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use netpol_nflog::tail::{
    self, client, ColorChoice, Error, Filter, Options, OutputFormat, SourceSpec,
};

const AFTER_HELP: &str = "\
Filters combine: different filters must all match (AND); the same filter given twice matches
either value (OR). Namespace, pod, node, IP, port and class filters match either side of the
packet.

Examples:
  nflog-tail                                   follow the daemon's events
  nflog-tail --last 100 --namespace db         the last 100 events touching namespace db, then live
  nflog-tail --policy default/deny-db --port 5432
  nflog-tail --pod web --direction egress      pods whose name starts with \"web\", outbound drops
  nflog-tail --ip 10.42.0.0/16 --protocol udp --port 53 --port 5353
  nflog-tail --service shop/postgres           clients aiming at the Service shop/postgres
  nflog-tail --from-class public               drops of traffic from the internet
  nflog-tail --node node-2                     node-2's own address (kubelet probes) or its pods
  nflog-tail -o json | jq .                    the daemon's JSON records
  nflog-tail -i                                full-screen view with top tables
  nflog-tail -w drops.pcap --namespace db      save matching packets as an NFLOG pcap (tcpdump/tshark)
  nflog-tail --direct -i                       no daemon on this node: read NFLOG group 100 itself
  nflog-tail -r capture.pcap -o syslogemu      replay `tcpdump -i nflog:100 -w capture.pcap`
  nflog-tail -r /var/log/ulog/syslogemu.log --prefix 'DROP by policy'

Interactive keys (-i): p/space pause, / edit the filter (same words as the flags: port=5432
ns=default prefix=\"DROP by\"; Ctrl-A/E/U/K/W and arrows edit as in a shell), c clear, t/Tab
switch the top table, arrows scroll, q/Esc quit. Every filter flag has its word: service=shop/db
node=node-2 class=public from-class=pod to-class=service. SIGINT or SIGTERM restores the terminal first.

Files (-r): NFLOG pcaps (linktype 239, either byte order), JSON lines (the tail socket's or the
daemon's JSON file) and syslogemu lines (the daemon's or ulogd2's) are told apart by content;
- reads standard input. A pcap carries interface indexes, not names: replayed lines print
IN=if3 OUT=if1 where ulogd2 printed the names (and nothing can know the pods).

Output: -o compact (default) is for people; -o syslogemu is byte-compatible with ulogd2's
syslogemu.log; -o json prints the daemon's JSON records (its JSON file schema). Colours on a
terminal unless NO_COLOR is set; control characters and escape sequences in prefixes and names
are always shown escaped (\\x1b) on a terminal.

Exit codes: 0 ok (also when the reader of standard output goes away), 1 runtime failure
(no daemon with --no-reconnect, NFLOG group taken, malformed file), 2 bad flags or filters.";

/// Watch the packets Kubernetes NetworkPolicies drop, live: from netpol-nflogd's tail socket
/// (the daemon holds NFLOG group 100, so nothing else can read it), directly from the NFLOG
/// group on nodes without the daemon, or from a pcap/syslogemu/JSON file.
#[derive(Parser, Debug)]
#[command(version, about, long_about, after_help = AFTER_HELP)]
struct Cli {
    /// The daemon's tail socket.
    #[arg(short = 'S', long, env = "NETPOL_NFLOG_TAIL_SOCKET", default_value = client::DEFAULT_SOCKET)]
    socket: PathBuf,

    /// First print the most recent N events (the daemon's ring; for files, the last N).
    #[arg(short = 'n', long, value_name = "N", default_value_t = 0)]
    last: usize,

    /// Stop after N matching events.
    #[arg(short = 'c', long, value_name = "N")]
    count: Option<u64>,

    /// Exit with an error when the daemon cannot be reached, instead of retrying.
    #[arg(long)]
    no_reconnect: bool,

    /// Read NFLOG group directly (no daemon; fails if something else holds the group).
    #[arg(long, conflicts_with = "read")]
    direct: bool,

    /// NFLOG group for --direct.
    #[arg(short, long, default_value_t = 100, requires = "direct")]
    group: u16,

    /// Read events from a file: NFLOG pcap, JSON lines or syslogemu (- for standard input).
    #[arg(short, long, value_name = "FILE")]
    read: Option<PathBuf>,

    /// Write matching events to an NFLOG pcap (prints nothing unless -o is given too).
    #[arg(short, long, value_name = "FILE")]
    write: Option<PathBuf>,

    /// Output format.
    #[arg(short, long, value_enum)]
    output: Option<OutputFormat>,

    /// Colours.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,

    /// Full-screen live view with top tables.
    #[arg(short, long)]
    interactive: bool,

    /// Hostname in syslogemu lines rendered here (pcap replay, --direct; default: short hostname).
    #[arg(long)]
    hostname: Option<String>,

    /// Attribute replayed (pcap) and --direct events with a cluster snapshot: what
    /// `kubectl get pods,networkpolicies,namespaces,services,endpointslices,nodes -A -o yaml`
    /// wrote. No API access needed.
    #[arg(long, value_name = "FILE")]
    kube_snapshot: Option<PathBuf>,

    /// With --kube-snapshot: the node the capture comes from (only its pods' firewall chains
    /// logged the drops); default: every pod counts. Without it, a single --node given with
    /// --kube-snapshot names the capture node (and does not filter), as before.
    #[arg(
        id = "capture_node",
        long = "capture-node",
        value_name = "NAME",
        requires = "kube_snapshot"
    )]
    node: Option<String>,

    #[command(flatten)]
    filters: FilterArgs,
}

/// The filter flags: `--KEY VALUE`, repeatable, each given to [`Filter::set`] as the
/// interactive filter line's `KEY=VALUE`, so both accept the same values. `(key, value name,
/// visible alias, help)`.
const FILTER_FLAGS: &[(&str, &str, Option<&str>, &str)] = &[
    ("namespace", "NS", Some("ns"), "Either side's pod namespace, or the policy's namespace."),
    ("policy", "NAME", None, "The policy: NAMESPACE/NAME or NAME (any namespace)."),
    ("pod", "NAME", None, "A pod on either side: [NAMESPACE/]NAME, NAME a prefix of the pod's name."),
    ("service", "NAME", Some("svc"), "A Service the client aimed at: NAMESPACE/NAME or NAME (any namespace)."),
    ("node", "NAME", None, "A node on either side: its own address (kubelet probes, hostNetwork pods) or a pod on it."),
    ("ip", "IP[/LEN]", None, "Source or destination address, or CIDR block."),
    ("from-ip", "IP[/LEN]", None, "Source address or CIDR block."),
    ("to-ip", "IP[/LEN]", None, "Destination address or CIDR block."),
    ("class", "CLASS", None, "Source or destination address class: public, private, unique-local, cgnat, loopback, \
      link-local, multicast, broadcast, unspecified, documentation, reserved (the daemon's src_class/dest_class), \
      or pod, node, service (what the daemon named it)."),
    ("from-class", "CLASS", None, "Source address class (as --class)."),
    ("to-class", "CLASS", None, "Destination address class (as --class)."),
    ("port", "N", None, "Source or destination port."),
    ("protocol", "PROTO", Some("proto"), "tcp, udp, icmp (ICMP of either IP version), icmpv4, icmpv6, sctp, … or a number."),
    ("direction", "DIR", None, "ingress or egress, relative to the pod the policy protects (needs the daemon's \
      Kubernetes context)."),
    ("prefix", "TEXT", None, "NFLOG prefix contains this text."),
];

/// The filter flags given, in [`FILTER_FLAGS`] order: `(key, value)`.
#[derive(Debug, Default)]
struct FilterArgs(Vec<(&'static str, String)>);

impl clap::FromArgMatches for FilterArgs {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut given = Vec::new();
        for &(key, ..) in FILTER_FLAGS {
            let values = m.get_many::<String>(key).into_iter().flatten();
            given.extend(values.map(|v| (key, v.clone())));
        }
        Ok(FilterArgs(given))
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for FilterArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let cmd = cmd.next_help_heading("Filters");
        FILTER_FLAGS
            .iter()
            .fold(cmd, |cmd, &(key, value_name, alias, help)| {
                let arg = clap::Arg::new(key)
                    .long(key)
                    .value_name(value_name)
                    .help(help)
                    .action(clap::ArgAction::Append);
                cmd.arg(match alias {
                    Some(a) => arg.visible_alias(a),
                    None => arg,
                })
            })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl Cli {
    /// The filter flags, each through [`Filter::set`].
    fn filter(&self) -> Result<Filter, Error> {
        let mut filter = Filter::default();
        for (key, v) in &self.filters.0 {
            filter
                .set(key, v)
                .map_err(|e| Error::Usage(format!("--{key} {v:?}: {e}")))?;
        }
        Ok(filter)
    }

    /// Before `--capture-node`, `--node` named the node a snapshot replay's capture comes from:
    /// given once with `--kube-snapshot` and without `--capture-node`, it still does (and does
    /// not filter).
    fn capture_node_compat(&mut self) -> Result<(), Error> {
        let nodes = self.filters.0.iter().filter(|(k, _)| *k == "node").count();
        if self.kube_snapshot.is_some() && self.node.is_none() && nodes > 0 {
            if nodes > 1 {
                return Err(Error::Usage(
                    "with --kube-snapshot, --node names the node the capture comes from: give it \
                     once, or give --capture-node NAME and --node filters"
                        .into(),
                ));
            }
            let at = self.filters.0.iter().position(|(k, _)| *k == "node");
            self.node = at.map(|i| self.filters.0.remove(i).1);
        }
        Ok(())
    }

    fn options(mut self) -> Result<Options, Error> {
        self.capture_node_compat()?;
        let filter = self.filter()?;
        let source = match (&self.read, self.direct) {
            (Some(path), _) => SourceSpec::File(path.clone()),
            (None, true) => SourceSpec::Direct { group: self.group },
            (None, false) => SourceSpec::Daemon {
                path: self.socket.clone(),
                reconnect: !self.no_reconnect,
            },
        };
        let snapshot = match &self.kube_snapshot {
            None => None,
            Some(path) => {
                let (index, _) =
                    netpol_nflog::attribute::snapshot::load(path, self.node.as_deref())
                        .map_err(|e| Error::Usage(e.to_string()))?;
                Some(tail::Snapshot::new(index, self.node.clone()))
            }
        };
        Ok(Options {
            snapshot,
            filter,
            source,
            format: self.output,
            color: self.color,
            last: self.last,
            count: self.count,
            write: self.write,
            interactive: self.interactive,
            hostname: self
                .hostname
                .unwrap_or_else(netpol_nflog::render::short_hostname),
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.options().and_then(tail::run) {
        Ok(()) | Err(Error::BrokenPipe) => ExitCode::SUCCESS,
        Err(Error::Usage(e)) => {
            eprintln!("nflog-tail: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("nflog-tail: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_the_filter_words() {
        Cli::command().debug_assert();
        // Every filter word has its flag, and every flag is a word of the filter line.
        let words: Vec<&str> = netpol_nflog::tail::filter::KEYS
            .iter()
            .map(|(k, _)| *k)
            .collect();
        let flags: Vec<&str> = FILTER_FLAGS.iter().map(|(k, ..)| *k).collect();
        assert_eq!(
            {
                let mut w = words.clone();
                w.sort();
                w
            },
            {
                let mut f = flags.clone();
                f.sort();
                f
            }
        );
        let cli = Cli::try_parse_from([
            "nflog-tail",
            "--svc",
            "shop/db",
            "--node",
            "node-2",
            "--from-class",
            "PUBLIC",
            "--ns",
            "shop",
            "--port",
            "5432",
            "--port",
            "53",
        ])
        .unwrap();
        let got = cli.filter().unwrap();
        let line =
            Filter::parse("svc=shop/db node=node-2 from-class=public ns=shop port=5432 port=53")
                .unwrap();
        assert_eq!(got, line);
        let bad = Cli::try_parse_from(["nflog-tail", "--class", "internet"]).unwrap();
        assert!(matches!(bad.filter(), Err(Error::Usage(e)) if e.contains("--class \"internet\"")));
    }

    #[test]
    fn node_with_a_snapshot_alone_is_the_capture_node() {
        let with = |args: &[&str]| {
            let mut argv = vec!["nflog-tail", "--kube-snapshot", "/nonexistent.yaml"];
            argv.extend_from_slice(args);
            Cli::try_parse_from(argv).unwrap()
        };
        let mut cli = with(&["--node", "node-1"]);
        cli.capture_node_compat().unwrap();
        assert_eq!(cli.node.as_deref(), Some("node-1"));
        assert!(cli.filter().unwrap().nodes.is_empty());
        cli = with(&["--node", "node-1", "--node", "node-2"]);
        assert!(
            matches!(cli.capture_node_compat(), Err(Error::Usage(e)) if e.contains("--capture-node"))
        );
        cli = with(&["--capture-node", "node-1", "--node", "node-2"]);
        cli.capture_node_compat().unwrap();
        assert_eq!(cli.node.as_deref(), Some("node-1"));
        assert_eq!(cli.filter().unwrap().nodes, ["node-2"]);
        // Without a snapshot, --node only filters.
        let mut cli = Cli::try_parse_from(["nflog-tail", "--node", "node-2"]).unwrap();
        cli.capture_node_compat().unwrap();
        assert_eq!(cli.node, None);
        assert_eq!(cli.filter().unwrap().nodes, ["node-2"]);
        assert!(Cli::try_parse_from(["nflog-tail", "--capture-node", "n"]).is_err());
    }
}
