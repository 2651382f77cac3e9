//! The config file, through the real binary: `groupcast config example`
//! reads back as the defaults; a node takes its settings from the file
//! (`--config` or `GROUPCAST_CONFIG`) under its variables and flags; the
//! precedence, flags > environment > file > defaults, holds key by key
//! (`config check` names each value's source), and a flag left out does not
//! override the file; an unknown key, a wrong type and a bad value each stop
//! the binary with the key and its line; `config check` masks secrets.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Output, Stdio};

use crate::common::node::{NodeProcess, command};
use crate::common::{WAIT, http};

/// A file under the test's temporary directory, holding `text`.
fn file(name: &str, text: &str) -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("config-file");
    std::fs::create_dir_all(&dir).expect("create the config directory");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the config file");
    path
}

/// `groupcast <args>` with the variables `envs`, once it exited (within
/// the tests' wait).
async fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::from(command());
    command
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    tokio::time::timeout(WAIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("groupcast {args:?} did not finish"))
        .expect("run groupcast")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// One line of `config check`: the value as TOML and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Effective {
    value: String,
    source: String,
}

/// `groupcast config check FILE [-- FLAGS]` with `envs`, asserted to
/// succeed; its settings by key (unset ones have the value `unset`).
async fn check(
    path: &std::path::Path,
    flags: &[&str],
    envs: &[(&str, &str)],
) -> BTreeMap<String, Effective> {
    let path = path.to_str().expect("a UTF-8 path");
    let mut args = vec!["config", "check", path];
    if !flags.is_empty() {
        args.push("--");
        args.extend_from_slice(flags);
    }
    let output = run(&args, envs).await;
    assert!(
        output.status.success(),
        "config check failed: {}",
        stderr(&output)
    );
    let mut settings = BTreeMap::new();
    for line in stdout(&output).lines() {
        if line.starts_with("# Effective") || line.starts_with("# Each") {
            continue;
        }
        let (setting, source) = line
            .rsplit_once("  # ")
            .unwrap_or_else(|| panic!("no source on {line:?}"));
        let (key, value) = match setting.strip_prefix("# ") {
            Some(unset) => (unset.trim_end_matches(" is unset"), "unset"),
            None => setting
                .split_once(" = ")
                .unwrap_or_else(|| panic!("not `key = value`: {line:?}")),
        };
        settings.insert(
            key.to_string(),
            Effective {
                value: value.to_string(),
                source: source.to_string(),
            },
        );
    }
    assert!(settings.len() > 40, "too few settings: {settings:?}");
    settings
}

/// Asserts that the binary refused `path`, both serving (`--config`) and
/// checking it, with exit status 2 and a message naming `needles` (the
/// key, its line).
async fn refused(path: &std::path::Path, needles: &[&str]) -> String {
    let path = path.to_str().expect("a UTF-8 path");
    let mut message = String::new();
    for args in [
        vec!["--config", path, "--listen", "127.0.0.1:0"],
        vec!["config", "check", path],
    ] {
        let output = run(&args, &[]).await;
        message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {message}");
        for needle in needles {
            assert!(
                message.contains(needle),
                "{args:?}: {needle:?} not in {message}"
            );
        }
        assert_eq!(message.trim_end().lines().count(), 1, "one line: {message}");
    }
    message
}

