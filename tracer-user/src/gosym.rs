//! Functions of a Go binary, stripped or not, from its `.gopclntab`; and where they return.
//!
//! The kubelet is built with `-s -w`: no ELF symbol table. Go's own function table stays, in the
//! `.gopclntab` section (`.data.rel.ro.gopclntab` in a PIE build), because the runtime needs it
//! for stack traces. A uprobe on a Go function needs its file offset, and, since Go moves
//! goroutine stacks (a uretprobe's rewritten return address would be copied with the stack), a
//! uprobe on each of its return instructions instead of a uretprobe.
//!
//! The layout read here is Go 1.18 and later (`runtime/symtab.go`'s `pcHeader`, `functab` and
//! `_func`; `cmd/link/internal/ld/pcln.go` writes them):
//! - header: magic (`0xfffffff0` for 1.18-1.19, `0xfffffff1` since 1.20), two zero bytes, the
//!   instruction size quantum, the pointer size, then pointer-sized words: nfunc, nfiles, the text
//!   start (0 since Go 1.26: read `runtime.moduledata.text` instead), and the offsets of the
//!   function name table, the compilation-unit table, the file table, the pc tables and the
//!   function table (`pclnOffset`), each from the header's start;
//! - function table: nfunc + 1 pairs of u32 (entry offset from the text start, offset of the
//!   function's `_func` from the function table's start); the last pair's entry is the end of the
//!   last function, so each function ends where the next begins;
//! - `_func`: u32 entry offset, i32 name offset into the name table (NUL-terminated).
//!
//! Go 1.26 no longer stores the text start in the header (it needed a relocation); the linker
//! puts `runtime.firstmoduledata` in a section of its own, `.go.module`, whose `text` field
//! follows the pcHeader pointer, six slices (24 bytes each), the findfunctab pointer and
//! minpc/maxpc: at byte 176 on 64-bit targets. Its first word points back at `.gopclntab`, which
//! tells that the layout is the one expected.

use std::{fs::File, os::fd::AsRawFd, path::Path};

use object::{Architecture, Object, ObjectSection, ObjectSegment};

/// A file mapped read-only: the kubelet's binary is ~100 MB, and only its function table and one
/// function's code are read (only those pages are brought in).
pub struct MappedFile {
    ptr: *mut libc::c_void,
    len: usize,
}

impl MappedFile {
    pub fn open(path: &Path) -> std::io::Result<MappedFile> {
        let file = File::open(path)?;
        let len = usize::try_from(file.metadata()?.len())
            .map_err(|_| std::io::Error::other("file too large to map"))?;
        if len == 0 {
            return Err(std::io::Error::other("empty file"));
        }
        #[allow(unsafe_code)]
        // SAFETY: a private read-only mapping of a file we opened; the pointer is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(MappedFile { ptr, len })
    }
}

impl std::ops::Deref for MappedFile {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        #[allow(unsafe_code)]
        // SAFETY: `len` bytes mapped readable at `ptr` until drop. (A binary replaced on disk is
        // a new inode; this mapping keeps the old one.)
        unsafe {
            std::slice::from_raw_parts(self.ptr as *const u8, self.len)
        }
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        #[allow(unsafe_code)]
        // SAFETY: unmaps exactly what `open` mapped.
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
}

/// Why a function could not be found.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GosymError {
    #[error("not an ELF file this agent reads: {0}")]
    Elf(String),
    #[error("no .gopclntab section: not a Go binary (or one this agent cannot read)")]
    NoPclntab,
    #[error("unsupported .gopclntab (magic {0:#x}: Go 1.18 or later is needed)")]
    Magic(u32),
    #[error("the .gopclntab is truncated or inconsistent ({0})")]
    Corrupt(&'static str),
    #[error(
        "the Go text start is not in the .gopclntab header and no .go.module section confirms it"
    )]
    NoTextStart,
    #[error("no function {0} in the binary's .gopclntab")]
    NotFound(String),
    #[error("{0:#x} is in no loadable segment of the file")]
    NotMapped(u64),
    #[error("instructions of {function} could not be decoded at {at:#x}")]
    Undecodable { function: String, at: u64 },
    #[error("unsupported architecture {0:?} (x86_64 and aarch64 are)")]
    Architecture(Architecture),
}

/// A Go function: its name and where its code lies (virtual addresses; `end` is where the next
/// function begins, alignment padding included).
#[derive(Debug, Clone, PartialEq)]
pub struct GoFunc {
    pub name: String,
    pub entry: u64,
    pub end: u64,
}

/// A Go function ready for uprobes: its entry's and each return instruction's file offsets.
#[derive(Debug, Clone, PartialEq)]
pub struct GoProbePoints {
    pub func: GoFunc,
    pub entry_offset: u64,
    pub return_offsets: Vec<u64>,
}

/// The function table of one Go binary.
pub struct GoBinary<'a> {
    data: &'a [u8],
    file: object::File<'a>,
    /// `.gopclntab`'s contents.
    pcln: &'a [u8],
    ptr_size: usize,
    little: bool,
    nfunc: usize,
    text_start: u64,
    funcname_offset: usize,
    functab_offset: usize,
}

