//! Normalisation and comparison of two `bpfkit run --json` documents.
//!
//! Both sides are reduced to a normal form, then compared field by field:
//!
//! - **runs**: `retval` and `data_out` must be equal; `duration_ns` and
//!   `action` (derived from `retval`) are dropped; an `error` run matches
//!   any other `error` run (the kernel says `EINVAL`, bpfkit says why).
//! - **maps**: every map of the *expected* document must be in the actual
//!   one with the same keys and values (entries are sorted by key first).
//!   Maps only the actual document has (ring buffers, queues, stacks,
//!   perf event arrays that bpfkit may list) are not compared.
//! - **per-CPU maps** ([`Rule::PercpuSum`]): a value holds one slot per CPU,
//!   each `value_size` rounded up to 8 bytes; it becomes the lane-wise sum
//!   over CPUs (little-endian u64 lanes, the last lane as wide as what is
//!   left, wrapping). The kernel runs each packet on whichever CPU the test
//!   thread is on, bpfkit on its own CPU numbering; the sum is what both
//!   agree on for counters. A value of exactly `value_size` bytes is one
//!   CPU's.
//! - **maps of maps** ([`Rule::MapIds`]): values are inner map ids, which
//!   each side allocates its own way; they are renumbered 1, 2, ... in the
//!   order of first appearance along the sorted keys (the sharing of one
//!   inner map by two slots survives).
//! - **fields** ([`Rule::Nonzero`], [`Rule::Ignore`]): spec rules for time
//!   stamps and random numbers; `nonzero` keeps only whether a field is set
//!   (first byte 1, the rest 0), `ignore` zeros it, [`Rule::IgnoreMap`]
//!   drops the map.
//!
//! Rules apply in that order: per-CPU sum, ids, then fields.

use crate::hex;
use serde_json::{json, Map as JsonMap, Value};
use std::collections::BTreeMap;

/// A normalisation of a map's values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Per-CPU values summed over CPUs.
    PercpuSum {
        /// The map's value size.
        value_size: usize,
    },
    /// Values are map ids, renumbered by first appearance.
    MapIds,
    /// The bytes `offset..offset+len` only say whether any is nonzero.
    Nonzero {
        /// First byte.
        offset: usize,
        /// Length (`None`: to the end).
        len: Option<usize>,
    },
    /// The bytes `offset..offset+len` are zeroed.
    Ignore {
        /// First byte.
        offset: usize,
        /// Length (`None`: to the end).
        len: Option<usize>,
    },
    /// The map is not compared.
    IgnoreMap,
}

/// Normalisation rules by map name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    /// Rules of each map, applied in the order of [`Rule`]'s kinds.
    pub maps: BTreeMap<String, Vec<Rule>>,
}

impl Rules {
    /// Adds a rule for `map`.
    pub fn add(&mut self, map: &str, rule: Rule) {
        self.maps.entry(map.to_string()).or_default().push(rule);
    }
}

/// A difference between the expected and the actual document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// Where: `runs[3].data_out`, `maps.stats[01000000]`, ...
    pub path: String,
    /// Expected (normalised) text.
    pub expected: String,
    /// Actual (normalised) text.
    pub actual: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: expected {}, got {}",
            self.path, self.expected, self.actual
        )
    }
}

fn sum_percpu(bytes: &[u8], value_size: usize) -> Vec<u8> {
    let stride = value_size.div_ceil(8) * 8;
    if value_size == 0 || bytes.len() == value_size || stride == 0 {
        return bytes.to_vec();
    }
    let mut out = vec![0u8; value_size];
    for slot in bytes.chunks(stride) {
        for lane in (0..value_size).step_by(8) {
            let w = (value_size - lane)
                .min(8)
                .min(slot.len().saturating_sub(lane));
            let mut a = [0u8; 8];
            let mut b = [0u8; 8];
            a[..w].copy_from_slice(&out[lane..lane + w]);
            b[..w].copy_from_slice(&slot[lane..lane + w]);
            let s = u64::from_le_bytes(a).wrapping_add(u64::from_le_bytes(b));
            out[lane..lane + w].copy_from_slice(&s.to_le_bytes()[..w]);
        }
    }
    out
}

fn field(bytes: &mut [u8], offset: usize, len: Option<usize>) -> &mut [u8] {
    let start = offset.min(bytes.len());
    let end = len.map_or(bytes.len(), |l| (offset + l).min(bytes.len()));
    &mut bytes[start..end.max(start)]
}

