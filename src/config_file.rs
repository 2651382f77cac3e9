//! The config file: `groupcast --config groupcast.toml` (or
//! `GROUPCAST_CONFIG`), `groupcast config example` and `groupcast config
//! check FILE`.
//!
//! The file is built on the command line instead of beside it, so that the
//! two cannot disagree:
//!
//! * **Keys are the long flag names**, flat (`max-message-size = 65536`,
//!   `history = ["task/*=1000:24h"]`): one key per flag, no tables, so a
//!   key is found by searching `--help`, and a new flag is a new key the
//!   moment it exists.
//! * **Values go through the flag's own value parser**, so the file accepts
//!   exactly what the flag accepts, and a bad value gets the flag's error,
//!   placed at the key's line.
//! * **A file value becomes the flag's default** for this run (clap's
//!   `Arg::default_values`), so clap's own precedence, command line, then
//!   environment, then default, gives flags > environment > file >
//!   defaults. A flag left out is not "given at its default": clap knows
//!   where each value came from (`ArgMatches::value_source`), and a flag
//!   can never override the file by accident. `config check` reports that
//!   same source for each setting.
//! * **`config example` walks the same `clap::Command`** (each argument's
//!   long name, help, default and variable), so it cannot drift from the
//!   flags; a test reads it back and compares it with the defaults.
//!
//! It is the binary's, not the library's, as the command line is: a
//! library user builds the option types in code.

use std::any::TypeId;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches};
use toml_edit::{Document, Item, Value};

use crate::cli::{Cli, ConfigCheckArgs};

/// Flags that are not settings: clap's own, and the file's path (a file
/// naming another file would only hide where a value came from).
const NOT_SETTINGS: [&str; 3] = ["help", "version", "config"];

/// What a setting's value is in TOML, from the Rust type its value parser
/// makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Boolean,
    Integer,
    /// Everything else (durations, addresses, names, URLs, paths, enums)
    /// is written as a string, as on the command line.
    String,
}

impl Kind {
    fn of(arg: &Arg) -> Kind {
        let made = arg.get_value_parser().type_id();
        let integers = [
            TypeId::of::<u8>(),
            TypeId::of::<u16>(),
            TypeId::of::<u32>(),
            TypeId::of::<u64>(),
            TypeId::of::<usize>(),
            TypeId::of::<i32>(),
            TypeId::of::<i64>(),
        ];
        if made == TypeId::of::<bool>() {
            Kind::Boolean
        } else if integers.iter().any(|integer| made == *integer) {
            Kind::Integer
        } else {
            Kind::String
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Boolean => "a boolean (true or false)",
            Kind::Integer => "an integer",
            Kind::String => "a string",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Kind::Boolean => "booleans",
            Kind::Integer => "integers",
            Kind::String => "strings",
        }
    }
}

/// One key of the file: one flag of the serving command line.
#[derive(Debug, Clone)]
struct Setting {
    /// clap's id (the field name), for `mut_arg` and `ArgMatches`.
    id: String,
    /// The long flag name, which is the key.
    key: String,
    kind: Kind,
    /// Repeatable flag: an array in the file.
    multiple: bool,
    /// Its values are never printed (`hide_env_values` flags: JWT secrets,
    /// API keys).
    secret: bool,
    env: Option<String>,
    help: String,
    defaults: Vec<String>,
    heading: Option<String>,
    value_name: String,
    /// The accepted spellings, for settings that are a choice.
    choices: Vec<String>,
}