impl<'a> GoBinary<'a> {
    /// Reads `data`, an ELF Go binary's bytes.
    pub fn parse(data: &'a [u8]) -> Result<GoBinary<'a>, GosymError> {
        let file = object::File::parse(data).map_err(|e| GosymError::Elf(e.to_string()))?;
        let section = file
            .section_by_name(".gopclntab")
            .or_else(|| file.section_by_name(".data.rel.ro.gopclntab"))
            .ok_or(GosymError::NoPclntab)?;
        let pcln_address = section.address();
        let pcln = section
            .data()
            .map_err(|_| GosymError::Corrupt("section data"))?;
        let little = file.is_little_endian();
        let magic = read_u32(pcln, 0, little).ok_or(GosymError::Corrupt("header"))?;
        if magic != 0xffff_fff0 && magic != 0xffff_fff1 {
            return Err(GosymError::Magic(magic));
        }
        let ptr_size = *pcln.get(7).ok_or(GosymError::Corrupt("header"))? as usize;
        if ptr_size != 8 && ptr_size != 4 {
            return Err(GosymError::Corrupt("pointer size"));
        }
        let word = |i: usize| {
            read_word(pcln, 8 + i * ptr_size, ptr_size, little).ok_or(GosymError::Corrupt("header"))
        };
        let nfunc = word(0)? as usize;
        let header_text = word(2)?;
        let funcname_offset = word(3)? as usize;
        let functab_offset = word(7)? as usize;
        // Before Go 1.26 the header has it (an external linker may leave it 0, as Go's own
        // debug/gosym knows: then the start of .text is where Go's text begins, as it does in
        // Go's own link).
        let text_start = if header_text != 0 {
            header_text
        } else {
            moduledata_text(&file, pcln_address, ptr_size, little).or_else(|e| {
                file.section_by_name(".text")
                    .filter(|_| file.section_by_name(".go.module").is_none())
                    .map(|t| t.address())
                    .ok_or(e)
            })?
        };
        // The function table must hold nfunc + 1 pairs.
        if nfunc
            .checked_add(1)
            .and_then(|n| n.checked_mul(8))
            .and_then(|n| n.checked_add(functab_offset))
            .is_none_or(|end| end > pcln.len())
        {
            return Err(GosymError::Corrupt("function table"));
        }
        Ok(GoBinary {
            data,
            file,
            pcln,
            ptr_size,
            little,
            nfunc,
            text_start,
            funcname_offset,
            functab_offset,
        })
    }

    /// The pointer size the binary was built for.
    pub fn pointer_size(&self) -> usize {
        self.ptr_size
    }

    /// Every function, in address order.
    pub fn functions(&self) -> impl Iterator<Item = GoFunc> + '_ {
        (0..self.nfunc).filter_map(|i| self.function(i))
    }

    /// The function named `name` (`google.golang.org/grpc.(*ClientConn).Invoke`), also when the
    /// binary was built from a vendor directory (`…/vendor/google.golang.org/grpc…`).
    pub fn find(&self, name: &str) -> Result<GoFunc, GosymError> {
        let vendored = format!("/vendor/{name}");
        self.functions()
            .find(|f| f.name == name || f.name.ends_with(&vendored))
            .ok_or_else(|| GosymError::NotFound(name.to_string()))
    }

    fn function(&self, i: usize) -> Option<GoFunc> {
        let pair = self.functab_offset + i * 8;
        let entry_off = read_u32(self.pcln, pair, self.little)?;
        let func_off = read_u32(self.pcln, pair + 4, self.little)? as usize;
        let next_entry_off = read_u32(self.pcln, pair + 8, self.little)?;
        let func = self.functab_offset + func_off;
        let name_off = read_u32(self.pcln, func + 4, self.little)? as i32;
        let name_at = self
            .funcname_offset
            .checked_add(usize::try_from(name_off).ok()?)?;
        let name_bytes = self.pcln.get(name_at..)?;
        let name_len = name_bytes.iter().position(|&b| b == 0)?;
        Some(GoFunc {
            name: String::from_utf8_lossy(&name_bytes[..name_len]).into_owned(),
            entry: self.text_start + u64::from(entry_off),
            end: self.text_start + u64::from(next_entry_off),
        })
    }

    /// The file offset of a virtual address: where in the file the loadable segment holding it
    /// puts it (uprobes are placed by file offset).
    pub fn file_offset(&self, address: u64) -> Result<u64, GosymError> {
        self.file
            .segments()
            .find_map(|s| {
                let (offset, size) = s.file_range();
                (address >= s.address() && address < s.address() + size)
                    .then(|| address - s.address() + offset)
            })
            .ok_or(GosymError::NotMapped(address))
    }