#[tokio::test]
async fn the_example_reads_back_as_the_defaults() {
    let output = run(&["config", "example"], &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let example = stdout(&output);
    let example_path = file("example.toml", &example);
    let from_example = check(&example_path, &[], &[]).await;
    let defaults = check(&file("empty.toml", ""), &[], &[]).await;

    // Same keys, same values; the example's lines are each a file value,
    // and what it leaves commented out has no default.
    assert_eq!(
        from_example.keys().collect::<Vec<_>>(),
        defaults.keys().collect::<Vec<_>>()
    );
    for (key, default) in &defaults {
        let ours = &from_example[key];
        assert_eq!(ours.value, default.value, "{key}");
        assert_eq!(default.source, "default", "{key}");
        let set = example.contains(&format!("\n{key} = "));
        let commented = example.contains(&format!("\n# {key} = "));
        assert!(set ^ commented, "{key} is neither set nor commented out");
        if set {
            assert!(ours.source.starts_with("file, line "), "{key}: {ours:?}");
        } else {
            assert!(
                default.value == "unset" || default.value == "[]",
                "{key} has a default but is commented out: {default:?}"
            );
        }
        // Each key says which variable sets it.
        assert!(
            example.contains(&format!("# Flag --{key}, variable GROUPCAST_")),
            "{key} has no variable in the example"
        );
    }

    // And a node runs on it.
    let node = NodeProcess::builder("config-example")
        .args(&["--config", example_path.to_str().expect("UTF-8")])
        .spawn();
    node.wait_ready().await;
    let (_, info) = http::get_json(&node.url("/api/info")).await;
    assert_eq!(info["client_messages"], "group");
}

#[tokio::test]
async fn a_node_takes_the_file_under_its_variables_and_flags() {
    // The builder gives --listen and --node-id as flags: were the file's
    // listen address used, the node would not be found ready.
    let path = file(
        "node.toml",
        "client-messages = \"none\"\nmax-message-size = 100\nnode-id = \"from-file\"\n\
         listen = \"127.0.0.1:1\"\nlog = \"warn\"\n",
    );
    let path = path.to_str().expect("UTF-8");
    let node = NodeProcess::builder("config-node")
        .args(&["--config", path])
        .spawn();
    node.wait_ready().await;
    let (_, info) = http::get_json(&node.url("/api/info")).await;
    assert_eq!(info["node"], "config-node", "the flag beats the file");
    assert_eq!(
        info["client_messages"], "none",
        "the file beats the default"
    );
    // max-message-size from the file: a larger message closes with 1009.
    let mut client = node.connect("g", 1).await;
    client.send_text(&"x".repeat(200)).await;
    client.expect_close_code(1009).await;

    // GROUPCAST_CONFIG names the file too, and a variable beats it.
    let by_env = NodeProcess::builder("config-env")
        .env("GROUPCAST_CONFIG", path)
        .env("GROUPCAST_CLIENT_MESSAGES", "group")
        .spawn();
    by_env.wait_ready().await;
    let (_, info) = http::get_json(&by_env.url("/api/info")).await;
    assert_eq!(
        info["client_messages"], "group",
        "the variable beats the file"
    );
}

#[tokio::test]
async fn flags_beat_variables_beat_the_file_beats_the_defaults() {
    let path = file(
        "precedence.toml",
        "max-message-size = 1024\nqueue-len = 64\nwrite-timeout = \"3s\"\n\
         history = [\"task/*=1000:24h\"]\ncompression = true\nmax-groups = 5\n",
    );
    let envs = [
        ("GROUPCAST_MAX_MESSAGE_SIZE", "2048"),
        ("GROUPCAST_QUEUE_LEN", "32"),
    ];
    let settings = check(
        &path,
        // --max-groups given at its default value is still a flag.
        &["--max-message-size", "7", "--max-groups", "10000"],
        &envs,
    )
    .await;
    let is = |key: &str, value: &str, source: &str| {
        assert_eq!(
            settings[key],
            Effective {
                value: value.into(),
                source: source.into()
            },
            "{key}"
        );
    };
    is("max-message-size", "7", "flag");
    is("max-groups", "10000", "flag");
    is("queue-len", "32", "env GROUPCAST_QUEUE_LEN");
    // Given neither as a flag nor a variable: the file's, although other
    // flags are given.
    is("write-timeout", "\"3s\"", "file, line 3");
    is("history", "[\"task/*=1000:24h\"]", "file, line 4");
    is("compression", "true", "file, line 5");
    is("pong-wait", "\"1m\"", "default");
    is("node-id", "unset", "default");
}

#[tokio::test]
async fn an_unknown_key_names_it_its_line_and_the_closest_key() {
    let path = file(
        "unknown.toml",
        "# limits\nqueue-len = 3\nmax-mesage-size = 1\n",
    );
    refused(
        &path,
        &["max-mesage-size", "line 3, column 1", "max-message-size"],
    )
    .await;
    let path = file("table.toml", "[security]\napi-keys = []\n");
    refused(&path, &["security", "line 1", "flat"]).await;
}

#[tokio::test]
async fn a_wrong_type_names_the_key_and_its_line() {
    let path = file("type.toml", "\n\nmax-message-size = \"big\"\n");
    refused(
        &path,
        &[
            "max-message-size",
            "line 3",
            "expected an integer, found a string",
        ],
    )
    .await;
    let path = file("array.toml", "listen = \"0.0.0.0:1\"\nhistory = [1]\n");
    refused(&path, &["history", "line 2", "array of strings"]).await;
}

#[tokio::test]
async fn a_bad_value_names_the_key_its_line_and_the_flags_error() {
    let path = file("value.toml", "log = \"warn\"\nqueue-full = \"sometimes\"\n");
    refused(
        &path,
        &[
            "queue-full",
            "line 2, column 14",
            "\"sometimes\"",
            "close, drop-oldest",
        ],
    )
    .await;
    let path = file(
        "duration.toml",
        "pong-wait = \"1m\"\nping-period = \"soon\"\n",
    );
    refused(&path, &["ping-period", "line 2", "\"soon\""]).await;
    let path = file(
        "history.toml",
        "history = [\"task/*=1000:24h\", \"nope\"]\n",
    );
    refused(&path, &["history", "line 1, column 31", "\"nope\""]).await;
}

#[tokio::test]
async fn config_check_masks_secrets() {
    let secret = "config-test-jwt-secret-0123456789abcdef";
    let api_key = "config-test-api-key-0123";
    let env_key = "config-test-env-key-4567";
    let path = file(
        "secrets.toml",
        &format!(
            "jwt-secret = [\"main:{secret}\"]\napi-keys = [\"{api_key}\"]\n\
             redis-url = \"redis://app:hunter2-password@localhost:6379/0\"\n"
        ),
    );
    let path_str = path.to_str().expect("UTF-8");
    let output = run(
        &["config", "check", path_str],
        &[("GROUPCAST_API_KEYS", env_key)],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let shown = stdout(&output);
    for hidden in [secret, api_key, env_key, "hunter2-password"] {
        assert!(!shown.contains(hidden), "{hidden} shown in:\n{shown}");
    }
    assert!(
        shown.contains("jwt-secret = [\"********\"]  # file, line 1"),
        "{shown}"
    );
    assert!(
        shown.contains("api-keys = [\"********\"]  # env GROUPCAST_API_KEYS"),
        "{shown}"
    );
    assert!(
        shown.contains("redis-url = [\"redis://app:****@localhost:6379/0\"]  # file, line 3"),
        "{shown}"
    );

    // A refused secret is not repeated in the error either.
    let path = file("short.toml", "jwt-secret = [\"too-short-secret\"]\n");
    let output = run(&["config", "check", path.to_str().expect("UTF-8")], &[]).await;
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(message.contains("at least 32"), "{message}");
    assert!(!message.contains("too-short-secret"), "{message}");
    let path = file(
        "empty-secret.toml",
        "api-keys = []\njwt-secret = [\"main:\"]\n",
    );
    let message = refused(&path, &["jwt-secret", "line 2", "(hidden)"]).await;
    assert!(!message.contains("main:"), "{message}");
}