/// The settings, in `--help`'s order. `command` must be built (clap fills
/// in some defaults, e.g. `false` for switches, when building).
fn settings(command: &Command) -> Vec<Setting> {
    command
        .get_arguments()
        .filter(|arg| !arg.is_positional())
        .filter_map(|arg| {
            let key = arg.get_long()?;
            if NOT_SETTINGS.contains(&key) {
                return None;
            }
            let kind = Kind::of(arg);
            let help = arg
                .get_long_help()
                .or(arg.get_help())
                .map(ToString::to_string)
                .unwrap_or_default();
            let choices = if kind == Kind::Boolean {
                Vec::new()
            } else {
                arg.get_possible_values()
                    .iter()
                    .filter(|value| !value.is_hide_set())
                    .map(|value| value.get_name().to_string())
                    .collect()
            };
            Some(Setting {
                id: arg.get_id().to_string(),
                key: key.to_string(),
                kind,
                multiple: matches!(arg.get_action(), ArgAction::Append),
                secret: arg.is_hide_env_values_set(),
                env: arg.get_env().map(|env| env.to_string_lossy().into_owned()),
                help,
                defaults: arg
                    .get_default_values()
                    .iter()
                    .map(|value| value.to_string_lossy().into_owned())
                    .collect(),
                heading: arg.get_help_heading().map(str::to_string),
                value_name: arg
                    .get_value_names()
                    .and_then(|names| names.first())
                    .map(|name| name.to_string())
                    .unwrap_or_else(|| key.to_uppercase().replace('-', "_")),
                choices,
            })
        })
        .collect()
}

/// The serving command line, built.
fn built_command() -> Command {
    let mut command = Cli::command();
    command.build();
    command
}

/// A config file that failed: where (the file, and the line and column
/// when the problem has one) and what.
#[derive(Debug)]
pub struct ConfigError {
    path: PathBuf,
    at: Option<(usize, usize)>,
    message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some((line, column)) => write!(
                f,
                "{}, line {line}, column {column}: {}",
                self.path.display(),
                self.message
            ),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// One key read from the file, checked.
#[derive(Debug, Clone)]
struct FileValue {
    id: String,
    values: Vec<String>,
    line: usize,
}

/// A read and checked config file.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    path: PathBuf,
    values: Vec<FileValue>,
}

impl ConfigFile {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
            path: path.to_path_buf(),
            at: None,
            message: format!("cannot read the config file: {error}"),
        })?;
        ConfigFile::parse(path, &text)
    }

    /// Checks `text`, the contents of the file at `path`: every key a
    /// setting, every value of its type and accepted by its flag.
    pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, ConfigError> {
        let error = |span: Option<std::ops::Range<usize>>, message: String| ConfigError {
            path: path.to_path_buf(),
            at: span.map(|span| position(text, span.start)),
            message,
        };
        let document = Document::parse(text).map_err(|e| {
            // toml_edit's message starts with the line and column and
            // shows the line; ours would repeat the position.
            error(None, e.to_string().trim_end().to_string())
        })?;
        let command = built_command();
        let known = settings(&command);
        let root = document.as_table();
        let mut values = Vec::new();
        for (key, item) in root.iter() {
            let key_span = root.get_key_value(key).and_then(|(key, _)| key.span());
            let Item::Value(value) = item else {
                return Err(error(
                    key_span,
                    format!(
                        "`{key}` is a table: the file is flat, one `key = value` per flag \
                         at the top (`max-message-size = 65536`, not under `[{key}]`)"
                    ),
                ));
            };
            let Some(setting) = known.iter().find(|setting| setting.key == key) else {
                return Err(error(key_span, unknown_key(key, &known)));
            };
            let arg = command
                .get_arguments()
                .find(|arg| arg.get_id() == setting.id.as_str());
            let mut strings = Vec::new();
            for (string, span) in strings_of(setting, value)
                .map_err(|e| error(value.span().or(key_span.clone()), e))?
            {
                if let Some(arg) = arg {
                    check_value(arg, setting, &string)
                        .map_err(|message| error(span.or(value.span()), message))?;
                }
                strings.push(string);
            }
            values.push(FileValue {
                id: setting.id.clone(),
                values: strings,
                line: key_span.map_or(0, |span| position(text, span.start).0),
            });
        }
        Ok(ConfigFile {
            path: path.to_path_buf(),
            values,
        })
    }

    /// `command` with the file's values as its defaults: clap then takes a
    /// flag, else its variable, else the file's value, else the default.
    fn apply(&self, command: Command) -> Command {
        self.values.iter().fold(command, |command, value| {
            let values = value.values.clone();
            command.mut_arg(&value.id, move |arg| arg.default_values(values))
        })
    }

    fn get(&self, id: &str) -> Option<&FileValue> {
        self.values.iter().find(|value| value.id == id)
    }
}

