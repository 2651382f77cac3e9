//! The real `groupcast` binary as a child process, killed when dropped.
//!
//! The one place tests start the binary: [`command`] for one-shot runs
//! (`groupcast token`, `groupcast --help`), [`NodeProcess`] for a serving
//! node. Neither inherits `GROUPCAST_*` variables from the test's
//! environment: a test configures the binary only as it says.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::redis::{FAST_NODE_ARGS, free_port};

/// `groupcast` with no `GROUPCAST_*` variables from the environment.
pub fn command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_groupcast"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GROUPCAST_") {
            command.env_remove(key);
        }
    }
    command
}

/// A spawned `groupcast` node on a free loopback port.
pub struct NodeProcess {
    pub name: String,
    pub addr: SocketAddr,
    child: Child,
    log: PathBuf,
}

/// How to start a [`NodeProcess`]: flags, variables, where it listens.
pub struct NodeBuilder {
    name: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    listen_by_env: bool,
}

impl NodeBuilder {
    pub fn args(mut self, args: &[&str]) -> NodeBuilder {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> NodeBuilder {
        self.envs.push((key.to_string(), value.to_string()));
        self
    }

    /// Listen on the address given in `GROUPCAST_LISTEN` instead of
    /// `--listen` (to show that the variables reach the binary).
    pub fn listen_by_env(mut self) -> NodeBuilder {
        self.listen_by_env = true;
        self
    }

    /// Starts it; its logs (stdout and stderr) go to
    /// `target/tmp/node-logs/<name>.log`.
    pub fn spawn(self) -> NodeProcess {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("node-logs");
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join(format!("{}.log", self.name));
        let file = std::fs::File::create(&log).unwrap();
        let mut command = command();
        if self.listen_by_env {
            command.env("GROUPCAST_LISTEN", addr.to_string());
        } else {
            command.args(["--listen", &addr.to_string()]);
        }
        let child = command
            .args(["--node-id", &self.name])
            .args(&self.args)
            .envs(self.envs)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("spawn the groupcast binary");
        NodeProcess {
            name: self.name,
            addr,
            child,
            log,
        }
    }
}

impl NodeProcess {
    /// What to start as `groupcast --listen <free port> --node-id <name>`.
    pub fn builder(name: &str) -> NodeBuilder {
        NodeBuilder {
            name: name.to_string(),
            args: Vec::new(),
            envs: Vec::new(),
            listen_by_env: false,
        }
    }

    /// Starts `groupcast --listen <free port> --node-id <name> <args>`.
    pub fn spawn(name: &str, args: &[&str]) -> NodeProcess {
        NodeProcess::builder(name).args(args).spawn()
    }

    /// Like [`NodeProcess::spawn`], then waits until `/readyz` answers 200.
    pub async fn start(name: &str, args: &[&str]) -> NodeProcess {
        let node = NodeProcess::spawn(name, args);
        node.wait_ready().await;
        node
    }

    /// A push-only cluster member of the Redis at `redis_url`, with the
    /// short test timings of `FAST_NODE_ARGS`, logging at info, plus
    /// `extra` flags.
    pub fn spawn_clustered(name: &str, redis_url: &str, extra: &[&str]) -> NodeProcess {
        let mut args = vec!["--redis-url", redis_url, "--client-messages", "none"];
        args.extend_from_slice(FAST_NODE_ARGS);
        args.extend_from_slice(&["--log", "info"]);
        args.extend_from_slice(extra);
        NodeProcess::spawn(name, &args)
    }

    /// [`NodeProcess::spawn_clustered`], then waits until `/readyz`
    /// answers 200.
    pub async fn start_clustered(name: &str, redis_url: &str, extra: &[&str]) -> NodeProcess {
        let node = NodeProcess::spawn_clustered(name, redis_url, extra);
        node.wait_ready().await;
        node
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, group: &str) -> String {
        format!("ws://{}/ws/{}", self.addr, group)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the node logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until a line of the log contains `needle`; that line.
    pub async fn wait_for_log(&self, needle: &str) -> String {
        let mut found = None;
        super::wait_until(&format!("{} logs {needle:?}", self.name), || {
            found = self
                .log()
                .lines()
                .find(|line| line.contains(needle))
                .map(str::to_string);
            found.is_some()
        })
        .await;
        found.unwrap()
    }

    /// Connects a client to `group` and waits until the node's API counts
    /// `members` sessions in it.
    pub async fn connect(&self, group: &str, members: u64) -> super::Client {
        let client = super::Client::connect(&self.ws_url(group)).await;
        let url = self.url(&format!("/api/groups/{group}"));
        super::wait_until_async("the node registers the session", || async {
            super::http::get_json(&url).await.1["members"].as_u64() == Some(members)
        })
        .await;
        client
    }

    /// SIGKILL: no shutdown, no lease release, no presence withdrawal.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: the graceful path (drain, 1001 to every session, exit).
    pub fn terminate(&self) {
        // SAFETY: kill(2) with our own child's pid; no memory involved.
        let sent = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM to {}", self.name);
    }

    /// Waits for the process to exit, at most `limit`; its exit status.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        let url = self.url("/readyz");
        super::wait_until_async(&format!("{} is ready", self.name), || {
            let url = url.clone();
            async move { super::http::status(&url).await == 200 }
        })
        .await;
    }
}

/// One cluster member per name of `names` ([`NodeProcess::spawn_clustered`]
/// on the Redis at `redis_url`, with `extra` flags), all spawned at once;
/// returns once every one answers `/readyz` with 200.
pub async fn start_clustered_nodes(
    names: &[&str],
    redis_url: &str,
    extra: &[&str],
) -> Vec<NodeProcess> {
    let nodes: Vec<NodeProcess> = names
        .iter()
        .map(|name| NodeProcess::spawn_clustered(name, redis_url, extra))
        .collect();
    for node in &nodes {
        node.wait_ready().await;
    }
    nodes
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- {} log ({}) ---\n{}--- end ---",
                self.name,
                self.log.display(),
                self.log()
            );
        }
    }
}
