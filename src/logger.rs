//! The logger `avm-node` installs: a `log::Log` that writes to stderr,
//! filtered by `RUST_LOG`.
//!
//! The library itself only logs through the `log` facade, so an embedding
//! application routes or silences avm's lines with whatever logger it
//! installs. This one is for the binary, examples and benches:
//! [`init`] once, first thing.
//!
//! Each line reads `[   1.234s] INFO  alpha/reactor: message`: seconds since
//! [`init`], the level, the thread's name (a node names its threads after
//! itself), the message. A line is one write to a locked stderr, so lines
//! from different threads never interleave.
//!
//! `RUST_LOG` is a comma-separated list of directives, as for env_logger:
//!
//! - a bare level (`error`, `warn`, `info`, `debug`, `trace`, `off`) sets the
//!   default;
//! - `target=level` sets the level of every target that is `target` or lies
//!   below it (`avm::reactor` covers `avm::reactor::peers`, not
//!   `avm::reactorx`); the longest matching target wins.
//!
//! `RUST_LOG=warn,avm::reactor=debug` shows warnings everywhere and the
//! reactor's debug lines. Items that do not parse are skipped; the default
//! is `info` unless a bare level says otherwise, and also when `RUST_LOG` is
//! unset or nothing in it parses. (env_logger turns unnamed targets off once
//! any `target=level` is given; here they stay at `info`, so warnings are
//! not lost by asking for one module's debug lines. `off,avm=debug` gives
//! env_logger's behavior.)

use std::io::Write;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use log::{LevelFilter, Log, Metadata, Record};

/// Installs the stderr logger, configured from `RUST_LOG`, and sets
/// `log::max_level` to the most verbose level it names. Idempotent; if
/// some other logger is already installed, leaves it (and the max level)
/// alone.
pub fn init() {
    static LOGGER: OnceLock<Logger> = OnceLock::new();
    let mut fresh = false;
    let logger = LOGGER.get_or_init(|| {
        fresh = true;
        Logger {
            filter: std::env::var("RUST_LOG")
                .ok()
                .and_then(|spec| Filter::parse(&spec))
                .unwrap_or_default(),
            start: Instant::now(),
        }
    });
    if fresh && log::set_logger(logger).is_ok() {
        log::set_max_level(logger.filter.max_level());
        // A typo would otherwise leave the level at info without a word.
        let spec = std::env::var("RUST_LOG").unwrap_or_default();
        for item in Filter::ignored(&spec) {
            log::warn!(
                "RUST_LOG: `{item}` ignored: not a level (error, warn, info, debug, trace, off) \
                 or TARGET=LEVEL"
            );
        }
    }
}

#[derive(Debug)]
struct Logger {
    filter: Filter,
    start: Instant,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.filter.level_for(metadata.target())
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let thread = std::thread::current();
        // One write_fmt on a locked handle keeps lines from interleaving.
        let _ = write_line(
            &mut std::io::stderr().lock(),
            self.start.elapsed(),
            thread.name().unwrap_or("-"),
            record,
        );
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// `[    1.234s] INFO  alpha/reactor: message`, newline included, in one
/// `write_fmt`.
fn write_line(
    out: &mut impl Write,
    elapsed: Duration,
    thread: &str,
    record: &Record<'_>,
) -> std::io::Result<()> {
    writeln!(
        out,
        "[{:>5}.{:03}s] {:<5} {thread}: {}",
        elapsed.as_secs(),
        elapsed.subsec_millis(),
        record.level(),
        record.args()
    )
}

/// A parsed `RUST_LOG`: a default level and per-target levels.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Filter {
    default: LevelFilter,
    /// `(target, level)` in the order given; a later duplicate wins.
    targets: Vec<(String, LevelFilter)>,
}

impl Default for Filter {
    fn default() -> Filter {
        Filter {
            default: LevelFilter::Info,
            targets: Vec::new(),
        }
    }
}

impl Filter {
    /// The directives of `spec` that [`Filter::parse`] skips.
    fn ignored(spec: &str) -> Vec<&str> {
        let level = |l: &str| LevelFilter::from_str(l.trim()).is_ok();
        spec.split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .filter(|item| match item.split_once('=') {
                None => !level(item),
                Some((target, l)) => target.trim().is_empty() || !level(l),
            })
            .collect()
    }