/// "unknown key", and the closest setting when one is close.
fn unknown_key(key: &str, known: &[Setting]) -> String {
    let closest = known
        .iter()
        .map(|setting| (strsim::jaro_winkler(key, &setting.key), &setting.key))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .filter(|(score, _)| *score > 0.8);
    match closest {
        Some((_, name)) => format!("unknown key `{key}` (did you mean `{name}`?)"),
        None if NOT_SETTINGS.contains(&key) => {
            format!("unknown key `{key}`: `--{key}` is not a setting of the file")
        }
        None => {
            format!("unknown key `{key}` (the keys are the long flag names of `groupcast --help`)")
        }
    }
}

/// The value's strings, each with its span, or what is wrong with its type.
#[allow(clippy::type_complexity)]
fn strings_of(
    setting: &Setting,
    value: &Value,
) -> Result<Vec<(String, Option<std::ops::Range<usize>>)>, String> {
    let one = |value: &Value| -> Option<String> {
        match (setting.kind, value) {
            (Kind::Boolean, Value::Boolean(b)) => Some(b.value().to_string()),
            (Kind::Integer, Value::Integer(i)) => Some(i.value().to_string()),
            (Kind::String, Value::String(s)) => Some(s.value().clone()),
            _ => None,
        }
    };
    let key = &setting.key;
    match value {
        Value::Array(array) if setting.multiple => array
            .iter()
            .map(|element| {
                one(element)
                    .map(|string| (string, element.span()))
                    .ok_or_else(|| {
                        format!(
                            "`{key}`: expected an array of {}, found an array holding {} {}",
                            setting.kind.plural(),
                            article(element.type_name()),
                            element.type_name()
                        )
                    })
            })
            .collect(),
        value => match one(value) {
            Some(string) => Ok(vec![(string, value.span())]),
            None if setting.multiple => Err(format!(
                "`{key}`: expected an array of {} (or one of them), found {} {}",
                setting.kind.plural(),
                article(value.type_name()),
                value.type_name()
            )),
            None => Err(format!(
                "`{key}`: expected {}, found {} {}",
                setting.kind.name(),
                article(value.type_name()),
                value.type_name()
            )),
        },
    }
}

fn article(noun: &str) -> &'static str {
    if noun.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// Runs the flag's own parsing on `value`: the flag alone in a command of
/// its own, given `--KEY=VALUE` (so a value is split where the flag splits
/// it, and refused as the flag refuses it).
fn check_value(arg: &Arg, setting: &Setting, value: &str) -> Result<(), String> {
    if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
        // A switch takes no value on the command line; the file's is a TOML
        // boolean, checked by its type.
        return Ok(());
    }
    let alone = Command::new("groupcast")
        .no_binary_name(true)
        .arg(arg.clone());
    let flag = format!("--{}={value}", setting.key);
    let Err(error) = alone.try_get_matches_from([flag]) else {
        return Ok(());
    };
    let cause = match std::error::Error::source(&error) {
        Some(cause) => cause.to_string(),
        None if !setting.choices.is_empty() => {
            format!("expected one of {}", setting.choices.join(", "))
        }
        None => error.kind().to_string(),
    };
    let shown = if setting.secret {
        "(hidden)".to_string()
    } else {
        format!("{value:?}")
    };
    Err(format!("`{}`: invalid value {shown}: {cause}", setting.key))
}

/// 1-based line and column (in characters) of a byte offset.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |line| line.chars().count())
        + 1;
    (line, column)
}

/// The serving command line from the process's arguments, with the config
/// file (`--config` or `GROUPCAST_CONFIG`) under the flags and variables.
/// clap's own errors (and `--help`) exit as usual; a bad file is an error.
pub fn parse() -> Result<Cli, ConfigError> {
    parse_from(std::env::args_os().collect())
}

