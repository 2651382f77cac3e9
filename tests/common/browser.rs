//! Headless Chromium for the browser tests: chromedriver on a free
//! loopback port, and Chromium sessions through fantoccini.
//!
//! Needs Debian's `chromium` and `chromium-driver` packages: run
//! `scripts/install-test-deps.sh`. Without them a browser test fails (it
//! does not skip), saying so.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client as Browser, ClientBuilder};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::WAIT;

/// The first of `names` found on `PATH`.
pub fn find_on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

pub fn require(names: &[&str], package: &str) -> PathBuf {
    find_on_path(names).unwrap_or_else(|| {
        panic!(
            "{} not found on PATH: the browser test needs Debian's `{package}` package. \
             Run scripts/install-test-deps.sh (as root) and try again.",
            names.join(" / ")
        )
    })
}

/// chromedriver on a free loopback port, in its own process group so that
/// dropping it also ends the browsers it started.
pub struct Chromedriver {
    child: Child,
    pub url: String,
}

impl Chromedriver {
    pub async fn start() -> Chromedriver {
        use std::os::unix::process::CommandExt;
        let binary = require(&["chromedriver"], "chromium-driver");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let mut driver = Chromedriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let status = format!("{}/status", driver.url);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(exit) = driver.child.try_wait().unwrap() {
                panic!("chromedriver exited at start: {exit}");
            }
            if let Ok(response) = reqwest::get(&status).await {
                let body: Value = response.json().await.unwrap_or_default();
                if body["value"]["ready"] == true {
                    return driver;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver not ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A headless Chromium session.
    pub async fn browser(&self) -> Browser {
        let chromium = require(&["chromium", "chromium-browser"], "chromium");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--disable-extensions",
                    "--disable-background-networking",
                    // Background tabs must keep handling socket events.
                    "--disable-background-timer-throttling",
                    "--disable-renderer-backgrounding",
                    "--disable-backgrounding-occluded-windows",
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        tokio::time::timeout(
            WAIT,
            ClientBuilder::new(connector)
                .capabilities(capabilities)
                .connect(&self.url),
        )
        .await
        .expect("timed out starting Chromium")
        .expect("start a Chromium session")
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // The process group we created: chromedriver and its browsers.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `script` in the current tab every 50 ms until `done` holds for its
/// result; that result. Panics after [`WAIT`], showing the last result.
pub async fn wait_for_script(
    browser: &Browser,
    what: &str,
    script: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    wait_for_script_within(browser, what, script, WAIT, done).await
}

/// [`wait_for_script`] with its own time limit.
pub async fn wait_for_script_within(
    browser: &Browser,
    what: &str,
    script: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let value = browser
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("run a script while waiting for {what}: {e}"));
        if done(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; the page shows {value}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
