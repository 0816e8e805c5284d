//! `raftkv client`: one command per invocation for scripts, or an interactive prompt.
//!
//! Output and exit codes are part of the interface (scripts rely on them) and are documented in
//! `raftkv client --help`; keep [`AFTER_HELP`] in step with [`ExitStatus`].

use std::ffi::OsString;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use raftkv_client::{CasOutcome, Client, Config, Error};

const AFTER_HELP: &str = "\
Output (stdout):
  set, cas   OK <version>
  get        the value's bytes exactly, with no newline added
  getm       one line `version=<v> exptime=<seconds left, 0 = never> bytes=<n>`,
             then the value's bytes exactly, with no newline added
  delete     DELETED
Messages about failures go to stderr.

A VALUE of `-` is read from standard input.
With no command, an interactive prompt reads commands in the same syntax (quote values with
spaces: set k \"two words\"; escapes \\n \\r \\t \\\\ \\\" \\xNN), plus `history`, `!N`, `!!`,
`help` and `quit`.

Exit codes:
  0  success
  1  key not found (get, getm, cas, delete)
  2  usage error: bad arguments, invalid key, value too large, ttl too long
  3  cas: the key is at another version
  4  cluster unavailable: no leader reachable before --timeout; nothing was changed
  5  outcome unknown: no definite answer before --timeout (writes are retried in a session until
     then, and applied at most once), or the session expired meanwhile; it may or may not be applied
  6  other error: the server rejected the command or answered unexpectedly";

#[derive(clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// Client addresses of the cluster's nodes, comma-separated; any of them will do.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = crate::DEFAULT_ADDRS
    )]
    addr: Vec<String>,
    /// Seconds one command may take, leader search and retries included.
    #[arg(long, default_value_t = 5.0, value_parser = parse_seconds)]
    timeout: f64,
    #[command(flatten)]
    tls: crate::tls_args::TlsArgs,
    #[command(subcommand)]
    command: Option<KvCommand>,
}

#[derive(Subcommand, Debug)]
enum KvCommand {
    /// Store VALUE under KEY; prints `OK <version>`.
    Set {
        key: String,
        value: OsString,
        /// Expire after this many seconds (default: never).
        #[arg(long)]
        ttl: Option<u32>,
    },
    /// Print the value of KEY, exactly as stored.
    Get { key: String },
    /// Print `version=<v> exptime=<e> bytes=<n>`, a newline, then the value.
    Getm { key: String },
    /// Replace the value of KEY only if it is at VERSION; prints `OK <new version>`.
    Cas {
        key: String,
        version: u64,
        value: OsString,
        /// Expire after this many seconds (default: never).
        #[arg(long)]
        ttl: Option<u32>,
    },
    /// Delete KEY; prints `DELETED`.
    Delete { key: String },
}

/// What the prompt understands besides the commands.
#[derive(Parser)]
#[command(
    no_binary_name = true,
    disable_version_flag = true,
    override_usage = "<COMMAND> [ARGS]",
    after_help = AFTER_HELP
)]
struct PromptLine {
    #[command(subcommand)]
    command: PromptCommand,
}

#[derive(Subcommand)]
enum PromptCommand {
    #[command(flatten)]
    Kv(KvCommand),
    /// List the commands entered so far.
    History,
    /// Leave the prompt.
    #[command(alias = "exit")]
    Quit,
}

/// Process exit statuses; documented in [`AFTER_HELP`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExitStatus {
    Success = 0,
    NotFound = 1,
    Usage = 2,
    VersionMismatch = 3,
    Unavailable = 4,
    OutcomeUnknown = 5,
    Other = 6,
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> ExitCode {
        ExitCode::from(status as u8)
    }
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs <= 3600.0 => Ok(secs),
        _ => Err("expected a number of seconds between 0 and 3600".into()),
    }
}

pub fn run(args: Args) -> ExitCode {
    let tls = match args.tls.client_config() {
        Ok(tls) => tls,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(2);
        }
    };
    let config = Config {
        deadline: Duration::from_secs_f64(args.timeout),
        tls,
        ..Config::default()
    };
    let client = match Client::new(&args.addr, config) {
        Ok(client) => client,
        Err(error) => return report(&error).into(),
    };
    let Some(runtime) = crate::command_runtime() else {
        return ExitStatus::Other.into();
    };
    match args.command {
        Some(command) => {
            let mut stdout = std::io::stdout().lock();
            let status = runtime.block_on(execute(&client, command, &mut stdout, Mode::Script));
            if stdout.flush().is_err() {
                return ExitStatus::Other.into();
            }
            status.into()
        }
        None => prompt(&runtime, &client).into(),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Exact bytes for scripts.
    Script,
    /// Readable lines at the prompt; values from stdin are not available.
    Prompt,
}

