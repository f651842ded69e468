//! The kernels of kernels/decode.cu run on the host through the CUDA emulation (kernels/emu.h,
//! built by build.rs), checked against the CPU references.

use crate::checks::{self, Backend, Size};
use crate::reference::AttnShape;
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
    fn aha_emu_rmsnorm(x: *const f32, w: *const f32, y: *mut f32, n: i32, eps: f32, round: i32)
        -> i32;
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
        cap: i32,
        h: i32,
        kvh: i32,
        d: i32,
        scale: f32,
        round: i32,
    ) -> i32;
}

/// The emulation runs one launch at a time (its state is global).
static ONE: Mutex<()> = Mutex::new(());

struct Emu;

fn ok(rc: i32) -> Result<()> {
    if rc != 0 {
        bail!("emulated launch failed ({rc})")
    }
    Ok(())
}

/// Words are read 16 bytes at a time: copy into 16-byte-aligned storage as the GPU's allocator
/// gives.
fn aligned(bytes: &[u8]) -> Vec<u128> {
    let mut v = vec![0u128; bytes.len().div_ceil(16)];
    // SAFETY: u128 is plain memory; the length is within the vector.
    #[allow(unsafe_code)]
    let dst = unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, v.len() * 16) };
    dst[..bytes.len()].copy_from_slice(bytes);
    v
}

fn back(v: &[u128], out: &mut [u8]) {
    #[allow(unsafe_code)]
    let src = unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, v.len() * 16) };
    out.copy_from_slice(&src[..out.len()]);
}

#[allow(unsafe_code)]
impl Backend for Emu {
    fn matvec(
        &self,
        fmt: WFormat,
        w: &[u8],
        x: &[f32],
        y: &mut [f32],
        bias: Option<&[f32]>,
        rows: usize,
        cols: usize,
        accumulate: bool,
        round: bool,
    ) -> Result<()> {
        let _g = ONE.lock().unwrap_or_else(|e| e.into_inner());
        let w = aligned(w);
        let b = bias.map_or(std::ptr::null(), |b| b.as_ptr());
        // SAFETY: every buffer holds what the kernel reads and writes for these shapes.
        ok(unsafe {
            aha_emu_matvec(
                fmt.id(),
                w.as_ptr() as *const c_void,
                x.as_ptr(),
                y.as_mut_ptr(),
                b,
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
        wg: &[u8],
        wu: &[u8],
        x: &[f32],
        h: &mut [f32],
        rows: usize,
        cols: usize,
        round: bool,
    ) -> Result<()> {
        let _g = ONE.lock().unwrap_or_else(|e| e.into_inner());
        let (wg, wu) = (aligned(wg), aligned(wu));
        // SAFETY: as above.
        ok(unsafe {
            aha_emu_swiglu(
                fmt.id(),
                wg.as_ptr() as *const c_void,
                wu.as_ptr() as *const c_void,
                x.as_ptr(),
                h.as_mut_ptr(),
                rows as i32,
                cols as i32,
                round as i32,
            )
        })
    }

    fn embed(
        &self,
        fmt: WFormat,
        table: &[u8],
        tok: usize,
        x: &mut [f32],
        cols: usize,
        round: bool,
    ) -> Result<()> {
        let _g = ONE.lock().unwrap_or_else(|e| e.into_inner());
        let t = aligned(table);
        let tokpos = [tok as i32, 0];
        // SAFETY: as above.
        ok(unsafe {
            aha_emu_embed(
                fmt.id(),
                t.as_ptr() as *const c_void,
                tokpos.as_ptr(),
                x.as_mut_ptr(),
                cols as i32,
                round as i32,
            )
        })
    }

    fn rmsnorm(&self, x: &[f32], w: &[f32], y: &mut [f32], eps: f32, round: bool) -> Result<()> {
        let _g = ONE.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: as above.
        ok(unsafe {
            aha_emu_rmsnorm(
                x.as_ptr(),
                w.as_ptr(),
                y.as_mut_ptr(),
                x.len() as i32,
                eps,
                round as i32,
            )
        })
    }

    fn rope_kv(
        &self,
        ct: CacheType,
        qkv: &mut [f32],
        pos: usize,
        cos: &[f32],
        sin: &[f32],
        kc: &mut [u8],
        vc: &mut [u8],
        s: AttnShape,
        interleaved: bool,
        round: bool,
    ) -> Result<()> {
        let _g = ONE.lock().unwrap_or_else(|e| e.into_inner());
        let (mut k, mut v) = (aligned(kc), aligned(vc));
        let tokpos = [0, pos as i32];
        // SAFETY: as above.
        ok(unsafe {
            aha_emu_rope_kv(
                ct.id(),
                qkv.as_mut_ptr(),
                tokpos.as_ptr(),
                cos.as_ptr(),
                sin.as_ptr(),
                k.as_mut_ptr() as *mut c_void,
                v.as_mut_ptr() as *mut c_void,
                s.cap as i32,
                s.h as i32,
                s.kvh as i32,
                s.d as i32,
                interleaved as i32,
                round as i32,
            )
        })?;
        back(&k, kc);
        back(&v, vc);
        Ok(())
    }

    fn attend(
        &self,
        ct: CacheType,
        q: &[f32],
        kc: &[u8],
        vc: &[u8],
        pos: usize,
        y: &mut [f32],
        s: AttnShape,
        scale: f32,
        round: bool,
    ) -> Result<()> {
        let _g = ONE.lock().unwrap_or_else(|e| e.into_inner());
        let (k, v) = (aligned(kc), aligned(vc));
        let tokpos = [0, pos as i32];
        // SAFETY: as above.
        ok(unsafe {
            aha_emu_attend(
                ct.id(),
                q.as_ptr(),
                k.as_ptr() as *const c_void,
                v.as_ptr() as *const c_void,
                tokpos.as_ptr(),
                y.as_mut_ptr(),
                s.cap as i32,
                s.h as i32,
                s.kvh as i32,
                s.d as i32,
                scale,
                round as i32,
            )
        })
    }
}

#[test]
fn every_kernel_matches_its_reference_in_emulation() {
    let checks = checks::run(&Emu, Size::Small).unwrap();
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
#[test]
fn a_wrong_result_fails_its_check() {
    let (rows, cols) = (9, 256);
    let w: Vec<f32> = (0..rows * cols).map(|i| (i % 7) as f32 - 3.0).collect();
    let w = CacheType::F32.encode(&w);
    let x = vec![0.5f32; cols];
    let mut got = vec![0f32; rows];
    // Half the columns: a different sum.
    Emu.matvec(WFormat::F32, &w, &x, &mut got, None, rows, cols / 2, false, false)
        .unwrap();
    let mut want = vec![0f32; rows];
    crate::reference::matvec(WFormat::F32, &w, &x, &mut want, None, rows, cols, false, false);
    assert!(checks::rel_error(&got, &want) > 1e-2);
}
