//! `callfold.toml`: every key named like a command-line option (without the dashes, `-` as
//! `_`) becomes that option's default, so the command line wins over the environment, the
//! environment over the file, and the file over the built-in defaults. The file alone sets the
//! linking rules (`[linking_rules]`) and the topic precedence graph (`precedence`). Secrets are
//! never read from it.
//!
//! The file is `--config PATH` (or `CALLFOLD_CONFIG`), else `callfold.toml` in the working
//! folder when there is one; without a file everything is as the built-in defaults say.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use callfold_ingest::LinkingRules;
use callfold_projector::{DEFAULT_PRECEDENCE, Precedence, PrecedenceCycle};
use clap::{Arg, Command};
use serde::Deserialize;

use crate::rule_validation::{self, misspelled_topic};

/// The environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "CALLFOLD_CONFIG";
/// The file used when none is named, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "callfold.toml";

/// Why the configuration cannot be used. Never quotes a value (one could be a secret put
/// there by mistake).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {problem}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
    /// The file is not TOML, or a key holds the wrong kind of value.
    #[error("{path} is not a valid configuration: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its line.
        problem: String,
    },
    /// A key names no option of any command.
    #[error("{path}: unknown key `{key}`{hint}")]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// A hint for keys that look like secrets.
        hint: &'static str,
    },
    /// An option's value is not one the option takes.
    #[error("{path}, line {line}: `{key}` is not a valid --{flag}: {problem}")]
    BadValue {
        /// The file.
        path: PathBuf,
        /// The line of the key.
        line: usize,
        /// The key.
        key: String,
        /// The option's flag, without its dashes.
        flag: String,
        /// What the option expects.
        problem: String,
    },
    /// A linking rule or a topic of the precedence graph is a mistake.
    #[error("{path}, line {line}: {problem}")]
    BadRule {
        /// The file.
        path: PathBuf,
        /// The line where the mistake is.
        line: usize,
        /// The mistake and its fix.
        problem: String,
    },
    /// The precedence graph has a cycle.
    #[error(transparent)]
    Cycle(#[from] PrecedenceCycle),
}

/// What the file holds: option defaults, then the tables only the file sets.
#[derive(Debug, Default, Deserialize)]
struct FileContents {
    /// `topic = ["/json/pointer", ...]`: where that topic keeps its call id.
    #[serde(default)]
    linking_rules: BTreeMap<String, Vec<String>>,
    /// `[["before", "after"], ...]`: replaces the default precedence graph.
    precedence: Option<Vec<(String, String)>>,
    /// Every other key: an option's default.
    #[serde(flatten)]
    options: BTreeMap<String, toml::Value>,
}

/// The configuration in effect.
#[derive(Debug, Default)]
pub struct Config {
    /// The file read, if any.
    pub path: Option<PathBuf>,
    /// The file's text, to say on which line a key is.
    text: String,
    contents: FileContents,
}

/// The 1-based line of the byte at `offset` of `text`.
fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The key a TOML line sets (`key = ...`, the key unquoted), if it sets one.
fn key_on_line(line: &str) -> Option<&str> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"').trim_matches('\'');
    (!key.is_empty() && !key.starts_with('[')).then_some(key)
}

/// The table (`[name]`) in force on `line` (1-based) of `text`, if any.
fn table_at(text: &str, line: usize) -> Option<&str> {
    text.lines()
        .take(line)
        .filter_map(|l| l.trim().strip_prefix('[')?.strip_suffix(']'))
        .filter(|name| !name.starts_with('['))
        .last()
        .map(str::trim)
}

