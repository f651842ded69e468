//! The decode kernels on a CUDA device: PTX from nvcc (build.rs) loaded into candle's context and
//! launched on the device's one stream with raw device pointers. No launch records or waits on
//! events, so a whole decode step can be captured as a CUDA graph ([`Kernels::capture`]) and
//! replayed.

use crate::checks::Memory;
use crate::reference::AttnShape;
use crate::step::{AttnParts, Launch, Ptr, MAX_SPLITS};
use crate::{CacheType, WFormat};
use anyhow::{bail, Context, Result};
use candle_core::cuda_backend::cudarc::driver::{
    sys, CudaFunction, CudaGraph, CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchConfig,
    PushKernelArg,
};
use candle_core::quantized::QTensor;
use candle_core::{CudaDevice, DType, Storage, Tensor};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The kernels, compiled by nvcc at build time.
pub const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/decode.ptx"));
const MODULE: &str = "aha_decode";
/// Rows per mat-vec block (`MV_WARPS` in decode.cu), threads per attention block.
const MV_ROWS: usize = 8;
const ATT_THREADS: u32 = 128;

/// A device address.
pub type DevPtr = Ptr;

/// The loaded kernels of one device.
pub struct Kernels {
    dev: CudaDevice,
    stream: Arc<CudaStream>,
    funcs: Mutex<HashMap<&'static str, CudaFunction>>,
}

/// The address of a contiguous CUDA tensor's first element.
pub fn tensor_ptr(t: &Tensor) -> Result<DevPtr> {
    let (st, layout) = t.storage_and_layout();
    let Storage::Cuda(cs) = &*st else {
        bail!("tensor is not on a CUDA device")
    };
    if !layout.is_contiguous() {
        bail!("tensor is not contiguous")
    }
    let stream = cs.device.cuda_stream();
    let base = match t.dtype() {
        DType::F32 => cs.as_cuda_slice::<f32>()?.device_ptr(&stream).0,
        DType::BF16 => cs.as_cuda_slice::<half::bf16>()?.device_ptr(&stream).0,
        DType::F16 => cs.as_cuda_slice::<half::f16>()?.device_ptr(&stream).0,
        DType::U32 => cs.as_cuda_slice::<u32>()?.device_ptr(&stream).0,
        d => bail!("no kernel reads {d:?} tensors"),
    };
    Ok(base + (layout.start_offset() * t.dtype().size_in_bytes()) as u64)
}

/// The address of a quantized tensor's blocks on a CUDA device.
pub fn qtensor_ptr(q: &QTensor) -> Result<DevPtr> {
    Ok(q.device_ptr()? as DevPtr)
}

/// The address of a buffer of this crate's own.
pub fn slice_ptr<T>(s: &CudaSlice<T>, stream: &CudaStream) -> DevPtr {
    s.device_ptr(stream).0
}

fn cfg(grid: usize, block: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (grid as u32, 1, 1),
        block_dim: (block, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Names of the kernels for each format (static, so launches allocate nothing).
fn matvec_name(f: WFormat) -> &'static str {
    match f {
        WFormat::F32 => "matvec_f32",
        WFormat::Bf16 => "matvec_bf16",
        WFormat::F16 => "matvec_f16",
        WFormat::Q8_0 => "matvec_q8_0",
        WFormat::Q4K => "matvec_q4_k",
        WFormat::Q6K => "matvec_q6_k",
    }
}
fn swiglu_name(f: WFormat) -> &'static str {
    match f {
        WFormat::F32 => "swiglu_f32",
        WFormat::Bf16 => "swiglu_bf16",
        WFormat::F16 => "swiglu_f16",
        WFormat::Q8_0 => "swiglu_q8_0",
        WFormat::Q4K => "swiglu_q4_k",
        WFormat::Q6K => "swiglu_q6_k",
    }
}
fn embed_name(f: WFormat) -> &'static str {
    match f {
        WFormat::F32 => "embed_f32",
        WFormat::Bf16 => "embed_bf16",
        WFormat::F16 => "embed_f16",
        WFormat::Q8_0 => "embed_q8_0",
        WFormat::Q4K => "embed_q4_k",
        WFormat::Q6K => "embed_q6_k",
    }
}
fn rope_name(c: CacheType) -> &'static str {
    match c {
        CacheType::F32 => "rope_kv_f32",
        CacheType::Bf16 => "rope_kv_bf16",
        CacheType::F16 => "rope_kv_f16",
    }
}
fn attend_name(c: CacheType) -> &'static str {
    match c {
        CacheType::F32 => "attend_f32",
        CacheType::Bf16 => "attend_bf16",
        CacheType::F16 => "attend_f16",
    }
}