/// [`parse`] for these arguments.
pub fn parse_from(args: Vec<OsString>) -> Result<Cli, ConfigError> {
    let mut command = Cli::command();
    let matches = command
        .try_get_matches_from_mut(&args)
        .unwrap_or_else(|error| error.exit());
    // Subcommands (token, tail, …) are tools, not a node: no file for them.
    let path = match (
        matches.subcommand_name(),
        matches.get_one::<PathBuf>("config"),
    ) {
        (None, Some(path)) => path.clone(),
        _ => return Ok(cli_from(&mut command, &matches)),
    };
    let file = ConfigFile::load(&path)?;
    let mut command = file.apply(Cli::command());
    let matches = command
        .try_get_matches_from_mut(&args)
        .unwrap_or_else(|error| error.exit());
    Ok(cli_from(&mut command, &matches))
}

fn cli_from(command: &mut Command, matches: &ArgMatches) -> Cli {
    Cli::from_arg_matches(matches).unwrap_or_else(|error| error.format(command).exit())
}

/// `groupcast config example`: every setting, commented with its help,
/// flag and variable, set to its default, or commented out where it has
/// none. Its uncommented lines are exactly the defaults.
pub fn example() -> String {
    let mut out = String::from(
        "# groupcast configuration (TOML), printed by `groupcast config example`.\n\
         #\n\
         # Use it with `groupcast --config groupcast.toml` (or GROUPCAST_CONFIG).\n\
         # Keys are the long flag names of `groupcast --help`, flat (no tables).\n\
         # Precedence: flags > GROUPCAST_* variables > this file > defaults.\n\
         # Every key below is at its default, or commented out where there is\n\
         # none; delete the ones you do not change. Durations take a unit\n\
         # (500ms, 10s, 2m); repeatable flags are arrays.\n\
         # `groupcast config check groupcast.toml` shows what a node would use.\n",
    );
    let command = built_command();
    let mut heading = None;
    for setting in settings(&command) {
        if setting.heading != heading {
            heading.clone_from(&setting.heading);
            if let Some(heading) = &heading {
                out.push_str(&format!("\n# ---- {heading} ----\n"));
            }
        }
        out.push('\n');
        for line in wrap(&setting.help, 76) {
            out.push_str(&format!("# {line}\n").replace("# \n", "#\n"));
        }
        if !setting.choices.is_empty() {
            out.push_str(&format!("# One of: {}.\n", setting.choices.join(", ")));
        }
        match &setting.env {
            Some(env) => out.push_str(&format!("# Flag --{}, variable {env}.\n", setting.key)),
            None => out.push_str(&format!("# Flag --{}.\n", setting.key)),
        }
        if setting.defaults.is_empty() {
            out.push_str(&format!("# {} = {}\n", setting.key, placeholder(&setting)));
        } else {
            out.push_str(&format!(
                "{} = {}\n",
                setting.key,
                toml_value(&setting, &setting.defaults)
            ));
        }
    }
    out
}

/// An example value for a setting without a default: its value name.
fn placeholder(setting: &Setting) -> String {
    let one = toml_string(&setting.value_name);
    if setting.multiple {
        format!("[{one}]")
    } else {
        one
    }
}

/// The help text as comment lines: paragraphs kept, each wrapped.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for (i, paragraph) in text.split("\n\n").enumerate() {
        if i > 0 {
            lines.push(String::new());
        }
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            if !line.is_empty() && line.len() + 1 + word.len() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        if !line.is_empty() {
            lines.push(line);
        }
    }
    lines
}

/// Values as TOML: an array for repeatable settings, bare booleans and
/// integers, quoted strings.
fn toml_value(setting: &Setting, values: &[String]) -> String {
    let one = |value: &String| match setting.kind {
        Kind::Boolean if value == "true" || value == "false" => value.clone(),
        Kind::Integer if value.parse::<i64>().is_ok() => value.clone(),
        _ => toml_string(value),
    };
    if setting.multiple {
        let values: Vec<String> = values.iter().map(one).collect();
        format!("[{}]", values.join(", "))
    } else {
        values.first().map(one).unwrap_or_default()
    }
}

/// A TOML basic string.
fn toml_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What `config check` failed on.
#[derive(Debug)]
pub enum CheckError {
    /// The file itself.
    File(ConfigError),
    /// The settings, once merged, do not make a node (a missing key file,
    /// a sharded mode without URLs, …).
    Settings(String),
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::File(error) => error.fmt(f),
            CheckError::Settings(error) => write!(f, "the settings do not make a node: {error}"),
        }
    }
}

