//! A real `groupcast` binary as a child process, killed when dropped.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use super::redis::{FAST_NODE_ARGS, free_port};

/// A spawned `groupcast` node on a free loopback port.
pub struct NodeProcess {
    pub name: String,
    pub addr: SocketAddr,
    child: Child,
}

impl NodeProcess {
    /// Starts `groupcast --listen <free port> --node-id <name> <args>`;
    /// its logs go to `target/tmp/node-logs/<name>.log`.
    pub fn spawn(name: &str, args: &[&str]) -> NodeProcess {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("node-logs");
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_groupcast"))
            .args(["--listen", &addr.to_string()])
            .args(["--node-id", name])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn the groupcast binary");
        NodeProcess {
            name: name.to_string(),
            addr,
            child,
        }
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

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, group: &str) -> String {
        format!("ws://{}/ws/{}", self.addr, group)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
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
    pub async fn wait_exit(
        &mut self,
        limit: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        let url = self.url("/readyz");
        super::wait_until_async(&format!("{} is ready", self.name), || {
            let url = url.clone();
            async move { matches!(reqwest::get(&url).await, Ok(r) if r.status().is_success()) }
        })
        .await;
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
