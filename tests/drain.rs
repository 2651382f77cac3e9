//! Draining, on the real binary: on SIGTERM a node turns not-ready first,
//! keeps serving its sessions for the drain period while refusing new ones,
//! then closes every session with 1001 (so clients reconnect to another
//! node) and exits 0 within the shutdown timeout.
//!
//! This is what the Kubernetes manifests and docker-compose.yml rely on:
//! readiness drops at once, so the Service / load balancer stops sending
//! new clients before anyone is disconnected.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Client, WAIT, wait_until_async};

const DRAIN: Duration = Duration::from_secs(3);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The `groupcast` binary on a free loopback port; killed when dropped.
struct Binary {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Binary {
    fn start(args: &[&str]) -> Binary {
        let addr = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_groupcast"));
        // Only what this test says: no GROUPCAST_* from the environment.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("GROUPCAST_") {
                command.env_remove(key);
            }
        }
        let mut child = command
            .args(["--listen", &addr.to_string(), "--log", "info"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the groupcast binary");
        // Keep its log, to show it if the test fails.
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Binary { child, addr, log }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn ws_url(&self, group: &str) -> String {
        format!("ws://{}/ws/{}", self.addr, group)
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit, at most `limit`.
    async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- groupcast log ---\n{}--- end ---",
                self.log.lock().unwrap()
            );
        }
    }
}

/// A port nobody listens on right now (the OS's pick for port 0).
fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.local_addr().expect("local addr")
}

/// GET `url`: status and JSON body, or None while nothing answers.
async fn get(http: &reqwest::Client, url: &str) -> Option<(u16, serde_json::Value)> {
    let response = http.get(url).send().await.ok()?;
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    Some((status, body))
}

#[tokio::test]
async fn sigterm_drains_then_closes_with_1001_and_exits_0() {
    let drain = format!("{}s", DRAIN.as_secs());
    let shutdown = format!("{}s", SHUTDOWN_TIMEOUT.as_secs());
    let mut node = Binary::start(&["--drain-period", &drain, "--shutdown-timeout", &shutdown]);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    // Up and ready.
    wait_until_async("the binary answers /readyz with 200", || async {
        matches!(get(&http, &node.url("/readyz")).await, Some((200, _)))
    })
    .await;

    // A member, which learns which node took it from the upgrade response.
    let (mut client, response) = Client::connect_with_response(&node.ws_url("g")).await;
    let (_, info) = get(&http, &node.url("/api/info")).await.expect("/api/info");
    let header = response
        .headers()
        .get("x-groupcast-node")
        .expect("the upgrade response names the node")
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(info["node"], header.as_str());
    wait_until_async("the node lists the member", || async {
        matches!(get(&http, &node.url("/api/groups/g")).await, Some((200, body)) if body["members"] == 1)
    })
    .await;

    // SIGTERM: not ready at once...
    let signalled = Instant::now();
    node.signal("TERM");
    wait_until_async("/readyz answers 503 after SIGTERM", || async {
        matches!(get(&http, &node.url("/readyz")).await, Some((503, _)))
    })
    .await;
    let (_, ready) = get(&http, &node.url("/readyz")).await.expect("/readyz");
    assert_eq!(ready["ready"], false);
    assert!(
        signalled.elapsed() < DRAIN,
        "readiness dropped only after the drain period"
    );

    // ...but still serving its members during the drain...
    let published = http
        .post(node.url("/api/groups/g/messages"))
        .header("content-type", "text/plain")
        .body("during the drain")
        .send()
        .await
        .expect("publish during the drain");
    assert_eq!(published.status().as_u16(), 200, "publish during the drain");
    assert_eq!(client.recv_text().await, "during the drain");
    assert!(
        signalled.elapsed() < DRAIN,
        "the drain-time message came too late to prove anything"
    );

    // ...while refusing new WebSockets with 503 (go to another node).
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(node.ws_url("g"))).await {
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
            assert_eq!(
                response.status().as_u16(),
                503,
                "a new upgrade while draining"
            );
        }
        Ok(Err(other)) => panic!("a new upgrade while draining failed oddly: {other}"),
        Ok(Ok(_)) => panic!("a new upgrade was accepted while draining"),
        Err(_) => panic!("a new upgrade while draining timed out"),
    }
    assert!(
        signalled.elapsed() < DRAIN,
        "the refused upgrade came too late to prove anything"
    );

    // Then, after the drain period, 1001 to every session...
    let reason = client.expect_close_code(1001).await;
    let closed_after = signalled.elapsed();
    assert!(
        closed_after >= DRAIN,
        "sessions were closed after {closed_after:?}, before the drain period ({DRAIN:?}) ended"
    );
    assert!(!reason.is_empty(), "a 1001 close should say why");

    // ...and a clean exit, within drain + shutdown timeout (+ slack).
    let status = node
        .wait_exit(DRAIN + SHUTDOWN_TIMEOUT + Duration::from_secs(5))
        .await
        .expect("the process did not exit after the drain and the shutdown timeout");
    assert!(status.success(), "exit status {status:?}");
}