#[allow(unsafe_code)]
impl Kernels {
    /// Loads the module into `dev`'s context.
    pub fn new(dev: &CudaDevice) -> Result<Self> {
        let k = Self {
            dev: dev.clone(),
            stream: dev.cuda_stream(),
            funcs: Mutex::new(HashMap::new()),
        };
        // Every kernel now: loading a module while a graph is being captured is not allowed.
        let mut names = vec!["rmsnorm_f32"];
        for f in WFormat::ALL {
            names.extend([matvec_name(f), swiglu_name(f), embed_name(f)]);
        }
        for c in CacheType::ALL {
            names.extend([rope_name(c), attend_name(c)]);
        }
        for n in names {
            k.func(n).with_context(|| {
                format!("loading aha's decode kernel {n} (PTX) into the CUDA context")
            })?;
        }
        Ok(k)
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    fn func(&self, name: &'static str) -> Result<CudaFunction> {
        let mut m = self.funcs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = m.get(name) {
            return Ok(f.clone());
        }
        let f = self
            .dev
            .get_or_load_custom_func(name, MODULE, PTX)?
            .into_cuda_function();
        m.insert(name, f.clone());
        Ok(f)
    }

    /// Records what `f` launches on the stream as a CUDA graph instead of running it.
    pub fn capture(&self, f: impl FnOnce() -> Result<()>) -> Result<Graph> {
        self.stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)?;
        let r = f();
        let g = self
            .stream
            .end_capture(sys::CUgraphInstantiate_flags_enum(0));
        r?;
        let g = g?.context("stream capture recorded no graph")?;
        g.upload()?;
        Ok(Graph(g))
    }

    /// Uploads `v` into a new device buffer.
    pub fn upload<T: DeviceRepr>(&self, v: &[T]) -> Result<CudaSlice<T>> {
        Ok(self.stream.clone_htod(v)?)
    }

    /// A zeroed device buffer of `n` values.
    pub fn zeros<T: DeviceRepr + candle_core::cuda_backend::cudarc::driver::ValidAsZeroBits>(
        &self,
        n: usize,
    ) -> Result<CudaSlice<T>> {
        Ok(self.stream.alloc_zeros::<T>(n.max(1))?)
    }

    pub fn ptr<T>(&self, s: &CudaSlice<T>) -> DevPtr {
        slice_ptr(s, &self.stream)
    }
}

