//! End-to-end tests of kubectl-nodehealth against the real local cluster that
//! `cargo xtask cluster up` provides. The tests themselves live in `tests/tests/`; they join
//! `cargo xtask test` when the cluster harness exists.
