//! The kernels of kernels/decode.cu run on the host through the CUDA emulation (kernels/emu.h,
//! built by build.rs): [`Host`] launches them on host addresses (a whole decode [`Plan`] too, in
//! aha-engine's tests), and the tests here check each kernel against its CPU reference.
//!
//! [`Plan`]: crate::step::Plan

use crate::checks::Memory;
#[cfg(test)]
use crate::checks::{self, Size};
use crate::reference::AttnShape;
use crate::step::{AttnParts, Launch, Ptr, MAX_SPLITS};
use crate::{CacheType, WFormat};
use anyhow::{bail, Result};
use std::ffi::c_void;
use std::sync::Mutex;

extern "C" {
    fn aha_emu_matvec(
        fmt: i32,
        w: *const c_void,
        x: *const f32,
        y: *mut f32,
        bias: *const f32,
        rows: i32,
        cols: i32,
        acc: i32,
        round: i32,
    ) -> i32;
    fn aha_emu_swiglu(
        fmt: i32,
        wg: *const c_void,
        wu: *const c_void,
        x: *const f32,
        h: *mut f32,
        rows: i32,
        cols: i32,
        round: i32,
    ) -> i32;
    fn aha_emu_embed(
        fmt: i32,
        t: *const c_void,
        tokpos: *const i32,
        x: *mut f32,
        cols: i32,
        round: i32,
    ) -> i32;
    fn aha_emu_rmsnorm(
        x: *const f32,
        w: *const f32,
        y: *mut f32,
        n: i32,
        eps: f32,
        round: i32,
    ) -> i32;
    fn aha_emu_rope_kv(
        cache: i32,
        qkv: *mut f32,
        tokpos: *const i32,
        cos: *const f32,
        sin: *const f32,
        kc: *mut c_void,
        vc: *mut c_void,
        cap: i32,
        h: i32,
        kvh: i32,
        d: i32,
        interleaved: i32,
        round: i32,
    ) -> i32;
    fn aha_emu_attend(
        cache: i32,
        q: *const f32,
        kc: *const c_void,
        vc: *const c_void,
        tokpos: *const i32,
        y: *mut f32,
        part_o: *mut f32,
        part_ml: *mut f32,
        done: *mut i32,
        cap: i32,
        h: i32,
        kvh: i32,
        d: i32,
        scale: f32,
        round: i32,
        splits: i32,
    ) -> i32;
}

#[cfg(test)]
extern "C" {
    fn aha_emu_h2f(h: u16) -> f32;
    fn aha_emu_f2h(f: f32) -> u16;
}

/// The emulation runs one launch at a time (its state is global).
static ONE: Mutex<()> = Mutex::new(());

fn ok(rc: i32) -> Result<()> {
    if rc != 0 {
        bail!("emulated launch failed ({rc})")
    }
    Ok(())
}

/// Launches on host memory: every address is a host pointer (16-byte aligned where the kernels
/// load 16 bytes at once, as a GPU allocator aligns).
pub struct Host;

fn p<T>(a: Ptr) -> *mut T {
    a as usize as *mut T
}

#[allow(unsafe_code)]
impl Launch for Host {
    fn matvec(
        &self,
        fmt: WFormat,
        w: Ptr,
        x: Ptr,
        y: Ptr,
        bias: Ptr,
        rows: usize,
        cols: usize,
        accumulate: bool,
        round: bool,
    ) -> Result<()> {
        let _g = ONE.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the caller's addresses hold what the kernel reads and writes for these shapes.
        ok(unsafe {
            aha_emu_matvec(
                fmt.id(),
                p(w),
                p(x),
                p(y),
                p(bias),
                rows as i32,
                cols as i32,
                accumulate as i32,
                round as i32,
            )
        })
    }

    fn swiglu(
        &self,
        fmt: WFormat,
        wg: Ptr,
        wu: Ptr,
        x: Ptr,
        h: Ptr,
        rows: usize,
        cols: usize,
        round: bool,
    ) -> Result<()> {
        let _g = ONE.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: as above.
        ok(unsafe {
            aha_emu_swiglu(
                fmt.id(),
                p(wg),
                p(wu),
                p(x),
                p(h),
                rows as i32,
                cols as i32,
                round as i32,
            )
        })
    }

