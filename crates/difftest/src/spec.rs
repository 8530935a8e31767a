//! Test specs: `tests/xdp/<name>.json`, one program and the packets it runs.
//!
//! ```json
//! {
//!   "about": "what the spec checks",
//!   "object": "lb_tx.o",                  // beside the spec
//!   "program": "xdp_lb",                  // the program to run
//!   "ctx_in": "hex",                      // optional struct xdp_md for every packet
//!                                         // (the kernel wants data_end = the length)
//!   "maps": {"vips": [{"key": "hex", "value": "hex"}]},   // initial entries
//!   "prog_array": {"jump_table": {"0": "xdp_ipv4"}},     // slots -> programs
//!   "packets": [{"name": "tcp to the vip", "hex": "hex" | ["hex", ...],
//!                "expect": "XDP_TX"}],    // optional: the kernel's action
//!   "normalise": [{"map": "buckets", "rule": "nonzero", "offset": 8, "len": 8,
//!                  "why": "a ktime stamp"}]
//! }
//! ```
//!
//! Hex may contain whitespace, and a packet may be a list of hex pieces
//! (one per header) that are concatenated. Initial values of per-CPU maps
//! are one CPU's value: the kernel side writes it to CPU 0 and zeros to the
//! others. Maps of maps get their inner maps from the object's `.values`
//! initialisers, not from the spec.

use crate::hex;
use crate::DiffError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One spec file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// What the spec checks.
    #[serde(default)]
    pub about: String,
    /// The object file, relative to the spec's folder.
    pub object: String,
    /// The program to run.
    pub program: String,
    /// `ctx_in` for every packet (a `struct xdp_md`), hex.
    #[serde(default)]
    pub ctx_in: Option<String>,
    /// Initial map entries, by map name.
    #[serde(default)]
    pub maps: BTreeMap<String, Vec<Entry>>,
    /// Program-array slots: map name -> slot -> program name.
    #[serde(default)]
    pub prog_array: BTreeMap<String, BTreeMap<u32, String>>,
    /// The packets, run in order.
    pub packets: Vec<Packet>,
    /// Field normalisations beyond the automatic ones (see [`crate::compare`]).
    #[serde(default)]
    pub normalise: Vec<FieldRule>,
}

/// A map entry, hex key and value.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Key bytes.
    pub key: String,
    /// Value bytes.
    pub value: String,
}

/// A packet: hex text, or hex pieces to concatenate.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum HexText {
    /// One string.
    One(String),
    /// Pieces, concatenated.
    Pieces(Vec<String>),
}

impl HexText {
    /// The bytes.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        match self {
            HexText::One(s) => hex::decode(s),
            HexText::Pieces(p) => hex::decode(&p.concat()),
        }
    }
}

/// One packet of a spec.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Packet {
    /// What it is ("valid TCP SYN", "truncated IPv4 header", ...).
    pub name: String,
    /// The bytes.
    pub hex: HexText,
    /// The action the kernel must return (`XDP_PASS`, ...), or `error` when
    /// `BPF_PROG_TEST_RUN` must refuse the packet.
    #[serde(default)]
    pub expect: Option<String>,
}

/// A normalisation of part of every value of a map.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FieldRule {
    /// The map.
    pub map: String,
    /// `nonzero` (the bytes become 01 00.. when any is set, else zeros) or
    /// `ignore` (the bytes become zeros); `ignore` without offset and len
    /// drops the whole map from the comparison.
    pub rule: String,
    /// First byte of the field in the value.
    #[serde(default)]
    pub offset: usize,
    /// Length of the field (default: to the end of the value).
    #[serde(default)]
    pub len: Option<usize>,
    /// Why (time stamps, random numbers, ...).
    #[serde(default)]
    pub why: String,
}

impl Spec {
    /// Reads and checks a spec file.
    pub fn read(path: &Path) -> Result<Spec, DiffError> {
        let text = std::fs::read_to_string(path).map_err(|e| DiffError::Spec {
            spec: path.display().to_string(),
            what: e.to_string(),
        })?;
        let spec: Spec = serde_json::from_str(&text).map_err(|e| DiffError::Spec {
            spec: path.display().to_string(),
            what: e.to_string(),
        })?;
        spec.check().map_err(|what| DiffError::Spec {
            spec: path.display().to_string(),
            what,
        })?;
        Ok(spec)
    }