/// `groupcast config check FILE [-- FLAGS]`: the file checked, merged with
/// the environment and the flags as a node would merge them, and the
/// result checked as a node would check it at startup (key files read,
/// the Redis mode's URLs, the log filter); the effective settings as TOML,
/// each with where it came from, secrets masked.
pub fn check(args: &ConfigCheckArgs) -> Result<String, CheckError> {
    let file = ConfigFile::load(&args.file).map_err(CheckError::File)?;
    let mut command = file.apply(Cli::command());
    let argv = std::iter::once(OsString::from("groupcast")).chain(args.flags.iter().cloned());
    let matches = command
        .try_get_matches_from_mut(argv)
        .unwrap_or_else(|error| error.exit());
    if matches.subcommand_name().is_some() {
        return Err(CheckError::Settings(
            "the flags after `--` are a node's flags, not a subcommand".into(),
        ));
    }
    let cli = cli_from(&mut command, &matches);
    let settings_error = |error: &dyn fmt::Display| CheckError::Settings(error.to_string());
    cli.backend().map_err(|e| settings_error(&e))?;
    cli.server_options().map_err(|e| settings_error(&e))?;
    cli.security.client_auth().map_err(|e| settings_error(&e))?;
    tracing_subscriber::EnvFilter::try_new(&cli.log)
        .map_err(|e| settings_error(&format!("--log {:?}: {e}", cli.log)))?;
    Ok(effective(&matches, &file))
}

