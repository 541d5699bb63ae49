//! The exporter's metrics of a server's data: `probe_peng3dnet_data_KEY` per numeric field,
//! `probe_peng3dnet_data_info{KEY="..."}` for the string fields.
//!
//! The server chooses its keys, so nothing it sends may break the scrape: every name is
//! made of `[a-z0-9_]`, unique within the probe (`max-players` and `max_players` become
//! `max_players` and `max_players_2`), never the info metric's own name, and free of what
//! `promtool check metrics` refuses (camelCase, abbreviated or non-base units such as
//! `_ms`, type names such as `_gauge`, the suffixes `_total`, `_count`, `_sum`,
//! `_bucket`; the labels `le` and `quantile`). Where a key has to change, the metric's
//! HELP names the key as the server sent it.

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;

use peng3dnet::Value;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Largest number of server fields turned into metrics (each kind), so that a hostile
/// target cannot make a scrape huge.
pub(crate) const MAX_FIELDS: usize = 64;
/// Longest string field value kept as a label value (in characters).
pub(crate) const MAX_LABEL_CHARS: usize = 200;
/// Longest name made from a key (in characters, before a `_N` that makes it unique).
const MAX_NAME_CHARS: usize = 100;

/// Keys of `serve`'s built-in data that describe the prober, not the server: the address
/// it pinged from changes with every probe, and as a label it would make a new series per
/// scrape.
const PER_PROBE_KEYS: [&str; 1] = ["client_addr"];

