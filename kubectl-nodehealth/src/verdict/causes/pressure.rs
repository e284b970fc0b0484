//! `node-pressure`: the node is short of memory, disk or PIDs.
//!
//! The kubelet's eviction manager sets MemoryPressure, DiskPressure and PIDPressure
//! (pkg/kubelet/eviction) and evicts pods; the guide keeps node filesystems under 70%.

use super::{CauseId, Inputs, Score};
use crate::checks::{FindingId, PressureKind, Severity};

/// Score the pressure cause.
pub fn score(i: &Inputs) -> Score {
    let mut s = Score::new(CauseId::NodePressure);
    for kind in PressureKind::ALL {
        if let Some(w) = i.problem(&FindingId::Pressure(kind)) {
            s.because(if kind == PressureKind::Memory { 75 } else { 70 }, w);
        }
    }
    for f in i
        .findings
        .iter()
        .filter(|f| matches!(f.id, FindingId::Filesystem(_)) && f.severity.is_problem())
    {
        let critical = f.severity >= Severity::Critical;
        s.because(
            if critical { 55 } else { 30 },
            format!("{}: {}", f.id, f.summary),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn memory_pressure_outweighs_a_full_filesystem() {
        let facts = facts();
        let f = [
            finding(FindingId::Pressure(PressureKind::Memory), Severity::Warning),
            finding(FindingId::Filesystem("nodefs".into()), Severity::Critical),
        ];
        assert_eq!(score(&Inputs::new(&f, &facts)).score, 75);
    }
}