/// The file named by `--config`/`--config=` in `args`, else by [`CONFIG_ENV`], else
/// [`DEFAULT_CONFIG_FILE`] when it exists.
fn locate(args: &[OsString]) -> Option<PathBuf> {
    let mut args = args.iter().filter_map(|arg| arg.to_str());
    while let Some(arg) = args.next() {
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    if let Some(path) = std::env::var_os(CONFIG_ENV) {
        return Some(PathBuf::from(path));
    }
    let default = Path::new(DEFAULT_CONFIG_FILE);
    default.exists().then(|| default.to_path_buf())
}

impl Config {
    /// Reads the configuration file the command line `args` point to, if any.
    pub fn for_args(args: &[OsString]) -> Result<Self, ConfigError> {
        let Some(path) = locate(args) else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::Unreadable {
            path: path.clone(),
            problem: e.to_string(),
        })?;
        let contents = toml::from_str(&text).map_err(|e| {
            // toml's own message may quote the value; say only where the problem is, which
            // key, and what kind of value it expects.
            let line = e.span().map_or(0, |span| line_at(&text, span.start));
            let key = text
                .lines()
                .nth(line.saturating_sub(1))
                .and_then(key_on_line)
                .map(|key| {
                    let key = if key.contains('.') {
                        format!("\"{key}\"")
                    } else {
                        key.to_owned()
                    };
                    match table_at(&text, line) {
                        Some(table) => format!("{table}.{key}"),
                        None => key,
                    }
                });
            let expected = e
                .message()
                .split_once("expected ")
                .map(|(_, expected)| expected.trim().replace("a sequence", "a list"));
            let problem = match (key, expected) {
                (Some(key), Some(expected)) => {
                    format!(
                        "line {line}, key `{key}`: a value of the wrong kind; expected {expected}"
                    )
                }
                (Some(key), None) => format!("line {line}, key `{key}`: not valid TOML"),
                (None, _) => format!("line {line}: not TOML, or a value of the wrong kind"),
            };
            ConfigError::Invalid {
                path: path.clone(),
                problem,
            }
        })?;
        Ok(Self {
            path: Some(path),
            text,
            contents,
        })
    }

    /// The line of the file on which `key` is set (in `table`, or before any table), or 0.
    fn line_of(&self, table: Option<&str>, key: &str) -> usize {
        let mut current: Option<&str> = None;
        for (index, line) in self.text.lines().enumerate() {
            let trimmed = line.trim();
            if let Some(name) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
                current = Some(name.trim());
            } else if current == table && key_on_line(trimmed) == Some(key) {
                return index + 1;
            }
        }
        0
    }

    /// The line of the first mention of `needle` in the file, or 0.
    fn line_mentioning(&self, needle: &str) -> usize {
        self.text
            .find(needle)
            .map_or(0, |at| line_at(&self.text, at))
    }

    /// `command` with the file's option keys as defaults of the options of that name, in every
    /// subcommand that has one (or on the command itself, for its global options). A key that
    /// none has is an error.
    pub fn apply(&self, mut command: Command) -> Result<Command, ConfigError> {
        let path = self.path.clone().unwrap_or_default();
        for (key, value) in &self.contents.options {
            let text = match value {
                toml::Value::String(text) => text.clone(),
                toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
                    value.to_string()
                }
                _ => {
                    let line = self.line_of(None, key);
                    return Err(ConfigError::Invalid {
                        path,
                        problem: format!(
                            "line {line}, key `{key}`: must be a string, a number or a boolean"
                        ),
                    });
                }
            };
            let Some(arg) = find_arg(&command, key) else {
                let hint = if key.contains("secret") || key.contains("token") {
                    ": secrets and tokens are read from the environment only"
                } else {
                    ""
                };
                let key = key.clone();
                return Err(ConfigError::UnknownKey { path, key, hint });
            };
            if let Some(problem) = value_problem(&arg, &text) {
                return Err(ConfigError::BadValue {
                    line: self.line_of(None, key),
                    path,
                    key: key.clone(),
                    flag: arg.get_long().unwrap_or(key).to_owned(),
                    problem,
                });
            }
            command = with_default(command, key, &text);
        }
        Ok(command)
    }

    /// Whether the file sets option `id`.
    pub fn sets(&self, id: &str) -> bool {
        self.contents.options.contains_key(id)
    }

    /// The default linking rules, with the file's `[linking_rules]` in place of the defaults of
    /// the topics it names; refused when a pointer is not a JSON pointer or a topic is a near
    /// miss of one of Allo's (see [`rule_validation`]).
    pub fn linking_rules(&self) -> Result<LinkingRules, ConfigError> {
        let mut rules = LinkingRules::default();
        for (topic, pointers) in &self.contents.linking_rules {
            let line = self.line_of(Some("linking_rules"), topic);
            let problem = misspelled_topic(topic)
                .map(|known| {
                    format!(
                        "the linking rules name the topic `{topic}`, which Allo does not send; \
                         did you mean `{known}`?"
                    )
                })
                .or_else(|| {
                    pointers
                        .iter()
                        .find_map(|pointer| rule_validation::pointer_problem(topic, pointer))
                });
            if let Some(problem) = problem {
                let path = self.path.clone().unwrap_or_default();
                return Err(ConfigError::BadRule {
                    path,
                    line,
                    problem,
                });
            }
            let pointers: Vec<&str> = pointers.iter().map(String::as_str).collect();
            rules = rules.with_rule(topic, &pointers);
        }
        Ok(rules)
    }

    /// The topics the file names, in its linking rules or its precedence graph, that are not
    /// Allo's (and not near misses of Allo's, which are errors): new topics, or mistakes the
    /// check cannot tell from one.
    pub fn unknown_topics(&self) -> Vec<&str> {
        let in_rules = self.contents.linking_rules.keys().map(String::as_str);
        let in_graph = self
            .contents
            .precedence
            .iter()
            .flatten()
            .flat_map(|(before, after)| [before.as_str(), after.as_str()]);
        let mut unknown: Vec<&str> = in_rules
            .chain(in_graph)
            .filter(|topic| !rule_validation::is_known_topic(topic))
            .collect();
        unknown.sort_unstable();
        unknown.dedup();
        unknown
    }

    /// The edges of the precedence graph in effect, `(before, after)`: the file's, or the
    /// default ones.
    pub fn precedence_edges(&self) -> Vec<(String, String)> {
        match &self.contents.precedence {
            Some(edges) => edges.clone(),
            None => DEFAULT_PRECEDENCE
                .iter()
                .map(|(before, after)| ((*before).to_owned(), (*after).to_owned()))
                .collect(),
        }
    }

    /// The file's precedence graph, or the default one; refused when a topic is a near miss of
    /// one of Allo's.
    pub fn precedence(&self) -> Result<Precedence, ConfigError> {
        let Some(edges) = &self.contents.precedence else {
            return Ok(Precedence::default());
        };
        let misspelled = edges
            .iter()
            .flat_map(|(before, after)| [before, after])
            .find_map(|topic| Some((topic, misspelled_topic(topic)?)));
        if let Some((topic, known)) = misspelled {
            return Err(ConfigError::BadRule {
                path: self.path.clone().unwrap_or_default(),
                line: self.line_mentioning(&format!("\"{topic}\"")),
                problem: format!(
                    "the precedence graph names the topic `{topic}`, which Allo does not send; \
                     did you mean `{known}`?"
                ),
            });
        }
        let edges: Vec<(&str, &str)> = edges
            .iter()
            .map(|(before, after)| (before.as_str(), after.as_str()))
            .collect();
        Ok(Precedence::from_edges(&edges)?)
    }
}