    fn embed(
        &self,
        fmt: WFormat,
        table: Ptr,
        tokpos: Ptr,
        x: Ptr,
        cols: usize,
        round: bool,
    ) -> Result<()> {
        let _g = ONE.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: as above.
        ok(unsafe {
            aha_emu_embed(
                fmt.id(),
                p(table),
                p(tokpos),
                p(x),
                cols as i32,
                round as i32,
            )
        })
    }

    fn rmsnorm(&self, x: Ptr, w: Ptr, y: Ptr, n: usize, eps: f32, round: bool) -> Result<()> {
        let _g = ONE.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: as above.
        ok(unsafe { aha_emu_rmsnorm(p(x), p(w), p(y), n as i32, eps, round as i32) })
    }

    fn rope_kv(
        &self,
        ct: CacheType,
        qkv: Ptr,
        tokpos: Ptr,
        cos: Ptr,
        sin: Ptr,
        kc: Ptr,
        vc: Ptr,
        s: AttnShape,
        interleaved: bool,
        round: bool,
    ) -> Result<()> {
        let _g = ONE.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: as above.
        ok(unsafe {
            aha_emu_rope_kv(
                ct.id(),
                p(qkv),
                p(tokpos),
                p(cos),
                p(sin),
                p(kc),
                p(vc),
                s.cap as i32,
                s.h as i32,
                s.kvh as i32,
                s.d as i32,
                interleaved as i32,
                round as i32,
            )
        })
    }

    fn attend(
        &self,
        ct: CacheType,
        q: Ptr,
        kc: Ptr,
        vc: Ptr,
        tokpos: Ptr,
        y: Ptr,
        part: AttnParts,
        s: AttnShape,
        scale: f32,
        round: bool,
    ) -> Result<()> {
        if part.splits == 0 || part.splits > MAX_SPLITS {
            bail!("attention split {} ways", part.splits)
        }
        let _g = ONE.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: as above.
        ok(unsafe {
            aha_emu_attend(
                ct.id(),
                p(q),
                p(kc),
                p(vc),
                p(tokpos),
                p(y),
                p(part.o),
                p(part.ml),
                p(part.done),
                s.cap as i32,
                s.h as i32,
                s.kvh as i32,
                s.d as i32,
                scale,
                round as i32,
                part.splits as i32,
            )
        })
    }
}

/// Host buffers at stable, 16-byte-aligned addresses, kept alive together.
#[derive(Default)]
pub struct Arena {
    bufs: Vec<Vec<u128>>,
}

impl Arena {
    /// A copy of `bytes`; its address.
    pub fn bytes(&mut self, bytes: &[u8]) -> Ptr {
        let mut v = vec![0u128; bytes.len().div_ceil(16).max(1)];
        // SAFETY: u128 is plain memory and the copy stays within the vector.
        #[allow(unsafe_code)]
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), v.as_mut_ptr() as *mut u8, bytes.len())
        };
        let at = v.as_ptr() as usize as Ptr;
        self.bufs.push(v);
        at
    }

    /// A copy of `vs`; its address.
    pub fn f32s(&mut self, vs: &[f32]) -> Ptr {
        let bytes: Vec<u8> = vs.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.bytes(&bytes)
    }

    /// `n` zero bytes; their address.
    pub fn zeros(&mut self, n: usize) -> Ptr {
        self.bytes(&vec![0u8; n])
    }

    /// `n` bytes at `at` (an address this arena gave).
    pub fn read(&self, at: Ptr, n: usize) -> Vec<u8> {
        for b in &self.bufs {
            let start = b.as_ptr() as usize as Ptr;
            if at >= start && at + n as u64 <= start + (b.len() * 16) as u64 {
                // SAFETY: the range lies within this buffer.
                #[allow(unsafe_code)]
                let s = unsafe { std::slice::from_raw_parts(at as usize as *const u8, n) };
                return s.to_vec();
            }
        }
        panic!("address {at:#x} (+{n}) is not in the arena")
    }

    /// `n` f32 at `at`.
    pub fn read_f32(&self, at: Ptr, n: usize) -> Vec<f32> {
        CacheType::F32.decode(&self.read(at, 4 * n))
    }

    /// Writes `bytes` at `at` (an address this arena gave).
    pub fn write(&mut self, at: Ptr, bytes: &[u8]) {
        let _ = self.read(at, bytes.len());
        // SAFETY: `read` checked the range lies within one of this arena's buffers.
        #[allow(unsafe_code)]
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), at as usize as *mut u8, bytes.len())
        };
    }
}