    fn check(&self) -> Result<(), String> {
        if self.packets.is_empty() {
            return Err("no packets".into());
        }
        for p in &self.packets {
            if p.hex.bytes().is_none() {
                return Err(format!("packet {:?}: bad hex", p.name));
            }
            if let Some(e) = &p.expect {
                if e != "error" && action_number(e).is_none() {
                    return Err(format!("packet {:?}: unknown action {e:?}", p.name));
                }
            }
        }
        for (map, entries) in &self.maps {
            for e in entries {
                if hex::decode(&e.key).is_none() || hex::decode(&e.value).is_none() {
                    return Err(format!("map {map}: bad hex in an entry"));
                }
            }
        }
        if let Some(c) = &self.ctx_in {
            let ctx = hex::decode(c).ok_or("ctx_in: bad hex")?;
            // struct xdp_md: data, data_end, ...; BPF_PROG_TEST_RUN wants
            // data_end to be the packet's length, so one ctx_in fits one length
            if let Some(end) = ctx.get(4..8) {
                let end = u32::from_le_bytes([end[0], end[1], end[2], end[3]]) as usize;
                for p in &self.packets {
                    let len = p.hex.bytes().map_or(0, |b| b.len());
                    if len != end {
                        return Err(format!(
                            "packet {:?} has {len} bytes, ctx_in's data_end says {end}",
                            p.name
                        ));
                    }
                }
            }
        }
        for r in &self.normalise {
            if r.rule != "nonzero" && r.rule != "ignore" {
                return Err(format!("map {}: unknown rule {:?}", r.map, r.rule));
            }
        }
        Ok(())
    }

    /// The object's path, next to the spec at `spec_path`.
    pub fn object_path(&self, spec_path: &Path) -> PathBuf {
        spec_path
            .parent()
            .unwrap_or(Path::new("."))
            .join(&self.object)
    }

    /// `ctx_in` bytes (empty for none).
    pub fn ctx_in_bytes(&self) -> Vec<u8> {
        self.ctx_in
            .as_deref()
            .and_then(hex::decode)
            .unwrap_or_default()
    }
}

/// XDP action names, as `bpfkit run --json` prints them.
pub const ACTIONS: [&str; 5] = [
    "XDP_ABORTED",
    "XDP_DROP",
    "XDP_PASS",
    "XDP_TX",
    "XDP_REDIRECT",
];

/// The number of an action name.
pub fn action_number(name: &str) -> Option<u32> {
    ACTIONS.iter().position(|a| *a == name).map(|n| n as u32)
}

/// The name of an action number (`None` past XDP_REDIRECT).
pub fn action_name(n: u32) -> Option<&'static str> {
    ACTIONS.get(n as usize).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pieces_rules_and_slots() {
        let spec: Spec = serde_json::from_str(
            r#"{"object": "a.o", "program": "p",
                "prog_array": {"jt": {"3": "q"}},
                "packets": [{"name": "x", "hex": ["0102", " 03"], "expect": "XDP_TX"}],
                "normalise": [{"map": "m", "rule": "nonzero", "offset": 8, "len": 8}]}"#,
        )
        .unwrap();
        assert_eq!(spec.packets[0].hex.bytes(), Some(vec![1, 2, 3]));
        assert_eq!(spec.prog_array["jt"][&3], "q");
        assert_eq!(spec.normalise[0].len, Some(8));
        assert!(spec.check().is_ok());
        assert_eq!(action_number("XDP_TX"), Some(3));
        assert_eq!(action_name(4), Some("XDP_REDIRECT"));
    }

    #[test]
    fn ctx_in_data_end_must_fit_every_packet() {
        let spec = |len: u32| -> Spec {
            let ctx = format!("08000000{}", hex::encode(&len.to_le_bytes()));
            serde_json::from_str(&format!(
                r#"{{"object": "a.o", "program": "p", "ctx_in": "{ctx}",
                    "packets": [{{"name": "x", "hex": "{}"}}]}}"#,
                "00".repeat(22)
            ))
            .unwrap()
        };
        assert!(spec(22).check().is_ok());
        assert!(spec(23).check().unwrap_err().contains("data_end says 23"));
    }

    #[test]
    fn rejects_unknown_fields_and_actions() {
        assert!(serde_json::from_str::<Spec>(
            r#"{"object": "a.o", "program": "p", "packets": [], "bogus": 1}"#
        )
        .is_err());
        let spec: Spec = serde_json::from_str(
            r#"{"object": "a.o", "program": "p",
                "packets": [{"name": "x", "hex": "00", "expect": "XDP_FLY"}]}"#,
        )
        .unwrap();
        assert!(spec.check().unwrap_err().contains("XDP_FLY"));
    }
}
