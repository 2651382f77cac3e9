//! The terminal client, end to end: `groupcast publish` and `groupcast
//! tail` run as the real binary against real nodes (spawned too) and a
//! real Redis.
//!
//! Publishing: stdin's lines arrive in order, `--rate` paces them (checked
//! by count and a generous lower bound on the time, never an upper one),
//! an API key the node asks for is needed and enough, `--redis-url`
//! reaches members straight through Redis (with offsets for a history
//! group, by a plain PUBLISH where no node loaded the function). Tailing:
//! messages published after the join, `--json`'s fields, a backlog, Ctrl-C
//! exiting 0, and a resume across a node restart that loses and repeats
//! nothing. Errors: each failure names what went wrong and exits non-zero.

use std::process::{ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::common::node::{NodeProcess, command};
use crate::common::redis::{FAST_NODE_ARGS, TestRedis, free_port};
use crate::common::{WAIT, http, wait_until_async_within};

const API_KEY: &str = "terminal-test-key-0123456789";

/// `groupcast publish <args>` with `stdin` as its input; its output once
/// it exited.
async fn publish(args: &[&str], stdin: &str) -> Output {
    let mut child = tokio::process::Command::from(command())
        .arg("publish")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn groupcast publish");
    let mut input = child.stdin.take().expect("stdin is piped");
    input
        .write_all(stdin.as_bytes())
        .await
        .expect("write publish's stdin");
    drop(input);
    tokio::time::timeout(3 * WAIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("groupcast publish {args:?} did not finish"))
        .expect("wait for groupcast publish")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the run succeeded; its stderr.
fn succeeded(output: &Output) -> String {
    let stderr = stderr(output);
    assert!(output.status.success(), "publish failed: {stderr}");
    stderr
}

/// Asserts the run failed with exit status 1 and a one-line error on
/// stderr containing every one of `needles`.
fn failed_with(output: &Output, needles: &[&str]) {
    let stderr = stderr(output);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
    }
}

/// `n` lines, `line 1` to `line n`.
fn lines(n: usize) -> String {
    (1..=n).map(|i| format!("line {i}\n")).collect()
}

/// A running `groupcast tail`: its stdout lines as they come, its stderr
/// as a whole.
struct Tail {
    child: tokio::process::Child,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: Arc<Mutex<String>>,
    /// The task collecting stderr: done once the process closed it.
    stderr_read: Option<tokio::task::JoinHandle<()>>,
}

impl Tail {
    fn spawn(args: &[&str]) -> Tail {
        let mut child = tokio::process::Command::from(command())
            .arg("tail")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn groupcast tail");
        let (send, lines) = mpsc::unbounded_channel();
        let mut out = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                let _ = send.send(line);
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let collected = stderr.clone();
        let mut err = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();
        let stderr_read = tokio::spawn(async move {
            while let Ok(Some(line)) = err.next_line().await {
                let mut all = collected.lock().unwrap_or_else(|e| e.into_inner());
                all.push_str(&line);
                all.push('\n');
            }
        });
        Tail {
            child,
            lines,
            stderr,
            stderr_read: Some(stderr_read),
        }
    }

    fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until stderr holds `needle` `times` times.
    async fn wait_note(&self, needle: &str, times: usize, limit: Duration) {
        wait_until_async_within(&format!("tail notes {needle:?} x{times}"), limit, || {
            let seen = self.stderr().matches(needle).count();
            async move { seen >= times }
        })
        .await;
    }

    /// The next line on stdout.
    async fn next_line(&mut self) -> String {
        match tokio::time::timeout(WAIT, self.lines.recv()).await {
            Ok(Some(line)) => line,
            Ok(None) => panic!("tail's stdout ended; stderr:\n{}", self.stderr()),
            Err(_) => panic!(
                "no line from tail within {WAIT:?}; stderr:\n{}",
                self.stderr()
            ),
        }
    }

    /// The next line, as JSON.
    async fn next_json(&mut self) -> Value {
        let line = self.next_line().await;
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"))
    }

    /// Ctrl-C.
    fn interrupt(&self) {
        let pid = self.child.id().expect("tail is running") as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid; no memory involved.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    }

    /// Waits for the process to exit and for all it wrote to stderr.
    async fn exit(&mut self) -> ExitStatus {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("tail did not exit; stderr:\n{}", self.stderr()))
            .expect("wait for tail");
        if let Some(read) = self.stderr_read.take() {
            tokio::time::timeout(WAIT, read)
                .await
                .expect("tail's stderr closes when it exits")
                .expect("the stderr reader");
        }
        status
    }
}

