//! The command line.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 10s, 2m)"))
}

/// The longest publishing phase a run may ask for.
pub const MAX_DURATION: Duration = Duration::from_secs(600);

/// groupcast-bench: fan-out load for groupcast (or anything that serves
/// `/ws/<group>` and delivers what is published to `group:<group>`).
///
/// Opens --clients WebSocket clients (or, with --transport sse,
/// Server-Sent Events streams) spread round-robin over the --url nodes and
/// --groups groups (--groups-per-client each), publishes --rate messages per second
/// (round-robin over the groups) through Redis PUBLISH or the HTTP API for
/// --duration, then reports connect time, deliveries per second, loss,
/// duplicates, out-of-order and end-to-end latency, as text and as one line
/// of JSON (the last line of stdout). Without --publish (or with --rate 0)
/// the clients stay idle: use it with --measure-pid for memory per
/// connection.
#[derive(Debug, Parser)]
#[command(name = "groupcast-bench", version, about, long_about)]
pub struct Args {
    /// A node's base URL, `ws://host:port` (repeat for several nodes);
    /// clients connect to `<url>/ws/<group>`.
    #[arg(long = "url", required = true)]
    pub urls: Vec<String>,

    /// Clients that receive and account (not counting --stall).
    #[arg(long, default_value_t = 100)]
    pub clients: usize,

    /// Groups the clients are spread over (client i joins group i % G;
    /// with --groups-per-client K, groups (i*K + j) % G for j in 0..K).
    #[arg(long, default_value_t = 1)]
    pub groups: usize,

    /// How the clients receive: `ws` (WebSocket, `<url>/ws/<group>`) or
    /// `sse` (Server-Sent Events, a plain HTTP `GET <url>/sse/<group>` on
    /// the same host and port).
    #[arg(long, value_enum, default_value = "ws")]
    pub transport: Transport,

    /// Groups each client holds: its first by the URL, the others by
    /// `groupcast.v1` subscribe requests (WebSocket only). Every group gets
    /// the same number of members when --clients * K is a multiple of
    /// --groups.
    #[arg(long, default_value_t = 1)]
    pub groups_per_client: usize,

    /// With --groups-per-client K: client i holds groups (i + j*G/K) % G
    /// instead of (i*K + j) % G, so that its groups are G/K apart. The
    /// publishers go round-robin over consecutive groups: consecutive
    /// groups on one connection get their messages within a few ms of
    /// each other (and the node may write them together); strided, they
    /// are spread over the round. Needs --groups a multiple of K.
    #[arg(long)]
    pub strided_groups: bool,

    /// Clients ask for the `groupcast.v1` subprotocol and read its JSON
    /// message frames (implied by --groups-per-client above 1).
    #[arg(long)]
    pub v1: bool,

    /// Group names: `{}` is replaced by the group index.
    #[arg(long, default_value = "bench-{}")]
    pub group_template: String,

    /// Where to publish: `redis://host:port[/db]` (PUBLISH <prefix><group>)
    /// or `http://host:port` (POST /api/groups/<group>/messages).
    #[arg(long)]
    pub publish: Option<String>,

    /// Publish with `FCALL groupcast_publish 1 <group> <payload>` (the
    /// nodes must keep history for the groups: `--history`) instead of
    /// `PUBLISH`, so every message is appended to its group's history.
    #[arg(long)]
    pub fcall: bool,

    /// Channel prefix for Redis publishing.
    #[arg(long, default_value = "group:")]
    pub channel_prefix: String,

    /// Messages per second in all (each reaches every member of its group).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,

    /// Publisher tasks (each its own connection and sequence space); the
    /// rate is split between them.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,

    /// How long to publish (or stay idle), at most 10m.
    #[arg(long, value_parser = duration, default_value = "20s")]
    pub duration: Duration,

    /// Payload size in bytes (at least 48: the stamp).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,

    /// What follows the stamp in each payload: `padded` (to --payload
    /// bytes) or `log` (a ~200-byte task-log-like text line, for
    /// compression; --payload is then ignored).
    #[arg(long, value_enum, default_value = "padded")]
    pub payload_kind: crate::payload::PayloadKind,

    /// Clients offer `permessage-deflate; client_no_context_takeover` and
    /// inflate compressed messages (the bench's own WebSocket client, not
    /// tungstenite's). Without it clients offer no extension.
    #[arg(long)]
    pub compression: bool,

    /// Loopback source addresses, used round-robin, so that more than one
    /// address's worth of ephemeral ports can be used.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1")]
    pub source_addrs: Vec<Ipv4Addr>,

    /// Connections being set up at once.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,

    /// Upper bound of the whole connect phase.
    #[arg(long, value_parser = duration, default_value = "120s")]
    pub connect_timeout: Duration,

    /// Pause between "all connected" and the first publish (lets the nodes
    /// subscribe to the groups' channels).
    #[arg(long, value_parser = duration, default_value = "2s")]
    pub settle: Duration,

    /// After the last publish, wait at most this long for deliveries (the
    /// wait ends early once nothing arrived for 500 ms).
    #[arg(long, value_parser = duration, default_value = "5s")]
    pub drain: Duration,

