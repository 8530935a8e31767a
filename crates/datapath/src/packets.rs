//! Packets in and out: hex strings, pcap and pcapng captures, pcap output.

use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};
use pcap_file::pcapng::{Block, PcapNgReader};
use std::io::Write;
use std::path::Path;
use std::time::Duration;
use thiserror::Error;

/// Why packets could not be read or written.
#[derive(Debug, Error)]
pub enum PacketError {
    /// A hex string with an odd length or a non-hex digit.
    #[error("bad hex {text:?}: {why}")]
    BadHex {
        /// The text (cut to 40 characters).
        text: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A capture file that is neither pcap nor pcapng, or is corrupt.
    #[error("{path}: not a readable pcap or pcapng file: {why}")]
    Capture {
        /// The file.
        path: String,
        /// What the reader said.
        why: String,
    },
}

/// A packet with its capture time (zero for packets given as hex).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// The bytes, from the Ethernet header on.
    pub data: Vec<u8>,
    /// Capture time since the epoch.
    pub timestamp: Duration,
}

/// Parses lowercase or uppercase hex, two digits a byte, no separators.
pub fn parse_hex(text: &str) -> Result<Vec<u8>, PacketError> {
    let bad = |why| PacketError::BadHex {
        text: text.chars().take(40).collect(),
        why,
    };
    if !text.len().is_multiple_of(2) {
        return Err(bad("odd number of digits"));
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    text.as_bytes()
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| bad("not a hex digit"))
}

/// Lowercase hex, two digits a byte.
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Reads every packet of a pcap or pcapng file (told apart by the magic
/// number), in file order.
pub fn read_capture(path: &Path) -> Result<Vec<Packet>, PacketError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| PacketError::Io {
        path: name.clone(),
        source,
    })?;
    let capture = |why: String| PacketError::Capture {
        path: name.clone(),
        why,
    };
    let mut out = Vec::new();
    if bytes.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
        let mut r = PcapNgReader::new(&bytes[..]).map_err(|e| capture(e.to_string()))?;
        while let Some(block) = r.next_block() {
            let (block, _) = block.map_err(|e| capture(e.to_string()))?;
            match block {
                Block::EnhancedPacket(p) => out.push(Packet {
                    data: p.data.into_owned(),
                    timestamp: p.timestamp,
                }),
                Block::SimplePacket(p) => out.push(Packet {
                    data: p.data.into_owned(),
                    timestamp: Duration::ZERO,
                }),
                Block::Packet(p) => out.push(Packet {
                    data: p.data.into_owned(),
                    timestamp: p.timestamp,
                }),
                _ => {}
            }
        }
    } else {
        let mut r = PcapReader::new(&bytes[..]).map_err(|e| capture(e.to_string()))?;
        while let Some(p) = r.next_packet() {
            let p = p.map_err(|e| capture(e.to_string()))?;
            out.push(Packet {
                data: p.data().to_vec(),
                timestamp: p.timestamp(),
            });
        }
    }
    Ok(out)
}

/// A pcap file being written (Ethernet, microsecond time stamps).
pub struct PcapOut {
    path: String,
    writer: PcapWriter<std::io::BufWriter<std::fs::File>>,
}

impl std::fmt::Debug for PcapOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapOut").field("path", &self.path).finish()
    }
}

impl PcapOut {
    /// Creates (or truncates) `path`.
    pub fn create(path: &Path) -> Result<PcapOut, PacketError> {
        let name = path.display().to_string();
        let io = |source| PacketError::Io {
            path: name.clone(),
            source,
        };
        let file = std::fs::File::create(path).map_err(io)?;
        let writer =
            PcapWriter::new(std::io::BufWriter::new(file)).map_err(|e| PacketError::Capture {
                path: name.clone(),
                why: e.to_string(),
            })?;
        Ok(PcapOut { path: name, writer })
    }

    /// Appends a packet.
    pub fn write(&mut self, data: &[u8], timestamp: Duration) -> Result<(), PacketError> {
        let err = |why: String| PacketError::Capture {
            path: self.path.clone(),
            why,
        };
        let p =
            PcapPacket::new(timestamp, data.len() as u32, data).map_err(|e| err(e.to_string()))?;
        self.writer
            .write_packet(&p)
            .map_err(|e| err(e.to_string()))?;
        Ok(())
    }

    /// Flushes the file.
    pub fn finish(mut self) -> Result<(), PacketError> {
        let path = self.path.clone();
        self.writer.flush().map_err(|e| PacketError::Capture {
            path: path.clone(),
            why: e.to_string(),
        })?;
        self.writer
            .into_inner()
            .flush()
            .map_err(|source| PacketError::Io { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        assert_eq!(parse_hex("00aBff").unwrap(), vec![0, 0xab, 0xff]);
        assert_eq!(to_hex(&[0, 0xab, 0xff]), "00abff");
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
        assert_eq!(parse_hex("").unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn pcap_round_trip() {
        let dir = std::env::temp_dir().join(format!("bpfkit-pcap-{}", std::process::id()));
        let mut out = PcapOut::create(&dir).unwrap();
        out.write(&[1, 2, 3], Duration::from_micros(5)).unwrap();
        out.write(&[4; 60], Duration::ZERO).unwrap();
        out.finish().unwrap();
        let back = read_capture(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].data, vec![1, 2, 3]);
        assert_eq!(back[0].timestamp, Duration::from_micros(5));
        assert_eq!(back[1].data, vec![4; 60]);
    }
}