async fn execute(
    client: &Client,
    command: KvCommand,
    out: &mut impl Write,
    mode: Mode,
) -> ExitStatus {
    match run_command(client, command, out, mode).await {
        Ok(status) => status,
        Err(Failure::Client(error)) => report(&error),
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitStatus::Usage
        }
        Err(Failure::Output(error)) => {
            // A closed pipe downstream is the reader's choice, not ours to complain about.
            if error.kind() != std::io::ErrorKind::BrokenPipe {
                eprintln!("error: writing output: {error}");
            }
            ExitStatus::Other
        }
    }
}

enum Failure {
    Client(Error),
    Usage(String),
    Output(std::io::Error),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure::Client(error)
    }
}

impl From<std::io::Error> for Failure {
    fn from(error: std::io::Error) -> Failure {
        Failure::Output(error)
    }
}

async fn run_command(
    client: &Client,
    command: KvCommand,
    out: &mut impl Write,
    mode: Mode,
) -> Result<ExitStatus, Failure> {
    let not_found = |key: &str| {
        eprintln!("ERR_NOT_FOUND: no key {key:?}");
        Ok(ExitStatus::NotFound)
    };
    match command {
        KvCommand::Set { key, value, ttl } => {
            let value = value_bytes(value, mode)?;
            let version = client.set(&key, &value, ttl).await?;
            writeln!(out, "OK {version}")?;
        }
        KvCommand::Get { key } => match client.get(&key).await? {
            Some(value) => {
                out.write_all(&value)?;
                if mode == Mode::Prompt {
                    writeln!(out)?;
                }
            }
            None => return not_found(&key),
        },
        KvCommand::Getm { key } => match client.getm(&key).await? {
            Some(meta) => {
                let length = meta.value.len();
                writeln!(
                    out,
                    "version={} exptime={} bytes={length}",
                    meta.version, meta.exptime
                )?;
                out.write_all(&meta.value)?;
                if mode == Mode::Prompt {
                    writeln!(out)?;
                }
            }
            None => return not_found(&key),
        },
        KvCommand::Cas {
            key,
            version,
            value,
            ttl,
        } => {
            let value = value_bytes(value, mode)?;
            match client.cas(&key, version, &value, ttl).await? {
                CasOutcome::Swapped { version } => writeln!(out, "OK {version}")?,
                CasOutcome::VersionMismatch => {
                    eprintln!("ERR_VERSION: {key:?} is not at version {version}");
                    return Ok(ExitStatus::VersionMismatch);
                }
                CasOutcome::NotFound => return not_found(&key),
            }
        }
        KvCommand::Delete { key } => {
            if !client.delete(&key).await? {
                return not_found(&key);
            }
            writeln!(out, "DELETED")?;
        }
    }
    Ok(ExitStatus::Success)
}

/// The value's bytes; `-` means standard input, read up to the protocol's limit.
fn value_bytes(value: OsString, mode: Mode) -> Result<Vec<u8>, Failure> {
    if value.as_bytes() != b"-" {
        return Ok(value.into_vec());
    }
    if mode == Mode::Prompt {
        return Err(Failure::Usage(
            "a value of `-` (stdin) is not available at the prompt".into(),
        ));
    }
    let limit = raftkv_client::proto::DEFAULT_MAX_VALUE_SIZE;
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| Failure::Usage(format!("reading the value from stdin: {error}")))?;
    if bytes.len() > limit {
        return Err(Failure::Usage(format!(
            "value on stdin is larger than {limit} bytes"
        )));
    }
    Ok(bytes)
}

fn report(error: &Error) -> ExitStatus {
    eprintln!("error: {error}");
    match error {
        Error::InvalidKey(_)
        | Error::ValueTooLarge { .. }
        | Error::InvalidTtl(_)
        | Error::NoAddresses => ExitStatus::Usage,
        Error::Unavailable(_) => ExitStatus::Unavailable,
        Error::OutcomeUnknown(_) => ExitStatus::OutcomeUnknown,
        Error::Rejected | Error::UnexpectedReply(_) | Error::MembershipRefused(_) => {
            ExitStatus::Other
        }
    }
}

/// How many prompt lines are remembered; older ones are forgotten.
const HISTORY_LIMIT: usize = 1000;
/// Longest prompt line accepted; longer lines are refused rather than buffered.
const MAX_LINE: usize = 2 << 20;

