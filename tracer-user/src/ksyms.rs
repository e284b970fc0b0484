//! Kernel stack symbolisation from /proc/kallsyms. Addresses never leave this module: they would
//! reveal the kernel's KASLR offset, so a frame is `function+0xoffset` or `?` when it cannot be
//! named (kallsyms hidden by kptr_restrict shows every address as 0).

use std::fs;

/// Kernel text symbols sorted by address.
pub struct KernelSymbols {
    /// (address, name), ascending.
    symbols: Vec<(u64, String)>,
}

impl KernelSymbols {
    /// Reads /proc/kallsyms; `None` when it is unreadable or its addresses are hidden.
    pub fn load() -> Option<KernelSymbols> {
        Self::parse(&fs::read_to_string("/proc/kallsyms").ok()?)
    }

    /// Parses kallsyms text (`address type name [module]`), keeping text symbols.
    pub fn parse(text: &str) -> Option<KernelSymbols> {
        let mut symbols: Vec<(u64, String)> = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let addr = u64::from_str_radix(f.next()?, 16).ok()?;
                let kind = f.next()?;
                let name = f.next()?;
                (addr != 0 && matches!(kind, "t" | "T" | "w" | "W")).then(|| (addr, name.into()))
            })
            .collect();
        if symbols.is_empty() {
            return None;
        }
        symbols.sort_by_key(|(a, _)| *a);
        Some(KernelSymbols { symbols })
    }

    /// `function+0xoffset` of the symbol covering `addr`, or `?`.
    pub fn name(&self, addr: u64) -> String {
        let i = self.symbols.partition_point(|(a, _)| *a <= addr);
        match i.checked_sub(1).map(|i| &self.symbols[i]) {
            Some((start, name)) => format!("{name}+0x{:x}", addr - start),
            None => "?".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_frames_without_exposing_addresses() {
        let k = KernelSymbols::parse(
            "ffffffff81000100 T io_schedule\nffffffff81000000 T _text\nffffffff81000200 d data\n",
        )
        .unwrap();
        assert_eq!(k.name(0xffffffff81000110), "io_schedule+0x10");
        assert_eq!(k.name(0xffffffff81000000), "_text+0x0");
        assert_eq!(k.name(0x10), "?");
        assert!(KernelSymbols::parse("0000000000000000 T hidden\n").is_none());
    }
}