/// `POST` a text message through the node's API; the answer.
async fn post(node: &NodeProcess, group: &str, text: &str) -> Value {
    let (status, answer) =
        http::post_text(&node.url(&format!("/api/groups/{group}/messages")), text).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

// ----- publish --------------------------------------------------------------------

/// `-` publishes stdin's lines through the API, one message each, in
/// order; empty lines are skipped and counted in the summary.
#[tokio::test]
async fn publish_sends_stdin_lines_through_the_api_in_order() {
    let node = NodeProcess::start("term-stdin", &[]).await;
    let mut client = node.connect("term/stdin", 1).await;
    let input = format!("{}\n{}", lines(100), "line 101\r\n");
    let output = publish(&["term/stdin", "-", "--url", &node.url("")], &input).await;
    let summary = succeeded(&output);
    assert!(
        summary.contains("101 messages to term/stdin through http://")
            && summary.contains("1 empty line(s) skipped"),
        "{summary}"
    );
    for i in 1..=101 {
        assert_eq!(client.recv_text().await, format!("line {i}"));
    }
}

/// `--rate 10` spaces 15 messages over at least 1.4 s, shows a progress
/// line once a second has passed, and loses none.
#[tokio::test]
async fn publish_rate_paces_and_shows_progress() {
    let node = NodeProcess::start("term-rate", &[]).await;
    let mut client = node.connect("term-rate", 1).await;
    let started = Instant::now();
    let output = publish(
        &["term-rate", "--url", &node.url(""), "--rate", "10"],
        &lines(15),
    )
    .await;
    let elapsed = started.elapsed();
    let stderr = succeeded(&output);
    // 15 messages at 10/s: the first at once, the last 1.4 s later. Only a
    // lower bound: a slow machine may take longer, never less.
    assert!(elapsed >= Duration::from_millis(1300), "{elapsed:?}");
    assert!(stderr.contains(" sent, "), "no progress line: {stderr}");
    assert!(stderr.contains("15 messages to term-rate"), "{stderr}");
    for i in 1..=15 {
        assert_eq!(client.recv_text().await, format!("line {i}"));
    }
}

/// A node with API keys: without one (or with a wrong one) publish fails
/// with the node's reason and what to do; with `--api-key` or
/// `GROUPCAST_API_KEY` the message arrives.
#[tokio::test]
async fn publish_needs_the_api_key_the_node_asks_for() {
    let node = NodeProcess::start("term-key", &["--api-keys", API_KEY]).await;
    let url = node.url("");
    // The API needs the key, so the member is watched with tail, which
    // joins over the WebSocket and says when it did.
    let mut tail = Tail::spawn(&["term-key", "--url", &url]);
    tail.wait_note("joined term-key", 1, WAIT).await;

    let output = publish(&["term-key", "nope", "--url", &url], "").await;
    failed_with(
        &output,
        &[
            "message 1 was not published",
            "401 api_key_missing",
            "--api-key",
        ],
    );
    let wrong = "wrong-key-0123456789abcdef";
    let output = publish(&["term-key", "nope", "--url", &url, "--api-key", wrong], "").await;
    failed_with(&output, &["api_key_invalid"]);

    let output = publish(
        &["term-key", "with key", "--url", &url, "--api-key", API_KEY],
        "",
    )
    .await;
    succeeded(&output);
    assert_eq!(tail.next_line().await, "with key");

    let mut by_env = tokio::process::Command::from(command());
    by_env
        .args(["publish", "term-key", "by env", "--url", &url])
        .env("GROUPCAST_API_KEY", API_KEY);
    let output = tokio::time::timeout(WAIT, by_env.output())
        .await
        .expect("publish finishes")
        .expect("run publish");
    succeeded(&output);
    // Nothing refused was delivered in between.
    assert_eq!(tail.next_line().await, "by env");
}

/// `--redis-url`: through the Redis Function the node loaded, a history
/// group keeps the messages and gives them offsets (tail `--json` shows
/// them), and a group without history is published live (no offset).
#[tokio::test]
async fn publish_straight_to_redis_reaches_members_with_offsets_for_history() {
    let redis = TestRedis::shared();
    let node = NodeProcess::start_clustered(
        "term-redis",
        &redis.url(),
        &["--history", "term-kept/*=100:1h"],
    )
    .await;
    let mut live = Tail::spawn(&["term-live", "--url", &node.url(""), "--json"]);
    let mut kept = Tail::spawn(&["term-kept/a", "--url", &node.url(""), "--json"]);
    live.wait_note("joined term-live", 1, WAIT).await;
    kept.wait_note("joined term-kept/a", 1, WAIT).await;

    let output = publish(
        &["term-live", "hello live", "--redis-url", &redis.url()],
        "",
    )
    .await;
    let summary = succeeded(&output);
    assert!(summary.contains("(groupcast_publish)"), "{summary}");
    let line = live.next_json().await;
    assert_eq!(line["group"], "term-live");
    assert_eq!(line["data"], "hello live");
    assert!(
        line["offset"].is_null() && line["epoch"].is_null(),
        "{line}"
    );

    let output = publish(
        &["term-kept/a", "-", "--redis-url", &redis.url()],
        &lines(3),
    )
    .await;
    let summary = succeeded(&output);
    assert!(summary.contains("offsets 1-3 of epoch "), "{summary}");
    let mut epoch = None;
    for i in 1..=3u64 {
        let line = kept.next_json().await;
        assert_eq!(line["group"], "term-kept/a");
        assert_eq!(line["data"], format!("line {i}"));
        assert_eq!(line["offset"], i);
        let this = line["epoch"].as_str().expect("an epoch").to_string();
        assert_eq!(*epoch.get_or_insert(this.clone()), this);
    }
    // And the history holds them: the node's API reads them back.
    let (status, history) = http::get_json(&node.url("/api/groups/term-kept/a/history")).await;
    assert_eq!(status, 200);
    assert_eq!(history["messages"].as_array().map(Vec::len), Some(3));
}

/// On a Redis where no node loaded the function (no `--history`), publish
/// says so and falls back to a plain PUBLISH, which members still get.
#[tokio::test]
async fn publish_to_redis_without_the_function_falls_back_to_publish() {
    let redis = TestRedis::start().await;
    let node = NodeProcess::start_clustered("term-plain", &redis.url(), &[]).await;
    let mut tail = Tail::spawn(&["term-plain", "--url", &node.url("")]);
    tail.wait_note("joined term-plain", 1, WAIT).await;
    let output = publish(&["term-plain", "-", "--redis-url", &redis.url()], &lines(2)).await;
    let stderr = succeeded(&output);
    assert!(
        stderr.contains("no groupcast_publish function")
            && stderr.contains("PUBLISH group:term-plain"),
        "{stderr}"
    );
    assert_eq!(tail.next_line().await, "line 1");
    assert_eq!(tail.next_line().await, "line 2");
}

/// Each failure exits 1 with a line that names it: a bad group name, an
/// unreachable node or Redis, a node refusing tail's query.
#[tokio::test]
async fn publish_and_tail_name_what_went_wrong() {
    let output = publish(&["bad//name", "x"], "").await;
    failed_with(
        &output,
        &["publish: error:", "\"bad//name\" is not a group name"],
    );

    let nowhere = format!("redis://127.0.0.1:{}", free_port());
    let output = publish(&["g", "x", "--redis-url", &nowhere], "").await;
    failed_with(&output, &["cannot connect to Redis at redis://127.0.0.1:"]);

    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let output = publish(&["g", "x", "--url", &nowhere], "").await;
    failed_with(&output, &["cannot reach the node at http://127.0.0.1:"]);

    let mut tail = Tail::spawn(&["g", "--url", &nowhere]);
    assert_eq!(tail.exit().await.code(), Some(1));
    assert!(
        tail.stderr().contains("cannot connect to ws://127.0.0.1:"),
        "{}",
        tail.stderr()
    );

    // `since` without `epoch`: the node refuses the upgrade with 400, and
    // tail prints its reason instead of retrying.
    let node = NodeProcess::start("term-errors", &[]).await;
    let url = format!("{}?since=5", node.ws_url("term-errors"));
    let mut tail = Tail::spawn(&[&url]);
    assert_eq!(tail.exit().await.code(), Some(1));
    assert!(tail.stderr().contains("400 bad_query"), "{}", tail.stderr());
}

// ----- tail -----------------------------------------------------------------------

/// tail prints what is published after it joined (not before); `--json`
/// adds group, offset and epoch, and `--history 1` starts with the last
/// retained message; Ctrl-C exits 0.
#[tokio::test]
async fn tail_prints_new_messages_json_fields_and_exits_0_on_ctrl_c() {
    let node = NodeProcess::start("term-tail", &["--history", "term-json/*=100:1h"]).await;
    post(&node, "term-json/a", "before 1").await;
    let before = post(&node, "term-json/a", "before 2").await;
    let epoch = before["epoch"].as_str().expect("a history group's epoch");

    let mut plain = Tail::spawn(&["term-json/a", "--url", &node.url("")]);
    let ws_url = node.ws_url("term-json/a");
    let mut json = Tail::spawn(&[&ws_url, "--json", "--history", "1"]);
    plain.wait_note("joined term-json/a", 1, WAIT).await;
    json.wait_note("joined term-json/a", 1, WAIT).await;
    post(&node, "term-json/a", "after").await;

    assert_eq!(plain.next_line().await, "after");
    let first = json.next_json().await;
    assert_eq!(
        (
            &first["group"],
            &first["offset"],
            &first["epoch"],
            &first["data"]
        ),
        (
            &Value::from("term-json/a"),
            &Value::from(2),
            &Value::from(epoch),
            &Value::from("before 2")
        )
    );
    let second = json.next_json().await;
    assert_eq!(
        (&second["offset"], &second["data"]),
        (&Value::from(3), &Value::from("after"))
    );

    plain.interrupt();
    json.interrupt();
    assert!(plain.exit().await.success(), "{}", plain.stderr());
    assert!(json.exit().await.success(), "{}", json.stderr());
}

/// A node dies under tail while messages keep coming (straight to Redis);
/// another one starts at the same address: tail reconnects, resumes with
/// since/epoch, and prints every message exactly once, in order.
#[tokio::test]
async fn tail_resumes_across_a_node_restart_without_loss_or_duplicates() {
    let redis = TestRedis::shared();
    let history = ["--history", "term-resume/*=100:1h"];
    let mut first = NodeProcess::start_clustered("term-resume-a", &redis.url(), &history).await;
    let addr = first.addr.to_string();
    let api = first.url("");
    let mut tail = Tail::spawn(&["term-resume/a", "--url", &api, "--json"]);
    tail.wait_note("joined term-resume/a", 1, WAIT).await;

    let output = publish(&["term-resume/a", "--url", &api], &lines(3)).await;
    succeeded(&output);
    for i in 1..=3u64 {
        assert_eq!(tail.next_json().await["offset"], i);
    }

    first.kill();
    tail.wait_note("connection lost", 1, WAIT).await;
    // Published while tail has no node: only a resume can bring these.
    let input: String = (4..=6).map(|i| format!("line {i}\n")).collect();
    let output = publish(&["term-resume/a", "--redis-url", &redis.url()], &input).await;
    succeeded(&output);

    // The same address, so that tail finds it (GROUPCAST_LISTEN gives the
    // builder's own port; --listen overrides it).
    let redis_url = redis.url();
    let mut args = vec![
        "--listen",
        &addr,
        "--redis-url",
        &redis_url,
        "--client-messages",
        "none",
    ];
    args.extend_from_slice(FAST_NODE_ARGS);
    args.extend_from_slice(&history);
    let _second = NodeProcess::builder("term-resume-b")
        .listen_by_env()
        .args(&args)
        .spawn();
    // tail's backoff doubles up to 10 s while the node is away.
    tail.wait_note("resumed term-resume/a", 1, 4 * WAIT).await;
    let mut next = 4u64;
    while next <= 6 {
        let line = tail.next_json().await;
        assert_eq!(
            (&line["offset"], &line["data"]),
            (&Value::from(next), &Value::from(format!("line {next}")))
        );
        next += 1;
    }
    let output = publish(&["term-resume/a", "line 7", "--url", &api], "").await;
    succeeded(&output);
    let line = tail.next_json().await;
    assert_eq!(
        (&line["offset"], &line["data"]),
        (&Value::from(7), &Value::from("line 7"))
    );
    assert!(
        !tail.stderr().contains("warning"),
        "a clean resume warns of nothing: {}",
        tail.stderr()
    );
    // Nothing was printed twice: the next line is the next message.
    let output = publish(&["term-resume/a", "end", "--url", &api], "").await;
    succeeded(&output);
    assert_eq!(tail.next_json().await["data"], "end");
}
