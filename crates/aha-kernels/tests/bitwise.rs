//! Every kernel set this CPU can run against the scalar reference, bit for bit, and the
//! attention kernel against its definition, without
//! libtest's harness and without threads (rayon's pool is never touched), so that it also runs
//! under qemu-user, which hangs in programs that start a thread. Exits 1 on any failure.

use aha_kernels::quant::check;
use aha_kernels::Kernels;

fn main() {
    let (mut passed, mut failed) = (0, 0);
    for k in Kernels::all_available() {
        match check::bitwise(k) {
            Ok(n) if n > 10_000 => {
                println!(
                    "ok    {:<13} {n} outputs equal the scalar reference",
                    k.name()
                );
                passed += 1;
            }
            Ok(n) => {
                println!("FAIL  {:<13} only {n} outputs compared", k.name());
                failed += 1;
            }
            Err(e) => {
                println!("FAIL  {:<13} {e}", k.name());
                failed += 1;
            }
        }
    }
    // The attention kernel (its SIMD comes from the compiler and the gemm crate) against the
    // plain definition, on the calling thread.
    match aha_kernels::attention::check(false) {
        Ok(n) => {
            println!("ok    attention     {n} values match the definition");
            passed += 1;
        }
        Err(e) => {
            println!("FAIL  attention     {e}");
            failed += 1;
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