/// Why `text` is not a value option `arg` takes, in the words of its parser (never clap's own
/// message, which quotes the value); `None` when it is one.
fn value_problem(arg: &Arg, text: &str) -> Option<String> {
    if !arg.get_action().takes_values() {
        return None;
    }
    // The option alone, in a command of its own: its parser without its environment variable,
    // default or relations to other options.
    let alone = Command::new("callfold").no_binary_name(true).arg(
        Arg::new("value")
            .long("value")
            .num_args(1)
            .allow_hyphen_values(true)
            .value_parser(arg.get_value_parser().clone()),
    );
    let error = alone
        .try_get_matches_from([OsStr::new("--value"), OsStr::new(text)])
        .err()?;
    let possible: Vec<String> = arg
        .get_possible_values()
        .iter()
        .map(|value| value.get_name().to_owned())
        .collect();
    Some(match std::error::Error::source(&error) {
        Some(reason) => reason.to_string(),
        None if !possible.is_empty() => format!("expected one of {}", possible.join(", ")),
        None => "not a value this option takes".to_owned(),
    })
}

/// The option `id` of `command` or of any of its subcommands, at any depth.
fn find_arg(command: &Command, id: &str) -> Option<Arg> {
    command
        .get_arguments()
        .find(|arg| arg.get_id() == id)
        .cloned()
        .or_else(|| command.get_subcommands().find_map(|sub| find_arg(sub, id)))
}

/// `command` with `text` as the default of option `id` wherever it, or a subcommand at any
/// depth, has that option: `config check serve` takes the file's values as `serve` does.
fn with_default(mut command: Command, id: &str, text: &str) -> Command {
    if command.get_arguments().any(|arg| arg.get_id() == id) {
        command = command.mut_arg(id, |arg| arg.default_value(text.to_owned()));
    }
    let subcommands: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_owned())
        .collect();
    for name in subcommands {
        command = command.mut_subcommand(name, |sub| with_default(sub, id, text));
    }
    command
}