/// Normalises the entries of one map (`[{key, value}]`, hex) by `rules`,
/// sorted by key. Entries that are not hex objects are kept as text.
pub fn normalise_map(entries: &[Value], rules: &[Rule]) -> Vec<(String, String)> {
    let mut out: Vec<(String, Vec<u8>)> = entries
        .iter()
        .map(|e| {
            let key = e
                .get("key")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let value = e
                .get("value")
                .and_then(Value::as_str)
                .and_then(hex::decode)
                .unwrap_or_default();
            (key.to_lowercase(), value)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    for rule in rules {
        if let Rule::PercpuSum { value_size } = rule {
            for (_, v) in out.iter_mut() {
                *v = sum_percpu(v, *value_size);
            }
        }
    }
    if rules.contains(&Rule::MapIds) {
        let mut ids: Vec<Vec<u8>> = Vec::new();
        for (_, v) in out.iter_mut() {
            let n = match ids.iter().position(|i| i == v) {
                Some(n) => n,
                None => {
                    ids.push(v.clone());
                    ids.len() - 1
                }
            };
            *v = ((n + 1) as u32).to_le_bytes().to_vec();
        }
    }
    for rule in rules {
        match *rule {
            Rule::Nonzero { offset, len } => {
                for (_, v) in out.iter_mut() {
                    let f = field(v, offset, len);
                    let set = f.iter().any(|&b| b != 0);
                    f.fill(0);
                    if let Some(first) = f.first_mut() {
                        *first = set as u8;
                    }
                }
            }
            Rule::Ignore { offset, len } => {
                for (_, v) in out.iter_mut() {
                    field(v, offset, len).fill(0);
                }
            }
            _ => {}
        }
    }
    out.into_iter().map(|(k, v)| (k, hex::encode(&v))).collect()
}

/// The normal form of a document: `{"runs": [{"retval", "data_out"} |
/// {"error": true}], "maps": {name: [{"key", "value"}]}}`.
pub fn normalise(doc: &Value, rules: &Rules) -> Value {
    let runs: Vec<Value> = doc
        .get("runs")
        .and_then(Value::as_array)
        .map(|runs| {
            runs.iter()
                .map(|r| {
                    if r.get("error").is_some() {
                        json!({"error": true})
                    } else {
                        json!({
                            "retval": r.get("retval").cloned().unwrap_or(Value::Null),
                            "data_out": r.get("data_out")
                                .and_then(Value::as_str)
                                .map(str::to_lowercase)
                                .map_or(Value::Null, Value::String),
                        })
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let mut maps = JsonMap::new();
    if let Some(m) = doc.get("maps").and_then(Value::as_object) {
        for (name, entries) in m {
            let rules = rules.maps.get(name).map(Vec::as_slice).unwrap_or(&[]);
            if rules.contains(&Rule::IgnoreMap) {
                continue;
            }
            let entries = entries.as_array().map(Vec::as_slice).unwrap_or(&[]);
            let list: Vec<Value> = normalise_map(entries, rules)
                .into_iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect();
            maps.insert(name.clone(), Value::Array(list));
        }
    }
    json!({"runs": runs, "maps": maps})
}

fn text(v: Option<&Value>) -> String {
    v.map_or_else(|| "nothing".to_string(), |v| v.to_string())
}

/// Compares `actual` with `expected` under `rules`; empty when they agree.
pub fn compare(expected: &Value, actual: &Value, rules: &Rules) -> Vec<Mismatch> {
    let e = normalise(expected, rules);
    let a = normalise(actual, rules);
    let mut out = Vec::new();
    let mut push = |path: String, ex: String, ac: String| {
        out.push(Mismatch {
            path,
            expected: ex,
            actual: ac,
        })
    };
    let er = e["runs"].as_array().cloned().unwrap_or_default();
    let ar = a["runs"].as_array().cloned().unwrap_or_default();
    if er.len() != ar.len() {
        push(
            "runs".into(),
            format!("{} runs", er.len()),
            format!("{} runs", ar.len()),
        );
    }
    for (i, (x, y)) in er.iter().zip(&ar).enumerate() {
        for f in ["error", "retval", "data_out"] {
            if x.get(f) != y.get(f) {
                push(format!("runs[{i}].{f}"), text(x.get(f)), text(y.get(f)));
            }
        }
    }
    let am = a["maps"].as_object().cloned().unwrap_or_default();
    for (name, list) in e["maps"].as_object().cloned().unwrap_or_default() {
        let Some(other) = am.get(&name) else {
            push(
                format!("maps.{name}"),
                "the map".into(),
                "no such map".into(),
            );
            continue;
        };
        let as_pairs = |l: &Value| -> BTreeMap<String, String> {
            l.as_array()
                .map(|l| {
                    l.iter()
                        .map(|e| (text(e.get("key")), text(e.get("value"))))
                        .collect()
                })
                .unwrap_or_default()
        };
        let (x, y) = (as_pairs(&list), as_pairs(other));
        for (k, v) in &x {
            let got = y.get(k).cloned().unwrap_or_else(|| "no entry".into());
            if &got != v {
                push(
                    format!("maps.{name}[{}]", k.trim_matches('"')),
                    v.clone(),
                    got,
                );
            }
        }
        for (k, v) in &y {
            if !x.contains_key(k) {
                push(
                    format!("maps.{name}[{}]", k.trim_matches('"')),
                    "no entry".into(),
                    v.clone(),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(runs: Value, maps: Value) -> Value {
        json!({"runs": runs, "maps": maps})
    }

    #[test]
    fn identical_documents_agree_and_durations_do_not_matter() {
        let a = doc(
            json!([{"retval": 2, "action": "XDP_PASS", "data_out": "AABB", "duration_ns": 10},
                   {"error": "EINVAL"}]),
            json!({"m": [{"key": "01000000", "value": "05"}, {"key": "00000000", "value": "07"}]}),
        );
        let b = doc(
            json!([{"retval": 2, "data_out": "aabb", "duration_ns": 99999},
                   {"error": "packet shorter than an Ethernet header (13 bytes)"}]),
            json!({"m": [{"key": "00000000", "value": "07"}, {"key": "01000000", "value": "05"}],
                   "ringbuf": []}),
        );
        assert_eq!(compare(&a, &b, &Rules::default()), vec![]);
    }

    #[test]
    fn retval_packet_and_entry_differences_are_reported() {
        let a = doc(
            json!([{"retval": 2, "data_out": "aa"}, {"retval": 1, "data_out": "bb"}]),
            json!({"m": [{"key": "00", "value": "01"}, {"key": "01", "value": "02"}],
                   "gone": []}),
        );
        let b = doc(
            json!([{"retval": 3, "data_out": "aa"}, {"error": "x"}]),
            json!({"m": [{"key": "00", "value": "09"}, {"key": "02", "value": "02"}]}),
        );
        let paths: Vec<String> = compare(&a, &b, &Rules::default())
            .into_iter()
            .map(|m| m.path)
            .collect();
        assert_eq!(
            paths,
            [
                "runs[0].retval",
                "runs[1].error",
                "runs[1].retval",
                "runs[1].data_out",
                "maps.gone",
                "maps.m[00]",
                "maps.m[01]",
                "maps.m[02]",
            ]
        );
    }

    #[test]
    fn percpu_values_are_summed_lane_wise() {
        let mut rules = Rules::default();
        rules.add("pc", Rule::PercpuSum { value_size: 12 });
        // two CPUs, 16-byte slots: u64 + u32 (+4 padding)
        let kernel = doc(
            json!([]),
            json!({"pc": [{"key": "00", "value":
                "0100000000000000 ffffffff 00000000 0200000000000000 02000000 00000000"}]}),
        );
        let bpfkit = doc(
            json!([]),
            json!({"pc": [{"key": "00", "value": "030000000000000001000000"}]}),
        );
        assert_eq!(compare(&kernel, &bpfkit, &rules), vec![]);
        assert_eq!(
            normalise(&kernel, &rules)["maps"]["pc"][0]["value"],
            "030000000000000001000000"
        );
        let wrong = doc(
            json!([]),
            json!({"pc": [{"key": "00", "value": "040000000000000001000000"}]}),
        );
        assert_eq!(compare(&kernel, &wrong, &rules).len(), 1);
    }

    #[test]
    fn map_ids_are_renumbered_by_first_appearance() {
        let mut rules = Rules::default();
        rules.add("outer", Rule::MapIds);
        let kernel = doc(
            json!([]),
            json!({"outer": [{"key": "00", "value": "2a000000"}, {"key": "01", "value": "07000000"},
                             {"key": "02", "value": "2a000000"}]}),
        );
        let same_shape = doc(
            json!([]),
            json!({"outer": [{"key": "00", "value": "03000000"}, {"key": "01", "value": "04000000"},
                             {"key": "02", "value": "03000000"}]}),
        );
        let other_shape = doc(
            json!([]),
            json!({"outer": [{"key": "00", "value": "03000000"}, {"key": "01", "value": "04000000"},
                             {"key": "02", "value": "05000000"}]}),
        );
        assert_eq!(compare(&kernel, &same_shape, &rules), vec![]);
        assert_eq!(compare(&kernel, &other_shape, &rules).len(), 1);
    }

    #[test]
    fn field_rules_keep_only_what_is_deterministic() {
        let mut rules = Rules::default();
        rules.add(
            "b",
            Rule::Nonzero {
                offset: 8,
                len: Some(8),
            },
        );
        rules.add(
            "b",
            Rule::Ignore {
                offset: 16,
                len: None,
            },
        );
        rules.add("raw", Rule::IgnoreMap);
        let k = doc(
            json!([]),
            json!({"b": [{"key": "00", "value": "0500000000000000 1234567800000000 aabb"}],
                   "raw": [{"key": "00", "value": "01"}]}),
        );
        let same = doc(
            json!([]),
            json!({"b": [{"key": "00", "value": "0500000000000000 0000000000000099 ccdd"}]}),
        );
        let unset = doc(
            json!([]),
            json!({"b": [{"key": "00", "value": "0500000000000000 0000000000000000 aabb"}]}),
        );
        assert_eq!(compare(&k, &same, &rules), vec![]);
        assert_eq!(
            normalise(&k, &rules)["maps"]["b"][0]["value"],
            "050000000000000001000000000000000000"
        );
        let m = compare(&k, &unset, &rules);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].path, "maps.b[00]");
    }
}