    /// The code bytes of `f` (from the loadable segment that maps it).
    fn code(&self, f: &GoFunc) -> Result<&'a [u8], GosymError> {
        let start = self.file_offset(f.entry)?;
        let len = f.end.saturating_sub(f.entry);
        usize::try_from(start)
            .ok()
            .zip(usize::try_from(len).ok())
            .and_then(|(s, l)| self.data.get(s..s.checked_add(l)?))
            .ok_or(GosymError::NotMapped(f.entry))
    }

    /// The uprobe points of the function named `name`: its entry and every return instruction.
    pub fn probe_points(&self, name: &str) -> Result<GoProbePoints, GosymError> {
        let func = self.find(name)?;
        let code = self.code(&func)?;
        let returns =
            return_addresses(self.file.architecture(), code, func.entry).map_err(|e| match e {
                GosymError::Undecodable { at, .. } => GosymError::Undecodable {
                    function: func.name.clone(),
                    at,
                },
                e => e,
            })?;
        let return_offsets = returns
            .into_iter()
            .map(|a| self.file_offset(a))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(GoProbePoints {
            entry_offset: self.file_offset(func.entry)?,
            func,
            return_offsets,
        })
    }
}

/// `runtime.firstmoduledata.text` from the `.go.module` section (Go 1.26 and later), checked by
/// its first word pointing at `.gopclntab`.
fn moduledata_text(
    file: &object::File<'_>,
    pcln_address: u64,
    ptr_size: usize,
    little: bool,
) -> Result<u64, GosymError> {
    let module = file
        .section_by_name(".go.module")
        .and_then(|s| s.data().ok())
        .ok_or(GosymError::NoTextStart)?;
    // pcHeader pointer, 6 slices of 3 words (funcnametab, cutab, filetab, pctab, pclntable,
    // ftab), findfunctab, minpc, maxpc, then text.
    let text_word = 1 + 6 * 3 + 3;
    let at = |i: usize| read_word(module, i * ptr_size, ptr_size, little);
    match (at(0), at(text_word)) {
        (Some(header), Some(text)) if header == pcln_address && text != 0 => Ok(text),
        _ => Err(GosymError::NoTextStart),
    }
}

/// The addresses of the return instructions in `code`, which starts at `address`: a linear sweep
/// (Go puts no data among amd64 instructions; arm64 instructions are fixed-width).
pub fn return_addresses(
    arch: Architecture,
    code: &[u8],
    address: u64,
) -> Result<Vec<u64>, GosymError> {
    match arch {
        Architecture::X86_64 => {
            use iced_x86::{Decoder, DecoderOptions, Mnemonic};
            let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
            let mut rets = Vec::new();
            while decoder.can_decode() {
                let instruction = decoder.decode();
                if instruction.is_invalid() {
                    // Padding after the last instruction is INT3 (0xCC), which decodes; an
                    // invalid byte sequence means this is not code we understand.
                    return Err(GosymError::Undecodable {
                        function: String::new(),
                        at: instruction.ip(),
                    });
                }
                if instruction.mnemonic() == Mnemonic::Ret {
                    rets.push(instruction.ip());
                }
            }
            Ok(rets)
        }
        Architecture::Aarch64 => {
            // RET (x30): the only encoding Go's assembler emits for a return.
            const RET: u32 = 0xd65f_03c0;
            Ok(code
                .chunks_exact(4)
                .enumerate()
                .filter(|(_, w)| u32::from_le_bytes([w[0], w[1], w[2], w[3]]) == RET)
                .map(|(i, _)| address + 4 * i as u64)
                .collect())
        }
        other => Err(GosymError::Architecture(other)),
    }
}

fn read_u32(data: &[u8], at: usize, little: bool) -> Option<u32> {
    let b: [u8; 4] = data.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(if little {
        u32::from_le_bytes(b)
    } else {
        u32::from_be_bytes(b)
    })
}

fn read_word(data: &[u8], at: usize, size: usize, little: bool) -> Option<u64> {
    if size == 4 {
        return read_u32(data, at, little).map(u64::from);
    }
    let b: [u8; 8] = data.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(if little {
        u64::from_le_bytes(b)
    } else {
        u64::from_be_bytes(b)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_go_is_said_to_be_so() {
        assert!(matches!(
            GoBinary::parse(b"not an elf"),
            Err(GosymError::Elf(_))
        ));
        // An ELF without Go's table: this test binary itself (Rust).
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(GoBinary::parse(&me).err(), Some(GosymError::NoPclntab));
    }

    #[test]
    fn amd64_returns_are_found_by_decoding_not_by_byte() {
        // mov ebx, eax (89 c3: a C3 byte that is not a RET); ret; int3 padding.
        let code = [0x89, 0xc3, 0xc3, 0xcc, 0xcc];
        assert_eq!(
            return_addresses(Architecture::X86_64, &code, 0x1000).unwrap(),
            vec![0x1002]
        );
        // ret imm16 is a return too.
        let code = [0xc2, 0x08, 0x00];
        assert_eq!(
            return_addresses(Architecture::X86_64, &code, 0x10).unwrap(),
            vec![0x10]
        );
    }

    #[test]
    fn arm64_returns_are_the_ret_word() {
        let mut code = Vec::new();
        code.extend_from_slice(&0xd503_201fu32.to_le_bytes()); // nop
        code.extend_from_slice(&0xd65f_03c0u32.to_le_bytes()); // ret
        assert_eq!(
            return_addresses(Architecture::Aarch64, &code, 0x400000).unwrap(),
            vec![0x400004]
        );
    }
}