impl Memory for Arena {
    fn bytes(&mut self, b: &[u8]) -> Result<Ptr> {
        Ok(Arena::bytes(self, b))
    }
    fn read(&mut self, at: Ptr, n: usize) -> Result<Vec<u8>> {
        Ok(Arena::read(self, at, n))
    }
    fn clear(&mut self) {
        self.bufs.clear();
    }
}

/// The checks' backend on the emulation.
#[cfg(test)]
fn emu() -> checks::Staged<'static, Arena> {
    checks::Staged::new(&Host, Arena::default())
}

#[cfg(test)]
#[test]
fn every_kernel_matches_its_reference_in_emulation() {
    let checks = checks::run(&emu(), Size::Small).unwrap();
    let report: Vec<String> = checks.iter().map(|c| c.to_string()).collect();
    let failed: Vec<&String> = checks
        .iter()
        .zip(&report)
        .filter(|(c, _)| !c.passed())
        .map(|(_, r)| r)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} checks failed:\n{}",
        failed.len(),
        checks.len(),
        report.join("\n")
    );
    eprintln!("{}", report.join("\n"));
    // Every kernel and format took part.
    for k in ["matvec", "swiglu", "embed", "rmsnorm", "rope_kv", "attend"] {
        assert!(report.iter().any(|r| r.contains(k)), "{k} not checked");
    }
    assert!(checks.len() > 60, "{}", checks.len());
}

/// A check can fail: a kernel given the wrong shape disagrees with the reference.
#[cfg(test)]
#[test]
fn a_wrong_result_fails_its_check() {
    let (rows, cols) = (9, 256);
    let w: Vec<f32> = (0..rows * cols).map(|i| (i % 7) as f32 - 3.0).collect();
    let w = CacheType::F32.encode(&w);
    let x = vec![0.5f32; cols];
    let mut got = vec![0f32; rows];
    // Half the columns: a different sum.
    emu()
        .matvec(
            WFormat::F32,
            &w,
            &x,
            &mut got,
            None,
            rows,
            cols / 2,
            false,
            false,
        )
        .unwrap();
    let mut want = vec![0f32; rows];
    crate::reference::matvec(
        WFormat::F32,
        &w,
        &x,
        &mut want,
        None,
        rows,
        cols,
        false,
        false,
    );
    assert!(checks::rel_error(&got, &want) > 1e-2);
}

/// The emulation's own f16 conversions (the kernels' on a GPU are CUDA's) agree with the `half`
/// crate's: every half value widened, and narrowing rounded to nearest even, subnormals,
/// overflow and NaN included.
#[cfg(test)]
#[test]
#[allow(unsafe_code)]
fn half_conversions_match_the_half_crate() {
    for h in 0..=u16::MAX {
        // SAFETY: plain functions of their arguments.
        let got = unsafe { aha_emu_h2f(h) };
        let want = half::f16::from_bits(h).to_f32();
        assert!(
            got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
            "{h:#x}"
        );
    }
    let mut x = 0x1234_5678u32;
    let specials = [
        0.0f32,
        -0.0,
        65504.0,
        65519.99,
        65520.0,
        1e-8,
        2.98e-8,
        5.96e-8,
        6.1e-5,
        f32::INFINITY,
        f32::NAN,
    ];
    for i in 0..200_000u32 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let f = if (i as usize) < specials.len() {
            specials[i as usize]
        } else {
            f32::from_bits(x)
        };
        // SAFETY: as above.
        let got = unsafe { aha_emu_f2h(f) };
        let want = half::f16::from_f32(f);
        assert!(
            got == want.to_bits() || (want.is_nan() && half::f16::from_bits(got).is_nan()),
            "{f:e}: {got:#x} vs {:#x}",
            want.to_bits()
        );
    }
}