/// Escapes a label value for the text formats (the encoder writes it as given): `\`,
/// `"` and line feeds escaped, other control characters as spaces, cut to
/// [`MAX_LABEL_CHARS`].
pub(crate) fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars().take(MAX_LABEL_CHARS) {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A key as HELP text: both text formats read `\\` and `\n` there, and Prometheus' own
/// (promtool) no other escape, so a `"` stays as it is.
fn help_text(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for c in key.chars().take(MAX_LABEL_CHARS) {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Words promtool refuses as a part (between `_`) of a metric name anywhere: abbreviated
/// units and metric type names.
const BAD_PARTS: [&str; 18] = [
    "s",
    "ms",
    "us",
    "ns",
    "sec",
    "b",
    "kb",
    "mb",
    "gb",
    "tb",
    "pb",
    "m",
    "h",
    "d",
    "counter",
    "gauge",
    "histogram",
    "summary",
];
/// Words a metric name may not end in: suffixes the formats give counters, histograms,
/// summaries and info metrics.
const BAD_LAST_PARTS: [&str; 8] = [
    "total", "created", "count", "sum", "bucket", "gcount", "gsum", "info",
];
/// Units promtool knows (with a prefix or without), and whether each is a base unit; a
/// part that is a prefixed unit or a non-base one is refused.
const UNITS: [(&str, bool); 25] = [
    ("amperes", true),
    ("bytes", true),
    ("celsius", true),
    ("grams", true),
    ("joules", true),
    ("kelvin", true),
    ("meters", true),
    ("metres", true),
    ("seconds", true),
    ("volts", true),
    ("minutes", false),
    ("hours", false),
    ("days", false),
    ("weeks", false),
    ("kelvins", false),
    ("fahrenheit", false),
    ("rankine", false),
    ("inches", false),
    ("yards", false),
    ("miles", false),
    ("bits", false),
    ("calories", false),
    ("pounds", false),
    ("ounces", false),
    ("", true),
];
const UNIT_PREFIXES: [&str; 18] = [
    "pico", "nano", "micro", "milli", "centi", "deci", "deca", "hecto", "kilo", "kibi", "mega",
    "mibi", "giga", "gibi", "tera", "tebi", "peta", "pebi",
];

/// Whether `part` names a unit promtool wants in another form (`milliseconds`, `hours`,
/// `kilobytes`).
fn is_bad_unit(part: &str) -> bool {
    UNITS
        .iter()
        .filter(|(unit, _)| !unit.is_empty())
        .any(|&(unit, base)| {
            (part == unit && !base)
                || UNIT_PREFIXES.iter().any(|p| {
                    part.len() == p.len() + unit.len()
                        && part.starts_with(p)
                        && part.ends_with(unit)
                })
        })
}

fn is_bad_part(part: &str, last: bool) -> bool {
    BAD_PARTS.contains(&part) || is_bad_unit(part) || (last && BAD_LAST_PARTS.contains(&part))
}

/// `key` in `[a-z0-9_]`: letters lower case (camelCase becomes snake_case), anything
/// else `_`, no empty parts; `None` when nothing is left (a key of symbols or non-ASCII
/// letters only).
fn snake(key: &str) -> Option<String> {
    let mut out = String::new();
    let mut previous_lower = false;
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            if previous_lower {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
            previous_lower = false;
        } else if c.is_ascii_alphanumeric() {
            out.push(c);
            previous_lower = true;
        } else {
            out.push('_');
            previous_lower = false;
        }
        if out.len() > MAX_NAME_CHARS * 2 {
            break;
        }
    }
    let parts: Vec<&str> = out.split('_').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        return None;
    }
    let mut joined = parts.join("_");
    if joined.len() > MAX_NAME_CHARS {
        joined.truncate(MAX_NAME_CHARS);
        let kept = joined.trim_end_matches('_').len();
        joined.truncate(kept);
    }
    Some(joined)
}

/// A metric name part from a server's key: [`snake`], with every part promtool would
/// refuse joined to the part before it (`uptime_ms` becomes `uptimems`, `players_total`
/// `playerstotal`) or, first, marked with a `k` (`ms` becomes `kms`); a key with nothing
/// usable is `key`.
fn metric_part(key: &str) -> String {
    let Some(snaked) = snake(key) else {
        return "key".to_owned();
    };
    let mut parts: Vec<String> = snaked.split('_').map(str::to_owned).collect();
    let mut i = 0;
    while i < parts.len() {
        let last = i + 1 == parts.len();
        if is_bad_part(&parts[i], last) {
            if i == 0 {
                parts[0].insert(0, 'k');
            } else {
                let part = parts.remove(i);
                parts[i - 1].push_str(&part);
                i -= 1;
            }
            // Check the changed part again (`m` + `s` is `ms`).
            continue;
        }
        i += 1;
    }
    parts.join("_")
}

/// A label name from a server's key: [`snake`] (a leading digit marked with a `k`), never
/// `le` or `quantile`; a key with nothing usable is `key`.
fn label_name(key: &str) -> String {
    let mut name = snake(key).unwrap_or_else(|| "key".to_owned());
    if name.starts_with(|c: char| c.is_ascii_digit()) || name == "le" || name == "quantile" {
        name.insert(0, 'k');
    }
    name
}

/// Names handed out so far: each new one is made unique with `_2`, `_3`...
struct Names(HashSet<String>);

impl Names {
    fn unique(&mut self, name: String) -> String {
        if self.0.insert(name.clone()) {
            return name;
        }
        let mut n = 2usize;
        loop {
            let candidate = format!("{name}_{n}");
            if self.0.insert(candidate.clone()) {
                return candidate;
            }
            n += 1;
        }
    }
}

/// A field's value as a metric's value: numbers and booleans (1 or 0). Infinite and NaN
/// floats are values both formats write (`+Inf`, `NaN`).
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Integer(i) => i.as_f64(),
        Value::F32(f) => Some(f64::from(*f)),
        Value::F64(f) => Some(*f),
        Value::Boolean(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

/// Registers the metrics of a server's `data` (its top-level map; other values have
/// none): a gauge per numeric field, [`MAX_FIELDS`] at most, and the info metric with a
/// label per string field, [`MAX_FIELDS`] at most, always (without labels when there is
/// no string field).
pub(crate) fn register(registry: &mut Registry, data: &Value) {
    let mut metric_names = Names(HashSet::new());
    let mut label_names = Names(HashSet::new());
    let mut strings: Vec<(String, String)> = Vec::new();
    let mut numbers = 0;
    if let Value::Map(entries) = data {
        for (key, value) in entries {
            let Some(key) = key.as_str() else { continue };
            if PER_PROBE_KEYS.contains(&key) {
                continue;
            }
            if let Some(n) = number(value) {
                if numbers == MAX_FIELDS {
                    continue;
                }
                numbers += 1;
                let name = metric_names.unique(metric_part(key));
                let gauge = Gauge::<f64, AtomicU64>::default();
                gauge.set(n);
                registry.register(
                    format!("probe_peng3dnet_data_{name}"),
                    format!("The server's field {}", help_text(key)),
                    gauge,
                );
            } else if let Some(s) = value.as_str() {
                if strings.len() == MAX_FIELDS {
                    continue;
                }
                let name = label_names.unique(label_name(key));
                strings.push((name, escape_label(s)));
            }
        }
    }
    let info = Family::<Vec<(String, String)>, Gauge>::default();
    info.get_or_create(&strings).set(1);
    registry.register(
        "probe_peng3dnet_data_info",
        "The server's string fields, as labels",
        info,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use peng3dnet::value::map;

    fn encode(data: &Value) -> String {
        let mut registry = Registry::default();
        register(&mut registry, data);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn names_are_snake_case_and_free_of_what_promtool_refuses() {
        for (key, name) in [
            ("max-players", "max_players"),
            ("maxPlayers", "max_players"),
            ("1st", "1st"),
            ("__x", "x"),
            ("uptime_ms", "uptimems"),
            ("players_total", "playerstotal"),
            ("ms", "kms"),
            ("m_s", "kms"),
            ("kb", "kkb"),
            ("latency_milliseconds", "latencymilliseconds"),
            ("memory_bytes", "memory_bytes"),
            ("a_gauge_c", "agauge_c"),
            ("a_gauge_b", "agaugeb"),
            ("info", "kinfo"),
            ("server_info", "serverinfo"),
            ("名前", "key"),
            ("", "key"),
        ] {
            assert_eq!(metric_part(key), name, "{key}");
        }
        assert_eq!(label_name("le"), "kle");
        assert_eq!(label_name("quantile"), "kquantile");
        assert_eq!(label_name("2nd"), "k2nd");
        assert_eq!(label_name("motdText"), "motd_text");
        assert_eq!(label_name("__name__"), "name");
    }

    /// `serve --data info=5` made a second `probe_peng3dnet_data_info` family; keys that
    /// sanitised alike lost all but the first.
    #[test]
    fn keys_that_sanitise_alike_each_get_a_metric_and_none_is_the_info_metric() {
        let data = map([
            ("info", Value::from(5)),
            ("max-players", Value::from(1)),
            ("max_players", Value::from(2)),
            ("名前", Value::from(3)),
            ("ポート", Value::from(4)),
            ("名", Value::from("a")),
            ("前", Value::from("b")),
        ]);
        let text = encode(&data);
        for line in [
            "probe_peng3dnet_data_kinfo 5.0",
            "probe_peng3dnet_data_max_players 1.0",
            "probe_peng3dnet_data_max_players_2 2.0",
            "probe_peng3dnet_data_key 3.0",
            "probe_peng3dnet_data_key_2 4.0",
            "probe_peng3dnet_data_info{key=\"a\",key_2=\"b\"} 1",
            "# HELP probe_peng3dnet_data_max_players_2 The server's field max_players.",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in:\n{text}"
            );
        }
        assert_eq!(
            text.matches("# TYPE probe_peng3dnet_data_info ").count(),
            1,
            "{text}"
        );
    }

    /// promtool, from Debian's package `prometheus`: its path, or `None` (the test is
    /// skipped with a message) outside CI; under CI=true a missing promtool fails.
    fn promtool() -> Option<std::path::PathBuf> {
        let found = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("promtool"))
                .find(|p| p.is_file())
        });
        if found.is_none() {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "promtool not found under CI=true (Debian's package prometheus)"
            );
            eprintln!("skipped: promtool not found (Debian package prometheus)");
        }
        found
    }

    /// `promtool check metrics` on `text` (Prometheus' text format): its complaints, if any.
    fn promtool_check(promtool: &std::path::Path, text: &str) -> Result<(), String> {
        use std::io::Write;
        let mut child = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// A key: mostly the words and separators servers use, with symbols, non-ASCII
    /// letters, quotes, backslashes and control characters among them.
    fn key() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let word = prop_oneof![
            Just("info".to_owned()),
            Just("ms".to_owned()),
            Just("total".to_owned()),
            Just("le".to_owned()),
            Just("quantile".to_owned()),
            Just("gauge".to_owned()),
            Just("kilobytes".to_owned()),
            Just("hours".to_owned()),
            Just("count".to_owned()),
            Just("m".to_owned()),
            Just("s".to_owned()),
            "[a-zA-Z0-9]{1,6}",
            "[-_ .:/\"\\\\\n\t\u{0}-\u{1f}]{1,3}",
            "\\PC{1,3}",
        ];
        proptest::collection::vec(word, 0..5).prop_map(|words| words.concat())
    }

    fn value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::F64),
            any::<f32>().prop_map(Value::F32),
            Just(Value::F64(f64::NAN)),
            Just(Value::F64(f64::INFINITY)),
            Just(Value::F64(f64::NEG_INFINITY)),
            any::<bool>().prop_map(Value::Boolean),
            any::<String>().prop_map(Value::from),
            "[\"\\\\\n{}=,]{0,8}".prop_map(Value::from),
            Just(Value::Nil),
            Just(Value::Array(vec![Value::from(1)])),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// Whatever keys and values a server sends, the probe's exposition passes
        /// `promtool check metrics` (parse and lint) in Prometheus' text format, and is
        /// OpenMetrics with one family per name.
        #[test]
        fn any_server_data_passes_promtool(
            entries in proptest::collection::vec((key(), value()), 0..24)
        ) {
            let Some(promtool) = promtool() else { return Ok(()) };
            let data = Value::Map(
                entries.iter().map(|(k, v)| (Value::from(k.as_str()), v.clone())).collect(),
            );
            let openmetrics = encode(&data);
            let mut families = HashSet::new();
            for line in openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
                let name = line.split(' ').next().unwrap_or("");
                proptest::prop_assert!(families.insert(name.to_owned()), "{name} twice:\n{openmetrics}");
            }
            let text = crate::http::to_text_format(&openmetrics);
            if let Err(complaint) = promtool_check(&promtool, &text) {
                return Err(proptest::test_runner::TestCaseError::fail(format!(
                    "promtool check metrics: {complaint}\non:\n{text}"
                )));
            }
        }
    }
}
