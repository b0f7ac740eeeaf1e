//! `nflog-tail`: watch the packets NetworkPolicies drop, live, next to a running `netpol-nflogd`
//! (which holds the NFLOG group), directly on the group, or from a file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use netpol_nflog::tail::filter::{FilterDirection, IpNet};
use netpol_nflog::tail::{
    self, client, ColorChoice, Error, Filter, Options, OutputFormat, SourceSpec,
};

const AFTER_HELP: &str = "\
Filters combine: different filters must all match (AND); the same filter given twice matches
either value (OR). Namespace, pod, IP and port filters match either side of the packet.

Examples:
  nflog-tail                                   follow the daemon's events
  nflog-tail --last 100 --namespace db         the last 100 events touching namespace db, then live
  nflog-tail --policy default/deny-db --port 5432
  nflog-tail --pod web --direction egress      pods whose name starts with \"web\", outbound drops
  nflog-tail --ip 10.42.0.0/16 --protocol udp --port 53 --port 5353
  nflog-tail -o json | jq .                    the daemon's JSON records
  nflog-tail -i                                full-screen view with top tables
  nflog-tail -w drops.pcap --namespace db      save matching packets as an NFLOG pcap (tcpdump/tshark)
  nflog-tail --direct -i                       no daemon on this node: read NFLOG group 100 itself
  nflog-tail -r capture.pcap -o syslogemu      replay `tcpdump -i nflog:100 -w capture.pcap`
  nflog-tail -r /var/log/ulog/syslogemu.log --prefix 'DROP by policy'

Interactive keys (-i): p/space pause, / edit the filter (same words as the flags: port=5432
ns=default prefix=\"DROP by\"; Ctrl-A/E/U/K/W and arrows edit as in a shell), c clear, t/Tab
switch the top table, arrows scroll, q/Esc quit. SIGINT or SIGTERM restores the terminal first.

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
    /// logged the drops); default: every pod counts.
    #[arg(long, value_name = "NAME", requires = "kube_snapshot")]
    node: Option<String>,

    /// Either side's pod namespace, or the policy's namespace.
    #[arg(
        long = "namespace",
        visible_alias = "ns",
        value_name = "NS",
        help_heading = "Filters"
    )]
    namespaces: Vec<String>,

    /// The policy: NAMESPACE/NAME or NAME (any namespace).
    #[arg(long = "policy", value_name = "NAME", help_heading = "Filters")]
    policies: Vec<String>,

    /// A pod on either side: [NAMESPACE/]NAME, NAME a prefix of the pod's name.
    #[arg(long = "pod", value_name = "NAME", help_heading = "Filters")]
    pods: Vec<String>,

    /// Source or destination address, or CIDR block.
    #[arg(long = "ip", value_name = "IP[/LEN]", help_heading = "Filters")]
    ips: Vec<IpNet>,

    /// Source address or CIDR block.
    #[arg(long = "from-ip", value_name = "IP[/LEN]", help_heading = "Filters")]
    from_ips: Vec<IpNet>,

    /// Destination address or CIDR block.
    #[arg(long = "to-ip", value_name = "IP[/LEN]", help_heading = "Filters")]
    to_ips: Vec<IpNet>,

    /// Source or destination port.
    #[arg(long = "port", value_name = "N", help_heading = "Filters")]
    ports: Vec<u16>,

    /// tcp, udp, icmp (ICMP of either IP version), icmpv4, icmpv6, sctp, … or a number.
    #[arg(long = "protocol", visible_alias = "proto", value_name = "PROTO", value_parser = tail::filter::parse_protocol, help_heading = "Filters")]
    protocols: Vec<String>,

    /// FilterDirection relative to the pod the policy protects (needs the daemon's Kubernetes context).
    #[arg(long = "direction", value_enum, help_heading = "Filters")]
    directions: Vec<FilterDirection>,

    /// NFLOG prefix contains this text.
    #[arg(long = "prefix", value_name = "TEXT", help_heading = "Filters")]
    prefixes: Vec<String>,
}

impl Cli {
    fn filter(&self) -> Filter {
        Filter {
            namespaces: self.namespaces.clone(),
            policies: self.policies.clone(),
            pods: self.pods.clone(),
            ips: self.ips.clone(),
            from_ips: self.from_ips.clone(),
            to_ips: self.to_ips.clone(),
            ports: self.ports.clone(),
            protocols: self.protocols.clone(),
            directions: self.directions.clone(),
            prefixes: self.prefixes.clone(),
        }
    }

    fn options(self) -> Result<Options, Error> {
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
            filter: self.filter(),
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