#[allow(unsafe_code)]
impl Launch for Kernels {
    /// `y = W·x (+ bias)`, or `y += …` with `accumulate`. `bias`: 0 for none.
    #[allow(clippy::too_many_arguments)]
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
        let f = self.func(matvec_name(fmt))?;
        let (r, c, a, rd) = (rows as i32, cols as i32, accumulate as i32, round as i32);
        let mut b = self.stream.launch_builder(&f);
        b.arg(&w)
            .arg(&x)
            .arg(&y)
            .arg(&bias)
            .arg(&r)
            .arg(&c)
            .arg(&a)
            .arg(&rd);
        // SAFETY: the caller's pointers hold rows × cols weights, cols inputs and rows outputs.
        unsafe { b.launch(cfg(rows.div_ceil(MV_ROWS), (MV_ROWS * 32) as u32)) }?;
        Ok(())
    }

    /// `h = silu(Wg·x) · (Wu·x)`.
    #[allow(clippy::too_many_arguments)]
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
        let f = self.func(swiglu_name(fmt))?;
        let (r, c, rd) = (rows as i32, cols as i32, round as i32);
        let mut b = self.stream.launch_builder(&f);
        b.arg(&wg).arg(&wu).arg(&x).arg(&h).arg(&r).arg(&c).arg(&rd);
        // SAFETY: as for matvec, twice.
        unsafe { b.launch(cfg(rows.div_ceil(MV_ROWS), (MV_ROWS * 32) as u32)) }?;
        Ok(())
    }

    /// `x = table[tokpos[0]]`.
    fn embed(
        &self,
        fmt: WFormat,
        table: Ptr,
        tokpos: Ptr,
        x: Ptr,
        cols: usize,
        round: bool,
    ) -> Result<()> {
        let f = self.func(embed_name(fmt))?;
        let (c, rd) = (cols as i32, round as i32);
        let mut b = self.stream.launch_builder(&f);
        b.arg(&table).arg(&tokpos).arg(&x).arg(&c).arg(&rd);
        // SAFETY: the token id in tokpos[0] is below the table's rows (the engine checks ids).
        unsafe { b.launch(cfg(1, 256)) }?;
        Ok(())
    }

    /// `y = rmsnorm(x) · w` over `n` values.
    #[allow(clippy::too_many_arguments)]
    fn rmsnorm(&self, x: Ptr, w: Ptr, y: Ptr, n: usize, eps: f32, round: bool) -> Result<()> {
        let f = self.func("rmsnorm_f32")?;
        let (ni, rd) = (n as i32, round as i32);
        let mut b = self.stream.launch_builder(&f);
        b.arg(&x).arg(&w).arg(&y).arg(&ni).arg(&eps).arg(&rd);
        // SAFETY: x, w and y hold n values.
        unsafe { b.launch(cfg(1, 1024)) }?;
        Ok(())
    }

    /// Rotary embedding of q and k in `qkv` at position `tokpos[1]`, keys and values written to
    /// the caches there.
    #[allow(clippy::too_many_arguments)]
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
        let f = self.func(rope_name(ct))?;
        let (cap, h, kvh, d) = (s.cap as i32, s.h as i32, s.kvh as i32, s.d as i32);
        let (il, rd) = (interleaved as i32, round as i32);
        let mut b = self.stream.launch_builder(&f);
        b.arg(&qkv)
            .arg(&tokpos)
            .arg(&cos)
            .arg(&sin)
            .arg(&kc)
            .arg(&vc)
            .arg(&cap)
            .arg(&h)
            .arg(&kvh)
            .arg(&d)
            .arg(&il)
            .arg(&rd);
        let threads = (s.d / 2).div_ceil(32).max(1) * 32;
        // SAFETY: tokpos[1] < cap, the caches are (kvh, cap, d), the tables cover tokpos[1].
        unsafe { b.launch(cfg(s.h + 2 * s.kvh, threads as u32)) }?;
        Ok(())
    }

    /// Decode attention over cache positions `0..=tokpos[1]`.
    #[allow(clippy::too_many_arguments)]
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
        if s.d > 256 {
            bail!("decode attention takes heads of at most 256, not {}", s.d)
        }
        if part.splits == 0 || part.splits > MAX_SPLITS {
            bail!("attention split {} ways", part.splits)
        }
        let f = self.func(attend_name(ct))?;
        let (cap, h, kvh, d, rd) = (
            s.cap as i32,
            s.h as i32,
            s.kvh as i32,
            s.d as i32,
            round as i32,
        );
        let splits = part.splits as i32;
        let mut b = self.stream.launch_builder(&f);
        b.arg(&q)
            .arg(&kc)
            .arg(&vc)
            .arg(&tokpos)
            .arg(&y)
            .arg(&part.o)
            .arg(&part.ml)
            .arg(&part.done)
            .arg(&cap)
            .arg(&h)
            .arg(&kvh)
            .arg(&d)
            .arg(&scale)
            .arg(&rd)
            .arg(&splits);
        // SAFETY: as for rope_kv; the scratch holds h · MAX_SPLITS shares.
        unsafe { b.launch(cfg(s.h * part.splits, ATT_THREADS)) }?;
        Ok(())
    }
}

/// A captured decode step, replayed with [`Graph::launch`].
pub struct Graph(CudaGraph);

// SAFETY: CUDA graph objects may be used from any thread as long as calls on one graph are
// serialized; the owner keeps a `Graph` behind a mutex and never shares it unsynchronized.
#[allow(unsafe_code)]
unsafe impl Send for Graph {}

impl Graph {
    /// Replays the graph on the stream it was captured from.
    pub fn launch(&self) -> Result<()> {
        Ok(self.0.launch()?)
    }
}

/// GPU memory for the checks ([`crate::checks::Staged`]): each buffer kept until cleared.
pub struct DevMem<'a> {
    k: &'a Kernels,
    bufs: Vec<CudaSlice<u8>>,
}

impl<'a> DevMem<'a> {
    pub fn new(k: &'a Kernels) -> Self {
        Self {
            k,
            bufs: Vec::new(),
        }
    }
}

impl Memory for DevMem<'_> {
    fn bytes(&mut self, b: &[u8]) -> Result<Ptr> {
        let s = if b.is_empty() {
            self.k.zeros::<u8>(1)?
        } else {
            self.k.upload(b)?
        };
        let p = self.k.ptr(&s);
        self.bufs.push(s);
        Ok(p)
    }

    fn read(&mut self, at: Ptr, n: usize) -> Result<Vec<u8>> {
        let stream = &self.k.stream;
        for s in &self.bufs {
            let start = slice_ptr(s, stream);
            if at >= start && at + n as u64 <= start + s.len() as u64 {
                stream.synchronize()?;
                let off = (at - start) as usize;
                return Ok(stream.clone_dtoh(&s.slice(off..off + n))?);
            }
        }
        bail!("address {at:#x} (+{n}) is not a buffer of this memory")
    }

    fn clear(&mut self) {
        self.bufs.clear();
    }
}
