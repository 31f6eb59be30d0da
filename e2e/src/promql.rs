//! Just enough PromQL and exposition-format reading to check that dashboards and alert rules query
//! metrics the binaries really export (`e2e/tests/monitoring.rs`).
//!
//! ```text
//! expression ──metric_names──▶ {selector names}   ⊆?   exposed_names ◀── /metrics text
//! ```
//!
//! [`metric_names`] skips what is not a series name: string literals, label matchers (`{...}`), ranges
//! and subqueries (`[...]`), numbers, functions and aggregations (a name followed by `(`), grouping label
//! lists (`by (...)`, `on (...)`, ...), keywords and Grafana variables (`$__rate_interval`).

use std::collections::BTreeSet;

/// PromQL words that are neither series nor functions (besides those of [`LABEL_LISTS`]): modifiers and
/// the set operators.
const KEYWORDS: [&str; 6] = ["bool", "offset", "atop", "and", "or", "unless"];
/// Keywords followed by a parenthesised label list.
const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The series names a PromQL expression selects, in order of appearance (repeats kept).
pub fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    let mut skip_label_list = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = skip_string(&chars, i),
            '{' => i = skip_until(&chars, i, '}'),
            '[' => i = skip_until(&chars, i, ']'),
            '(' if skip_label_list => {
                i = skip_until(&chars, i, ')');
                skip_label_list = false;
            }
            '$' => i = skip_word(&chars, i + 1),
            c if c.is_ascii_digit() || (c == '.' && next_is_digit(&chars, i)) => {
                i = skip_number(&chars, i);
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let end = skip_word(&chars, i);
                let word: String = chars[i..end].iter().collect();
                let rest = chars[end..].iter().skip_while(|c| c.is_whitespace());
                let next: String = rest
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == '_' || **c == '(')
                    .collect();
                // `sum(...)`, `sum by (...) (...)`, `sum without (...) (...)`
                let is_call = next.starts_with('(') || next == "by" || next == "without";
                skip_label_list = false;
                if LABEL_LISTS.contains(&word.as_str()) {
                    skip_label_list = true;
                } else if KEYWORDS.contains(&word.as_str()) || is_call {
                    // a keyword, a set operator, or a function / aggregation name
                } else {
                    names.push(word);
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    names
}

/// The series names of a Grafana `label_values(metric, label)` variable query (none for other forms).
pub fn variable_query_names(query: &str) -> Vec<String> {
    query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|rest| rest.rsplit_once(','))
        .map(|(selector, _)| metric_names(selector))
        .unwrap_or_default()
}

/// Every sample name an OpenMetrics / Prometheus text exposition can carry: the names of its samples,
/// and for each `# TYPE` line the names that type's samples have (a family without samples yet still
/// declares itself).
pub fn exposed_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(decl) = line.strip_prefix("# TYPE ") {
            let mut words = decl.split_whitespace();
            let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total", "_created"],
                "histogram" | "gaugehistogram" => &["_bucket", "_sum", "_count", "_created"],
                "summary" => &["", "_sum", "_count", "_created"],
                "info" => &["_info"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        i += if chars[i] == '\\' && quote != '`' {
            2
        } else {
            1
        };
    }
    i + 1
}

/// Past the `close` matching the opener at `start`, skipping strings on the way.
fn skip_until(chars: &[char], start: usize, close: char) -> usize {
    let open = chars[start];
    let mut depth = 0;
    let mut i = start;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = skip_string(chars, i);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

fn skip_word(chars: &[char], start: usize) -> usize {
    let mut i = start;
    while i < chars.len()
        && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
    {
        i += 1;
    }
    i
}

fn next_is_digit(chars: &[char], i: usize) -> bool {
    chars.get(i + 1).is_some_and(char::is_ascii_digit)
}

/// A number, including exponents, hexadecimal and duration-looking literals (`5m` after `offset`).
fn skip_number(chars: &[char], start: usize) -> usize {
    let mut i = start;
    while i < chars.len()
        && (chars[i].is_ascii_alphanumeric()
            || chars[i] == '.'
            || ((chars[i] == '+' || chars[i] == '-')
                && matches!(chars.get(i.wrapping_sub(1)), Some('e' | 'E'))))
    {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_found_and_functions_labels_and_ranges_are_not() {
        assert_eq!(
            metric_names(
                r#"histogram_quantile(0.99, sum by (namespace, le) (rate(switchboard_bus_publish_seconds_bucket{namespace=~"$namespace", code!="a{b}"}[$__rate_interval]))) > 0.5"#
            ),
            ["switchboard_bus_publish_seconds_bucket"]
        );
    }

    #[test]
    fn both_sides_of_binary_and_set_operators_count() {
        assert_eq!(
            metric_names(
                "sum(rate(a_total[5m])) / on (pod) group_left (node) b unless c offset 5m and 1e3 > bool d"
            ),
            ["a_total", "b", "c", "d"]
        );
    }

    #[test]
    fn aggregation_clauses_after_the_arguments_are_label_lists() {
        assert_eq!(
            metric_names("sum(rate(switchboard_errors_total[1m])) without (code)"),
            ["switchboard_errors_total"]
        );
    }

    #[test]
    fn a_misspelled_name_is_reported_as_written() {
        assert_eq!(
            metric_names("increase(switchboard_mesages_total[1h])"),
            ["switchboard_mesages_total"]
        );
    }

    #[test]
    fn grafana_label_values_queries_name_their_series() {
        assert_eq!(
            variable_query_names("label_values(switchboard_connections{job=\"x\"}, namespace)"),
            ["switchboard_connections"]
        );
        assert!(variable_query_names("namespaces()").is_empty());
    }

    #[test]
    fn declared_families_expose_their_sample_names() {
        let text = "# HELP x_sessions Sessions.\n# TYPE x_sessions counter\n\
            # TYPE x_latency histogram\nx_latency_bucket{le=\"1\"} 0\n\
            # TYPE x_up gauge\nx_up 1\n# EOF\n";
        let names = exposed_names(text);
        for name in [
            "x_sessions_total",
            "x_latency_bucket",
            "x_latency_sum",
            "x_latency_count",
            "x_up",
        ] {
            assert!(names.contains(name), "{name} in {names:?}");
        }
        assert!(!names.contains("x_sessions"));
    }
}