    /// Extra clients that connect and then never read (slow-consumer test);
    /// they are not counted in deliveries or loss.
    #[arg(long, default_value_t = 0)]
    pub stall: usize,

    /// Churn: short-lived connections opened per second while the run
    /// lasts, each joining one of --churn-groups groups (round-robin) and
    /// leaving after --churn-hold. 0: no churn.
    #[arg(long, default_value_t = 0.0)]
    pub churn: f64,

    /// Groups the churn connections join.
    #[arg(long, default_value_t = 1000)]
    pub churn_groups: usize,

    /// Names of the churn groups (`{}` is the index).
    #[arg(long, default_value = "churn-{}")]
    pub churn_template: String,

    /// How long each churn connection stays.
    #[arg(long, value_parser = duration, default_value = "500ms")]
    pub churn_hold: Duration,

    /// Churn connections open at once, at most.
    #[arg(long, default_value_t = 4000)]
    pub churn_max_open: usize,

    /// Server PIDs to measure (CPU µs per delivery, RSS per connection),
    /// comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub measure_pid: Vec<u32>,

    /// Worker threads of the bench's runtime [default: number of CPUs].
    #[arg(long)]
    pub threads: Option<usize>,

    /// A label copied into the JSON summary.
    #[arg(long)]
    pub label: Option<String>,

    /// Also write the JSON summary to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,

    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,

    /// How often a progress line goes to stderr (1s to 60s): phase,
    /// clients, messages, deliveries, churn and presence frames so far.
    #[arg(long, value_parser = duration, default_value = "1s")]
    pub progress_every: Duration,
}

/// How the clients receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    Ws,
    Sse,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
        }
    }
}

impl Args {
    /// Whether the clients speak `groupcast.v1`.
    pub fn v1(&self) -> bool {
        self.v1 || self.groups_per_client > 1
    }

    /// The groups client `i` holds, its URL's first: (i*K + j) % G, or
    /// with --strided-groups (i + j*G/K) % G.
    pub fn groups_of(&self, i: usize) -> Vec<(String, u32)> {
        let k = self.groups_per_client;
        let stride = self.groups / k;
        (0..k)
            .map(|j| {
                let g = if self.strided_groups {
                    (i + j * stride) % self.groups
                } else {
                    (i * k + j) % self.groups
                };
                (self.group_name(g), g as u32)
            })
            .collect()
    }

    /// The node (index into --url) client `i` connects to.
    pub fn node_of(&self, i: usize) -> usize {
        // Every G/K consecutive clients hold each group once (groups_of,
        // either order), so ⌊i·K/G⌋ gives each group members on every
        // node in turn.
        (i * self.groups_per_client / self.groups) % self.urls.len()
    }