    /// Parses a `RUST_LOG` value; `None` when no directive in it parses.
    fn parse(spec: &str) -> Option<Filter> {
        let mut filter = Filter::default();
        let mut any = false;
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            match item.split_once('=') {
                None => match LevelFilter::from_str(item) {
                    Ok(level) => filter.default = level,
                    Err(_) => continue,
                },
                Some((target, level)) => {
                    let (target, level) = (target.trim(), level.trim());
                    match LevelFilter::from_str(level) {
                        Ok(level) if !target.is_empty() => {
                            filter.targets.push((target.to_owned(), level))
                        }
                        _ => continue,
                    }
                }
            }
            any = true;
        }
        any.then_some(filter)
    }

    /// The level for `target`: that of the longest directive it lies
    /// under, else the default.
    fn level_for(&self, target: &str) -> LevelFilter {
        let mut best: Option<(usize, LevelFilter)> = None;
        for (prefix, level) in &self.targets {
            let covers = target
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"));
            if covers && best.is_none_or(|(len, _)| prefix.len() >= len) {
                best = Some((prefix.len(), *level));
            }
        }
        best.map_or(self.default, |(_, level)| level)
    }

    /// The most verbose level any directive allows.
    fn max_level(&self) -> LevelFilter {
        self.targets
            .iter()
            .map(|(_, level)| *level)
            .fold(self.default, Ord::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LevelFilter::*;

    fn filter(spec: &str) -> Filter {
        Filter::parse(spec).unwrap_or_else(|| panic!("`{spec}` should parse"))
    }

    #[test]
    fn directives_that_are_not_ones_are_named() {
        assert_eq!(Filter::ignored("bogus"), vec!["bogus"]);
        assert_eq!(
            Filter::ignored("debug, avm=loud ,=info,avm::vm=trace"),
            vec!["avm=loud", "=info"]
        );
        assert!(Filter::ignored("").is_empty());
    }

    #[test]
    fn parse_bare_level_sets_the_default() {
        assert_eq!(filter("debug").default, Debug);
        assert_eq!(filter("WARN").default, Warn);
        assert_eq!(filter("off").default, Off);
        assert_eq!(filter(" trace ").max_level(), Trace);
        assert!(filter("error").targets.is_empty());
    }

    #[test]
    fn parse_target_directives_keep_the_default_at_info() {
        let f = filter("avm::reactor=debug");
        assert_eq!(f.default, Info);
        assert_eq!(f.targets, vec![("avm::reactor".to_owned(), Debug)]);
        assert_eq!(f.max_level(), Debug);
    }

    #[test]
    fn parse_default_and_targets_in_any_order() {
        let f = filter("avm::node=trace, warn ,avm::reactor=debug");
        assert_eq!(f.default, Warn);
        assert_eq!(f.level_for("avm::node"), Trace);
        assert_eq!(f.level_for("avm::reactor::conn"), Debug);
        assert_eq!(f.level_for("avm::vm"), Warn);
        assert_eq!(f.max_level(), Trace);
    }

    #[test]
    fn parse_skips_what_it_does_not_understand() {
        assert_eq!(Filter::parse(""), None);
        assert_eq!(Filter::parse("nonsense"), None);
        assert_eq!(Filter::parse("avm=loud,=debug, ,"), None);
        let f = filter("nonsense,avm=loud,warn");
        assert_eq!(f, filter("warn"));
    }

    #[test]
    fn unparsable_or_unset_means_info() {
        let f = Filter::parse("verbose please").unwrap_or_default();
        assert_eq!(f.level_for("avm::node"), Info);
        assert_eq!(f.max_level(), Info);
    }

    #[test]
    fn match_on_module_path_boundaries() {
        let f = filter("warn,avm::reactor=debug");
        assert_eq!(f.level_for("avm::reactor"), Debug);
        assert_eq!(f.level_for("avm::reactor::peers"), Debug);
        assert_eq!(f.level_for("avm::reactorx"), Warn);
        assert_eq!(f.level_for("avm::reacto"), Warn);
        assert_eq!(f.level_for("avm"), Warn);
        assert_eq!(f.level_for("avm_node"), Warn);
    }

    #[test]
    fn match_longest_prefix_wins_whatever_the_order() {
        for spec in [
            "avm=trace,avm::reactor=error,avm::reactor::peers=debug",
            "avm::reactor::peers=debug,avm::reactor=error,avm=trace",
        ] {
            let f = filter(spec);
            assert_eq!(f.level_for("avm::reactor::peers"), Debug, "{spec}");
            assert_eq!(f.level_for("avm::reactor::conn"), Error, "{spec}");
            assert_eq!(f.level_for("avm::reactor"), Error, "{spec}");
            assert_eq!(f.level_for("avm::node"), Trace, "{spec}");
            assert_eq!(f.level_for("other"), Info, "{spec}");
        }
    }

    #[test]
    fn match_later_duplicate_wins() {
        let f = filter("avm=debug,avm=error");
        assert_eq!(f.level_for("avm::vm"), Error);
    }

    #[test]
    fn off_silences_a_target_or_everything() {
        let f = filter("off");
        assert_eq!(f.level_for("avm::node"), Off);
        assert_eq!(f.max_level(), Off);
        let f = filter("debug,avm::reactor=off");
        assert_eq!(f.level_for("avm::reactor::peers"), Off);
        assert_eq!(f.level_for("avm::node"), Debug);
    }

    #[test]
    fn line_format() {
        let line = |elapsed, level, msg: &str| {
            let args = format_args!("{msg}");
            let record = Record::builder().level(level).args(args).build();
            let mut out = Vec::new();
            write_line(&mut out, elapsed, "alpha/reactor", &record).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            line(Duration::from_millis(1234), log::Level::Info, "message"),
            "[    1.234s] INFO  alpha/reactor: message\n"
        );
        assert_eq!(
            line(Duration::from_micros(123_456_789), log::Level::Debug, "m"),
            "[  123.456s] DEBUG alpha/reactor: m\n"
        );
        assert_eq!(
            line(Duration::ZERO, log::Level::Warn, "m"),
            "[    0.000s] WARN  alpha/reactor: m\n"
        );
    }

    #[test]
    fn enabled_compares_the_record_level() {
        let logger = Logger {
            filter: filter("warn,avm::reactor=debug"),
            start: Instant::now(),
        };
        let meta = |level, target| Metadata::builder().level(level).target(target).build();
        assert!(logger.enabled(&meta(log::Level::Debug, "avm::reactor::peers")));
        assert!(!logger.enabled(&meta(log::Level::Trace, "avm::reactor::peers")));
        assert!(!logger.enabled(&meta(log::Level::Info, "avm::node")));
        assert!(logger.enabled(&meta(log::Level::Warn, "avm::node")));
    }
}
