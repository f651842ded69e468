//! Escapes found by the attack run (issue 14), one test per row: each drives the real binary or
//! the public interface as an attacker would, and fails if the attack gets through. The sandbox
//! rows (1–7) live in `sandbox.rs`; the workspace, index, panic and server rows here.

mod robust;
mod server;
mod workspace;
