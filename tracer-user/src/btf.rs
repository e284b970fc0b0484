//! A minimal reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`): just enough to find the byte
//! offset of a struct member, including members inside anonymous structs/unions and bitfields.
//!
//! Rust eBPF programs get no CO-RE relocations from rustc, so the agent resolves the offsets it
//! needs here and writes them into the programs' globals before load. Format reference: the kernel's
//! Documentation/bpf/btf.rst (`struct btf_header`, `struct btf_type`, `struct btf_member`).

use std::{fs, path::Path};

/// Where the running kernel exposes its own type information.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

/// Errors reading BTF.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file could not be read (kernel built without CONFIG_DEBUG_INFO_BTF?).
    #[error("cannot read kernel BTF at {path}: {source} (kernel without CONFIG_DEBUG_INFO_BTF?)")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The data is not BTF or is truncated.
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    /// The struct is not in this kernel's BTF.
    #[error("struct {0} not found in kernel BTF")]
    NoStruct(String),
    /// The struct exists but has no such member.
    #[error("struct {0} has no member {1} in this kernel")]
    NoMember(String, String),
}

/// Where a member lives inside its struct.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberOffset {
    /// Offset in bits from the start of the struct.
    pub bit_offset: u32,
    /// Width in bits for a bitfield, 0 for a plain member.
    pub bitfield_size: u32,
}

impl MemberOffset {
    /// Byte offset of a plain member (or of the byte holding the first bit of a bitfield).
    pub fn byte_offset(&self) -> u32 {
        self.bit_offset / 8
    }
}

#[derive(Clone, Debug)]
struct Member {
    name_off: u32,
    type_id: u32,
    offset: MemberOffset,
}

#[derive(Clone, Debug)]
struct Type {
    name_off: u32,
    kind: u32,
    /// Struct/union members; empty for other kinds.
    members: Vec<Member>,
    /// `size_or_type`: referenced type for modifiers/typedefs.
    size_or_type: u32,
}

/// Parsed BTF: the type table and the string section.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_kernel() -> Result<Self, BtfError> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    /// Reads BTF from a file.
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&data)
    }

    /// Parses raw (little-endian) BTF.
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let magic = data
            .get(0..2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or(BtfError::Malformed("truncated header"))?;
        if magic != BTF_MAGIC {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_data = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or(BtfError::Malformed("type section out of bounds"))?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?
            .to_vec();

        // Type id 0 is `void`.
        let mut types = vec![Type {
            name_off: 0,
            kind: 0,
            members: Vec::new(),
            size_or_type: 0,
        }];
        let mut at = 0;
        while at < types_data.len() {
            let name_off = u32_at(types_data, at)?;
            let info = u32_at(types_data, at + 4)?;
            let size_or_type = u32_at(types_data, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => at += 4,
                KIND_ARRAY => at += 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let raw = u32_at(types_data, m + 8)?;
                        let offset = if kind_flag {
                            MemberOffset {
                                bit_offset: raw & 0x00ff_ffff,
                                bitfield_size: raw >> 24,
                            }
                        } else {
                            MemberOffset {
                                bit_offset: raw,
                                bitfield_size: 0,
                            }
                        };
                        members.push(Member {
                            name_off: u32_at(types_data, m)?,
                            type_id: u32_at(types_data, m + 4)?,
                            offset,
                        });
                    }
                    at += vlen * 12;
                }
                KIND_ENUM | KIND_FUNC_PROTO => at += vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => at += vlen * 12,
                // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG: no trailer.
                _ => {}
            }
            types.push(Type {
                name_off,
                kind,
                members,
                size_or_type,
            });
        }
        Ok(Btf { types, strings })
    }

    fn name(&self, off: u32) -> &[u8] {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    /// Follows typedefs and modifiers to the underlying type id.
    fn resolve(&self, mut id: u32) -> u32 {
        // TYPEDEF (8), VOLATILE (9), CONST (10), RESTRICT (11), TYPE_TAG (18).
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(t) if matches!(t.kind, 8..=11 | 18) => id = t.size_or_type,
                _ => break,
            }
        }
        id
    }

    fn find_member(&self, type_id: u32, member: &[u8], base_bits: u32) -> Option<MemberOffset> {
        let t = self.types.get(self.resolve(type_id) as usize)?;
        for m in &t.members {
            let name = self.name(m.name_off);
            if name == member {
                return Some(MemberOffset {
                    bit_offset: base_bits + m.offset.bit_offset,
                    bitfield_size: m.offset.bitfield_size,
                });
            }
            if name.is_empty() {
                // Anonymous struct/union: its members are reachable by name from the parent.
                if let Some(found) =
                    self.find_member(m.type_id, member, base_bits + m.offset.bit_offset)
                {
                    return Some(found);
                }
            }
        }
        None
    }

    /// The offset of `member` in `struct name`.
    pub fn member_offset(&self, name: &str, member: &str) -> Result<MemberOffset, BtfError> {
        let id = self
            .types
            .iter()
            .position(|t| t.kind == KIND_STRUCT && self.name(t.name_off) == name.as_bytes())
            .ok_or_else(|| BtfError::NoStruct(name.to_string()))?;
        self.find_member(id as u32, member.as_bytes(), 0)
            .ok_or_else(|| BtfError::NoMember(name.to_string(), member.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a tiny BTF blob: `struct s { int a; struct { int b; }; unsigned c:1; }`.
    fn sample() -> Vec<u8> {
        let strings = b"\0s\0a\0b\0c\0int\0".to_vec();
        // string offsets: s=1 a=3 b=5 c=7 int=9
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        // 1: int (size 4, 32 bits)
        push(&[9, KIND_INT << 24, 4, 32]);
        // 2: anonymous struct { int b; }
        push(&[0, (KIND_STRUCT << 24) | 1, 4, 5, 1, 0]);
        // 3: struct s, kind_flag set (bitfields), 3 members
        push(&[
            1,
            (1 << 31) | (KIND_STRUCT << 24) | 3,
            12,
            3,
            1,
            0,
            0,
            2,
            32,
            7,
            1,
            (1 << 24) | 64,
        ]);
        let mut data = Vec::new();
        data.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        data.extend_from_slice(&[1, 0]);
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            data.extend_from_slice(&w.to_le_bytes());
        }
        data.extend_from_slice(&types);
        data.extend_from_slice(&strings);
        data
    }

    #[test]
    fn finds_plain_anonymous_and_bitfield_members() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.member_offset("s", "a").unwrap().byte_offset(), 0);
        assert_eq!(btf.member_offset("s", "b").unwrap().byte_offset(), 4);
        let c = btf.member_offset("s", "c").unwrap();
        assert_eq!((c.bit_offset, c.bitfield_size), (64, 1));
        assert!(matches!(
            btf.member_offset("s", "zz"),
            Err(BtfError::NoMember(..))
        ));
        assert!(matches!(
            btf.member_offset("nope", "a"),
            Err(BtfError::NoStruct(_))
        ));
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"not btf at all, clearly").is_err());
        assert!(Btf::parse(b"").is_err());
    }

    #[test]
    fn reads_task_struct_from_running_kernel() {
        // Every kernel this agent supports exposes BTF; a machine without it must fail loudly here.
        let btf = Btf::from_kernel().expect("kernel BTF");
        let pid = btf.member_offset("task_struct", "pid").unwrap();
        let tgid = btf.member_offset("task_struct", "tgid").unwrap();
        assert_eq!(pid.bitfield_size, 0);
        assert_eq!(
            tgid.byte_offset(),
            pid.byte_offset() + 4,
            "tgid follows pid"
        );
    }
}
