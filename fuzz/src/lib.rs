//! Support for the fuzz targets: the invariants each one checks live in [`checks`], shared with
//! the regression tests in `tests/it/fuzz_regressions.rs`.

pub mod checks;