    pub fn group_name(&self, index: usize) -> String {
        self.group_template.replace("{}", &index.to_string())
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.clients > 0, "--clients must be at least 1");
        anyhow::ensure!(self.groups > 0, "--groups must be at least 1");
        anyhow::ensure!(
            self.groups <= self.clients.saturating_mul(self.groups_per_client),
            "--groups ({}) exceeds --clients ({}) x --groups-per-client ({}): some groups \
             would have no member",
            self.groups,
            self.clients,
            self.groups_per_client
        );
        anyhow::ensure!(
            (1..=self.groups).contains(&self.groups_per_client),
            "--groups-per-client must be between 1 and --groups ({})",
            self.groups
        );
        anyhow::ensure!(
            !self.strided_groups || self.groups.is_multiple_of(self.groups_per_client),
            "--strided-groups needs --groups a multiple of --groups-per-client"
        );
        anyhow::ensure!(
            self.transport == Transport::Ws || !self.v1(),
            "--groups-per-client above 1 and --v1 need --transport ws"
        );
        anyhow::ensure!(
            !self.compression || (self.transport == Transport::Ws && !self.v1()),
            "--compression works with raw WebSocket clients only (not with --transport sse, \
             --v1 or --groups-per-client)"
        );
        anyhow::ensure!(
            self.group_template.contains("{}") || self.groups == 1,
            "--group-template must contain {{}} when --groups > 1"
        );
        anyhow::ensure!(
            self.duration <= MAX_DURATION,
            "--duration is at most {MAX_DURATION:?}"
        );
        anyhow::ensure!(
            self.rate >= 0.0 && self.rate.is_finite(),
            "--rate must be >= 0"
        );
        anyhow::ensure!(
            self.rate == 0.0 || self.publish.is_some(),
            "--rate needs --publish redis://... or http://..."
        );
        anyhow::ensure!(
            (1..=1000).contains(&self.publishers),
            "--publishers must be between 1 and 1000"
        );
        anyhow::ensure!(
            self.payload >= crate::payload::HEADER_LEN,
            "--payload must be at least {} bytes",
            crate::payload::HEADER_LEN
        );
        anyhow::ensure!(!self.source_addrs.is_empty(), "--source-addrs is empty");
        anyhow::ensure!(
            self.source_addrs.iter().all(|a| a.is_loopback()),
            "--source-addrs must be loopback addresses (127.x.y.z)"
        );
        anyhow::ensure!(
            self.connect_concurrency > 0,
            "--connect-concurrency must be at least 1"
        );
        anyhow::ensure!(
            self.connect_timeout <= Duration::from_secs(600)
                && self.drain <= Duration::from_secs(60),
            "--connect-timeout is at most 10m and --drain at most 60s"
        );
        anyhow::ensure!(
            self.churn >= 0.0 && self.churn.is_finite() && self.churn <= 100_000.0,
            "--churn must be between 0 and 100000 per second"
        );
        anyhow::ensure!(
            self.churn == 0.0 || (self.churn_groups > 0 && self.churn_template.contains("{}")),
            "--churn needs --churn-groups > 0 and a --churn-template with {{}}"
        );
        anyhow::ensure!(
            self.churn_hold <= Duration::from_secs(60),
            "--churn-hold is at most 60s"
        );
        anyhow::ensure!(
            (Duration::from_secs(1)..=Duration::from_secs(60)).contains(&self.progress_every),
            "--progress-every must be between 1s and 60s"
        );
        Ok(())
    }

    /// Descriptors churn may hold at once.
    pub fn churn_fds(&self) -> usize {
        if self.churn > 0.0 {
            self.churn_max_open
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let base = ["groupcast-bench", "--url", "ws://127.0.0.1:1"];
        Args::parse_from(base.iter().chain(extra))
    }

    /// (members per group, members per group on node 0).
    fn spread(args: &Args) -> (Vec<u32>, Vec<u32>) {
        let (mut members, mut on_first) = (vec![0; args.groups], vec![0; args.groups]);
        for i in 0..args.clients {
            let groups = args.groups_of(i);
            let mut distinct: Vec<u32> = groups.iter().map(|&(_, g)| g).collect();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), args.groups_per_client, "client {i}");
            for (name, g) in groups {
                assert_eq!(name, args.group_name(g as usize));
                members[g as usize] += 1;
                on_first[g as usize] += (args.node_of(i) == 0) as u32;
            }
        }
        (members, on_first)
    }

    #[test]
    fn every_group_gets_the_same_members_on_every_node() {
        let two = ["--url", "ws://127.0.0.1:2", "--groups", "1000"];
        for clients_k in [
            ["10000", "1", ""],
            ["1000", "10", ""],
            ["1000", "10", "--strided-groups"],
        ] {
            let order: &[&str] = if clients_k[2].is_empty() {
                &[]
            } else {
                &clients_k[2..]
            };
            let a = args(
                &[
                    &two[..],
                    &["--clients", clients_k[0]],
                    &["--groups-per-client", clients_k[1]],
                    order,
                ]
                .concat(),
            );
            a.validate().unwrap();
            let (members, on_first) = spread(&a);
            assert!(members.iter().all(|&m| m == 10), "{clients_k:?}");
            assert!(on_first.iter().all(|&m| m == 5), "{clients_k:?}");
        }
        // One group per client: client i joins group i % G, as before.
        let a = args(&["--clients", "6", "--groups", "4"]);
        assert_eq!(a.groups_of(5), [("bench-1".to_string(), 1)]);
        // Strided: a client's groups are G/K apart.
        let a = args(&[
            "--clients",
            "2",
            "--groups",
            "6",
            "--groups-per-client",
            "3",
            "--strided-groups",
        ]);
        let of = |i| {
            a.groups_of(i)
                .into_iter()
                .map(|(_, g)| g)
                .collect::<Vec<_>>()
        };
        assert_eq!((of(0), of(1)), (vec![0, 2, 4], vec![1, 3, 5]));
    }

    #[test]
    fn transports_and_protocols_that_do_not_mix_are_refused() {
        for (extra, refused) in [
            (
                &["--transport", "sse", "--groups-per-client", "2"][..],
                true,
            ),
            (&["--transport", "sse", "--v1"], true),
            (&["--compression", "--v1"], true),
            (&["--compression", "--transport", "sse"], true),
            (&["--groups-per-client", "3"], true), // more than --groups
            (&["--transport", "sse"], false),
            (&["--v1"], false),
        ] {
            let a = args(&[&["--clients", "4", "--groups", "2"][..], extra].concat());
            assert_eq!(a.validate().is_err(), refused, "{extra:?}");
        }
    }

    #[test]
    fn the_progress_interval_is_parsed_and_bounded() {
        assert_eq!(args(&[]).progress_every, Duration::from_secs(1));
        let every = |value: &str| {
            let a = args(&["--progress-every", value]);
            a.validate().map(|()| a.progress_every)
        };
        assert_eq!(every("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(every("1m").unwrap(), Duration::from_secs(60));
        for refused in ["500ms", "61s", "0s"] {
            let error = every(refused).unwrap_err().to_string();
            assert!(error.contains("--progress-every"), "{refused}: {error}");
        }
        // Not a duration at all: clap's error names the flag and the form.
        let error = Args::try_parse_from([
            "groupcast-bench",
            "--url",
            "ws://127.0.0.1:1",
            "--progress-every",
            "often",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("--progress-every") && error.contains("examples"),
            "{error}"
        );
    }
}