/// The settings of `matches` as TOML lines, `key = value  # source`.
fn effective(matches: &ArgMatches, file: &ConfigFile) -> String {
    let mut out = format!(
        "# Effective settings: {} under GROUPCAST_* variables and flags.\n\
         # Each line says where its value came from: flag, env, file or default.\n",
        file.path.display()
    );
    // A fresh command for `--help`'s order: `mut_arg` moved the file's
    // arguments to the end of the one that parsed.
    for setting in settings(&built_command()) {
        let values: Vec<String> = matches
            .get_raw(&setting.id)
            .map(|raw| {
                raw.map(|value| value.to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let source = match matches.value_source(&setting.id) {
            Some(ValueSource::CommandLine) => "flag".to_string(),
            Some(ValueSource::EnvVariable) => {
                format!("env {}", setting.env.as_deref().unwrap_or("?"))
            }
            _ => match file.get(&setting.id) {
                Some(value) => format!("file, line {}", value.line),
                None => "default".to_string(),
            },
        };
        let shown: Vec<String> = values
            .iter()
            .map(|value| {
                if setting.secret {
                    "********".to_string()
                } else {
                    mask_url_password(value)
                }
            })
            .collect();
        if shown.is_empty() && !setting.multiple {
            out.push_str(&format!("# {} is unset  # {source}\n", setting.key));
        } else {
            out.push_str(&format!(
                "{} = {}  # {source}\n",
                setting.key,
                toml_value(&setting, &shown)
            ));
        }
    }
    out
}

/// A URL's password replaced by `****` (`redis://user:****@host:6379`);
/// anything else unchanged.
fn mask_url_password(value: &str) -> String {
    let Some(scheme_end) = value.find("://") else {
        return value.to_string();
    };
    let authority_start = scheme_end + 3;
    let authority_end = value[authority_start..]
        .find(['/', '?', '#'])
        .map_or(value.len(), |end| authority_start + end);
    let authority = &value[authority_start..authority_end];
    let Some(at) = authority.rfind('@') else {
        return value.to_string();
    };
    let userinfo = &authority[..at];
    let user = match userinfo.split_once(':') {
        Some((user, _password)) => user,
        // `redis://password@host` is read as a password by some clients.
        None if !userinfo.is_empty() => "",
        None => return value.to_string(),
    };
    format!(
        "{}{user}:****{}",
        &value[..authority_start],
        &value[authority_start + at..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Cli {
        let matches = Cli::command()
            .try_get_matches_from(["groupcast"])
            .expect("no flags parse");
        Cli::from_arg_matches(&matches).expect("a Cli")
    }

    fn with_file(text: &str, args: &[&str]) -> Cli {
        let file = ConfigFile::parse(Path::new("test.toml"), text).expect("the file is valid");
        let matches = file
            .apply(Cli::command())
            .try_get_matches_from(std::iter::once("groupcast").chain(args.iter().copied()))
            .expect("the flags parse");
        Cli::from_arg_matches(&matches).expect("a Cli")
    }

    fn error(text: &str) -> String {
        ConfigFile::parse(Path::new("test.toml"), text)
            .expect_err("the file is refused")
            .to_string()
    }

    #[test]
    fn the_example_is_the_defaults() {
        let example = example();
        assert_eq!(
            format!("{:?}", with_file(&example, &[])),
            format!("{:?}", defaults())
        );
        // Every setting is in it, set or commented out.
        for setting in settings(&built_command()) {
            assert!(
                example.contains(&format!("\n{} = ", setting.key))
                    || example.contains(&format!("\n# {} = ", setting.key)),
                "{} missing from:\n{example}",
                setting.key
            );
        }
    }

    #[test]
    fn file_values_apply_under_the_flags() {
        let text = "max-message-size = 1024\nhistory = [\"task/*=10:1h\"]\ncompression = true\n\
                    pong-wait = \"2m\"\nredis-url = \"redis://a:1\"\ndebug-endpoint = false\n";
        let cli = with_file(text, &[]);
        assert_eq!(cli.max_message_size, 1024);
        assert_eq!(cli.history.len(), 1);
        assert!(cli.compression);
        assert!(!cli.security.debug_endpoint);
        assert_eq!(cli.pong_wait, std::time::Duration::from_secs(120));
        assert_eq!(cli.redis_url, ["redis://a:1"]);
        let cli = with_file(text, &["--max-message-size", "7", "--history", "a=1:1s"]);
        assert_eq!(cli.max_message_size, 7);
        let rule: groupcast::history::HistoryRule = "a=1:1s".parse().expect("a rule");
        assert_eq!(format!("{:?}", cli.history), format!("{:?}", [rule]));
        // A flag left out leaves the file's value.
        let cli = with_file(text, &["--queue-len", "3"]);
        assert_eq!(cli.max_message_size, 1024);
    }

    #[test]
    fn errors_name_the_key_and_its_line() {
        let unknown = error("queue-len = 3\nmax-mesage-size = 1\n");
        assert!(unknown.contains("line 2, column 1"), "{unknown}");
        assert!(unknown.contains("`max-message-size`"), "{unknown}");
        let wrong_type = error("\nmax-message-size = \"big\"\n");
        assert!(wrong_type.contains("line 2"), "{wrong_type}");
        assert!(wrong_type.contains("expected an integer"), "{wrong_type}");
        let bad = error("queue-full = \"sometimes\"\n");
        assert!(bad.contains("line 1, column 14"), "{bad}");
        assert!(bad.contains("close, drop-oldest"), "{bad}");
        let bad = error("history = [\"ok=1:1s\", \"nope\"]\n");
        assert!(bad.contains("column 23"), "{bad}");
        let table = error("[security]\napi-keys = []\n");
        assert!(table.contains("flat"), "{table}");
        let secret = error("jwt-secret = [\"main:\"]\n");
        assert!(
            !secret.contains("main:") && secret.contains("(hidden)"),
            "{secret}"
        );
        let syntax = error("listen = \n");
        assert!(syntax.contains("line 1"), "{syntax}");
    }

    #[test]
    fn passwords_in_urls_are_masked() {
        assert_eq!(
            mask_url_password("redis://user:pw@host:6379/0"),
            "redis://user:****@host:6379/0"
        );
        assert_eq!(
            mask_url_password("rediss://:pw@host"),
            "rediss://:****@host"
        );
        assert_eq!(mask_url_password("redis://pw@host"), "redis://:****@host");
        assert_eq!(mask_url_password("redis://host:1"), "redis://host:1");
        assert_eq!(mask_url_password("0.0.0.0:8080"), "0.0.0.0:8080");
    }
}