fn prompt(runtime: &tokio::runtime::Runtime, client: &Client) -> ExitStatus {
    let interactive = std::io::stdin().is_terminal();
    let mut input = std::io::stdin().lock();
    let mut history: Vec<String> = Vec::new();
    let mut line = Vec::new();
    loop {
        if interactive {
            print!("raftkv> ");
            let _ = std::io::stdout().flush();
        }
        line.clear();
        match (&mut input)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
        {
            Ok(0) => return ExitStatus::Success,
            Ok(_) if line.len() > MAX_LINE => {
                eprintln!("error: line longer than {MAX_LINE} bytes");
                // Skip the rest of the overlong line.
                let _ = input.skip_until(b'\n');
                continue;
            }
            Ok(_) => {}
            Err(error) => {
                eprintln!("error: reading input: {error}");
                return ExitStatus::Other;
            }
        }
        let text = String::from_utf8_lossy(&line).trim().to_string();
        if text.is_empty() {
            continue;
        }
        let text = match recall(&text, &history) {
            Ok(text) => text,
            Err(message) => {
                eprintln!("error: {message}");
                continue;
            }
        };
        if history.len() == HISTORY_LIMIT {
            history.remove(0);
        }
        history.push(text.clone());
        let words = match split_words(&text) {
            Ok(words) => words,
            Err(message) => {
                eprintln!("error: {message}");
                continue;
            }
        };
        match PromptLine::try_parse_from(words) {
            Err(error) => {
                // Help text goes to stdout, mistakes to stderr; neither ends the prompt.
                let _ = error.print();
            }
            Ok(PromptLine {
                command: PromptCommand::Quit,
            }) => return ExitStatus::Success,
            Ok(PromptLine {
                command: PromptCommand::History,
            }) => {
                for (number, entry) in history.iter().enumerate() {
                    println!("{:>4}  {entry}", number + 1);
                }
            }
            Ok(PromptLine {
                command: PromptCommand::Kv(command),
            }) => {
                let mut stdout = std::io::stdout().lock();
                runtime.block_on(execute(client, command, &mut stdout, Mode::Prompt));
                let _ = stdout.flush();
            }
        }
    }
}

/// Expands `!!` (the last line) and `!N` (line N of `history`).
fn recall(text: &str, history: &[String]) -> Result<String, String> {
    let Some(reference) = text.strip_prefix('!') else {
        return Ok(text.to_string());
    };
    let entry = if reference == "!" {
        history.last()
    } else {
        reference
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| history.get(i))
    };
    let entry = entry.ok_or_else(|| format!("no history entry {text}"))?;
    println!("{entry}");
    Ok(entry.clone())
}

/// Splits a prompt line into words: whitespace separates, "double quotes" group with escapes
/// (\n \r \t \\ \" \xNN), 'single quotes' group literally.
fn split_words(text: &str) -> Result<Vec<OsString>, String> {
    let mut words = Vec::new();
    let mut word: Vec<u8> = Vec::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(OsString::from_vec(std::mem::take(&mut word)));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => push_char(&mut word, c),
                        None => return Err("unterminated ' quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => word.push(unescape(&mut chars)?),
                        Some(c) => push_char(&mut word, c),
                        None => return Err("unterminated \" quote".into()),
                    }
                }
            }
            c => {
                in_word = true;
                push_char(&mut word, c);
            }
        }
    }
    if in_word {
        words.push(OsString::from_vec(word));
    }
    Ok(words)
}

fn push_char(word: &mut Vec<u8>, c: char) {
    let mut utf8 = [0u8; 4];
    word.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
}

fn unescape(chars: &mut std::str::Chars<'_>) -> Result<u8, String> {
    match chars.next() {
        Some('n') => Ok(b'\n'),
        Some('r') => Ok(b'\r'),
        Some('t') => Ok(b'\t'),
        Some('\\') => Ok(b'\\'),
        Some('"') => Ok(b'"'),
        Some('x') => {
            let hex: String = chars.by_ref().take(2).collect();
            u8::from_str_radix(&hex, 16).map_err(|_| format!("bad escape \\x{hex}"))
        }
        Some(other) => Err(format!("unknown escape \\{other}")),
        None => Err("line ends with \\".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_quoted_words_and_escapes() {
        let words = split_words(r#"set k "two words\r\n\x00" 'a "b"' --ttl 5"#).unwrap();
        let expected: Vec<OsString> = vec![
            "set".into(),
            "k".into(),
            OsString::from_vec(b"two words\r\n\0".to_vec()),
            "a \"b\"".into(),
            "--ttl".into(),
            "5".into(),
        ];
        assert_eq!(words, expected);
        assert!(split_words("set k \"open").is_err());
        assert!(split_words(r#"set k "\q""#).is_err());
    }

    #[test]
    fn recalls_history() {
        let history = vec!["get a".to_string(), "get b".to_string()];
        assert_eq!(recall("!!", &history).unwrap(), "get b");
        assert_eq!(recall("!1", &history).unwrap(), "get a");
        assert!(recall("!3", &history).is_err());
        assert!(recall("!0", &history).is_err());
        assert_eq!(recall("get c", &history).unwrap(), "get c");
    }

    #[test]
    fn prompt_lines_parse_like_the_command_line() {
        let line = PromptLine::try_parse_from(split_words("cas k 7 v --ttl 9").unwrap()).unwrap();
        assert!(matches!(
            line.command,
            PromptCommand::Kv(KvCommand::Cas {
                version: 7,
                ttl: Some(9),
                ..
            })
        ));
        assert!(matches!(
            PromptLine::try_parse_from(["exit"]).unwrap().command,
            PromptCommand::Quit
        ));
        assert!(PromptLine::try_parse_from(["set", "k"]).is_err());
    }
}
