//! The attention key/value cache: preallocated in chunks, appendable, truncatable to any position.
//! On a GPU (and with `AHA_NUMERICS=ggml`) it holds candle tensors; on the CPU it holds plain
//! memory in the layout aha's attention kernel reads.

use aha_kernels::attention;
use candle_core::{DType, Device, Result, Tensor};

/// How many positions the cache grows by at a time.
pub const CHUNK: usize = 512;

/// Keys and values of one layer, laid out `(kv_heads, capacity, head_dim)`.
#[derive(Debug, Clone)]
pub struct LayerCache {
    k: Option<Tensor>,
    v: Option<Tensor>,
    /// The CPU kernel's cache, used instead of `k` and `v` when the CPU kernels run.
    cpu: Option<CpuLayer>,
    len: usize,
    cap: usize,
}

/// One layer's keys and values for [`attention::attend`], each `(kv_heads, cap, head_dim)`
/// row-major ([`attention::key_at`]).
#[derive(Debug, Clone, Default)]
pub struct CpuLayer {
    pub keys: Vec<f32>,
    pub values: Vec<f32>,
}

impl LayerCache {
    fn new() -> Self {
        Self {
            k: None,
            v: None,
            cpu: None,
            len: 0,
            cap: 0,
        }
    }

    /// The capacity to grow to for `need` positions: `None` if they fit, else the next multiple
    /// of [`CHUNK`] (never past the context length). An error past the context length.
    fn grow_to(&self, need: usize, max_len: usize) -> Result<Option<usize>> {
        if need > max_len {
            candle_core::bail!("KV cache full: {need} positions needed, context holds {max_len}")
        }
        Ok((need > self.cap).then(|| {
            need.div_ceil(CHUNK)
                .saturating_mul(CHUNK)
                .min(max_len)
                .max(need)
        }))
    }

    /// Appends `n` positions of keys and values, each `(kv_heads, n, head_dim)` row-major, to
    /// the CPU cache; returns it with its capacity.
    pub fn append_cpu(
        &mut self,
        k: &[f32],
        v: &[f32],
        (kvh, n, d): (usize, usize, usize),
        max_len: usize,
    ) -> Result<(&CpuLayer, usize)> {
        let need = self.len + n;
        let grow = self.grow_to(need, max_len)?;
        let cur = self.cpu.get_or_insert_with(CpuLayer::default);
        if let Some(new_cap) = grow {
            let mut keys = vec![0f32; kvh * new_cap * d];
            let mut values = vec![0f32; kvh * new_cap * d];
            if self.cap > 0 {
                // Every head's rows move to where the larger capacity puts them.
                let (old, new) = (self.cap * d, new_cap * d);
                for h in 0..kvh {
                    keys[h * new..h * new + old].copy_from_slice(&cur.keys[h * old..(h + 1) * old]);
                    values[h * new..h * new + old]
                        .copy_from_slice(&cur.values[h * old..(h + 1) * old]);
                }
            }
            cur.keys = keys;
            cur.values = values;
            self.cap = new_cap;
        }
        attention::store(
            &mut cur.keys,
            &mut cur.values,
            k,
            v,
            self.len,
            n,
            kvh,
            d,
            self.cap,
        );
        self.len = need;
        Ok((cur, self.cap))
    }

    /// Makes room for `need` positions in the tensor cache, `(kv_heads, cap, head_dim)` of
    /// `dtype` on `device` (allocated on first use, grown by copying), and returns the whole
    /// key and value tensors. Writes nothing: a caller that writes positions itself (the fused
    /// CUDA decode step) then calls [`LayerCache::advance`].
    pub fn reserve(
        &mut self,
        (kvh, d): (usize, usize),
        dtype: DType,
        device: &Device,
        need: usize,
        max_len: usize,
    ) -> Result<(&Tensor, &Tensor)> {
        if let Some(new_cap) = self.grow_to(need, max_len)? {
            // Copy what we have into the larger cache.
            let nk = Tensor::zeros((kvh, new_cap, d), dtype, device)?;
            let nv = Tensor::zeros((kvh, new_cap, d), dtype, device)?;
            if let (Some(ok), Some(ov)) = (&self.k, &self.v) {
                if self.len > 0 {
                    nk.slice_set(&ok.narrow(1, 0, self.len)?.contiguous()?, 1, 0)?;
                    nv.slice_set(&ov.narrow(1, 0, self.len)?.contiguous()?, 1, 0)?;
                }
            }
            self.k = Some(nk);
            self.v = Some(nv);
            self.cap = new_cap;
        }
        match (&self.k, &self.v) {
            (Some(a), Some(b)) => Ok((a, b)),
            _ => candle_core::bail!("KV cache not allocated"),
        }
    }

    /// Counts `n` more positions as cached, written by the caller into the tensors
    /// [`LayerCache::reserve`] returned.
    pub fn advance(&mut self, n: usize) -> Result<()> {
        if self.len + n > self.cap {
            candle_core::bail!(
                "KV cache: {} + {n} positions exceed the {} reserved",
                self.len,
                self.cap
            )
        }
        self.len += n;
        Ok(())
    }

    /// Appends `k`, `v` of shape `(kv_heads, n, head_dim)` and returns views over every cached position.
    pub fn append(&mut self, k: &Tensor, v: &Tensor, max_len: usize) -> Result<(Tensor, Tensor)> {
        let (kvh, n, d) = k.dims3()?;
        let need = self.len + n;
        let (ck, cv) = self.reserve((kvh, d), k.dtype(), k.device(), need, max_len)?;
        let (ck, cv) = (ck.clone(), cv.clone());
        ck.slice_set(&k.contiguous()?, 1, self.len)?;
        cv.slice_set(&v.contiguous()?, 1, self.len)?;
        self.len = need;
        Ok((ck.narrow(1, 0, need)?, cv.narrow(1, 0, need)?))
    }
}

/// One layer's keys and values for the first `n` positions, each `(kv_heads, n, head_dim)`
/// row-major f32, whatever the cache's own layout and dtype: what [`KvCache::export`] gives and
/// [`KvCache::import`] takes (the prompt cache on disk stores it).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerKv {
    pub keys: Vec<f32>,
    pub values: Vec<f32>,
}

/// Where [`KvCache::import`] puts keys and values: aha's CPU attention layout ([`CpuLayer`]), or
/// candle tensors of the activations' dtype on the model's device. It must be the layout the
/// forward pass uses for the model, or it will not find them.
#[derive(Debug, Clone)]
pub enum KvLayout {
    Cpu,
    Tensors { dtype: DType, device: Device },
}

impl LayerCache {
    /// The first `n` positions as `(kv_heads, n, head_dim)` f32.
    fn export(&self, n: usize, (kvh, d): (usize, usize)) -> Result<LayerKv> {
        if n > self.len {
            candle_core::bail!("cannot export {n} positions: the cache holds {}", self.len)
        }
        if let Some(c) = &self.cpu {
            let rows = |src: &[f32]| -> Vec<f32> {
                (0..kvh)
                    .flat_map(|h| {
                        let at = attention::key_at(h, 0, 0, self.cap, d);
                        src[at..at + n * d].iter().copied()
                    })
                    .collect()
            };
            return Ok(LayerKv {
                keys: rows(&c.keys),
                values: rows(&c.values),
            });
        }
        let (Some(k), Some(v)) = (&self.k, &self.v) else {
            candle_core::bail!("KV cache not allocated")
        };
        let rows = |t: &Tensor| -> Result<Vec<f32>> {
            t.narrow(1, 0, n)?
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()
        };
        Ok(LayerKv {
            keys: rows(k)?,
            values: rows(v)?,
        })
    }
}

/// The whole model's cache.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerCache>,
    max_len: usize,
}

impl KvCache {
    /// An empty cache for `n_layers` layers that may hold up to `max_len` positions.
    pub fn new(n_layers: usize, max_len: usize) -> Self {
        Self {
            layers: (0..n_layers).map(|_| LayerCache::new()).collect(),
            max_len,
        }
    }

    /// Positions currently cached.
    pub fn len(&self) -> usize {
        self.layers.first().map(|l| l.len).unwrap_or(0)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most positions this cache may hold (the model's context length).
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Positions allocated (a multiple of [`CHUNK`], or the context length).
    pub fn capacity(&self) -> usize {
        self.layers.first().map(|l| l.cap).unwrap_or(0)
    }

    /// Forgets every position from `n` on; the memory stays allocated for reuse.
    pub fn truncate(&mut self, n: usize) {
        for l in &mut self.layers {
            l.len = l.len.min(n);
        }
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.truncate(0)
    }

    pub(crate) fn layer_mut(&mut self, i: usize) -> &mut LayerCache {
        &mut self.layers[i]
    }

    /// Every layer's keys and values for positions `0..n`, for a model with `kv_heads` heads of
    /// `head_dim` (an error past what the cache holds).
    pub fn export(&self, n: usize, (kv_heads, head_dim): (usize, usize)) -> Result<Vec<LayerKv>> {
        self.layers
            .iter()
            .map(|l| l.export(n, (kv_heads, head_dim)))
            .collect()
    }

    /// Replaces the whole cache with `layers`, `n` positions each of shape
    /// `(kv_heads, n, head_dim)`, stored in `layout`. On an error (a shape that does not fit)
    /// the cache is left empty.
    pub fn import(
        &mut self,
        layers: &[LayerKv],
        (kvh, n, d): (usize, usize, usize),
        layout: &KvLayout,
    ) -> Result<()> {
        self.clear();
        let r = self.import_layers(layers, (kvh, n, d), layout);
        if r.is_err() {
            self.clear();
        }
        r
    }

    fn import_layers(
        &mut self,
        layers: &[LayerKv],
        (kvh, n, d): (usize, usize, usize),
        layout: &KvLayout,
    ) -> Result<()> {
        if layers.len() != self.layers.len() {
            candle_core::bail!(
                "{} layers to import into a cache of {}",
                layers.len(),
                self.layers.len()
            )
        }
        let max_len = self.max_len;
        for (l, kv) in self.layers.iter_mut().zip(layers) {
            if kv.keys.len() != kvh * n * d || kv.values.len() != kvh * n * d {
                candle_core::bail!("a layer to import is not ({kvh}, {n}, {d})")
            }
            match layout {
                KvLayout::Cpu => {
                    l.append_cpu(&kv.keys, &kv.values, (kvh, n, d), max_len)?;
                }
                KvLayout::Tensors { dtype, device } => {
                    let t =
                        |x: &[f32]| Tensor::from_slice(x, (kvh, n, d), device)?.to_dtype(*dtype);
                    l.append(&t(&kv.keys)?, &t(&kv.values)?, max_len)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// The fused decode step's way in: room reserved (grown by copying what is cached), the
    /// caller's own write, then the position counted.
    #[test]
    fn reserve_grows_keeps_the_cached_positions_and_advance_counts_within_it() {
        let dev = Device::Cpu;
        let mut c = KvCache::new(1, 2000);
        let k = Tensor::full(2f32, (2, 3, 4), &dev).unwrap();
        c.layer_mut(0).append(&k, &k, 2000).unwrap();
        let (rk, rv) = c
            .layer_mut(0)
            .reserve((2, 4), DType::F32, &dev, 4, 2000)
            .unwrap();
        // Already room: the same tensors, the whole capacity.
        assert_eq!(rk.dims(), &[2, CHUNK, 4]);
        assert_eq!(rv.dims(), &[2, CHUNK, 4]);
        assert_eq!(c.len(), 3);
        c.layer_mut(0).advance(1).unwrap();
        assert_eq!(c.len(), 4);
        // Past the capacity: grown, the cached positions copied.
        let (rk, _) = c
            .layer_mut(0)
            .reserve((2, 4), DType::F32, &dev, CHUNK + 1, 2000)
            .unwrap();
        assert_eq!(rk.dims(), &[2, 2 * CHUNK, 4]);
        let kept: f32 = rk
            .narrow(1, 0, 3)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(kept, 2.0 * 24.0);
        // No counting past what was reserved, nor reserving past the context.
        assert!(c.layer_mut(0).advance(2 * CHUNK).is_err());
        assert!(c
            .layer_mut(0)
            .reserve((2, 4), DType::F32, &dev, 2001, 2000)
            .is_err());
    }

    #[test]
    fn grows_in_chunks_and_truncates() {
        let dev = Device::Cpu;
        let mut c = KvCache::new(1, 2000);
        let k = Tensor::ones((2, 3, 4), DType::F32, &dev).unwrap();
        let (ak, _) = c.layer_mut(0).append(&k, &k, 2000).unwrap();
        assert_eq!(ak.dims(), &[2, 3, 4]);
        assert_eq!(c.capacity(), CHUNK);
        let big = Tensor::zeros((2, 600, 4), DType::F32, &dev).unwrap();
        let (ak, _) = c.layer_mut(0).append(&big, &big, 2000).unwrap();
        assert_eq!(ak.dims(), &[2, 603, 4]);
        assert_eq!(c.capacity(), 1024);
        // The first three positions survived the regrowth.
        let first: f32 = ak
            .narrow(1, 0, 3)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(first, 24.0);
        c.truncate(2);
        assert_eq!(c.len(), 2);
        let two = Tensor::full(5f32, (2, 1, 4), &dev).unwrap();
        let (ak, _) = c.layer_mut(0).append(&two, &two, 2000).unwrap();
        assert_eq!(ak.dims(), &[2, 3, 4]);
        let last: f32 = ak
            .narrow(1, 2, 1)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(last, 40.0);
    }

    #[test]
    fn the_cpu_cache_keeps_every_head_across_regrowth_and_truncation() {
        let mut c = KvCache::new(1, 2000);
        let (kvh, d) = (2, 4);
        // Position p of head h holds the value 1000·h + p in every component.
        let rows = |p0: usize, n: usize| -> Vec<f32> {
            (0..kvh)
                .flat_map(|h| (p0..p0 + n).flat_map(move |p| [(1000 * h + p) as f32; 4]))
                .collect()
        };
        let check = |l: &CpuLayer, cap: usize, upto: usize| {
            for h in 0..kvh {
                for p in 0..upto {
                    let at = attention::key_at(h, p, 0, cap, d);
                    assert_eq!(l.keys[at], (1000 * h + p) as f32, "key h {h} p {p}");
                    assert_eq!(
                        l.values[at + d - 1],
                        (1000 * h + p) as f32,
                        "value h {h} p {p}"
                    );
                }
            }
        };
        let (l, cap) = c
            .layer_mut(0)
            .append_cpu(&rows(0, 3), &rows(0, 3), (kvh, 3, d), 2000)
            .unwrap();
        assert_eq!(cap, CHUNK);
        check(l, cap, 3);
        let (l, cap) = c
            .layer_mut(0)
            .append_cpu(&rows(3, 600), &rows(3, 600), (kvh, 600, d), 2000)
            .unwrap();
        assert_eq!(cap, 1024);
        check(l, cap, 603);
        c.truncate(2);
        let (l, cap) = c
            .layer_mut(0)
            .append_cpu(&rows(2, 1), &rows(2, 1), (kvh, 1, d), 2000)
            .unwrap();
        check(l, cap, 3);
        assert_eq!(c.len(), 3);
        assert!(c
            .layer_mut(0)
            .append_cpu(&rows(3, 1998), &rows(3, 1998), (kvh, 1998, d), 2000)
            .is_err());
    }

    /// Keys `1000·l + 100·h + p + c/10` (values negated) for `n` positions from `p0`, as
    /// `(kvh, n, d)`.
    fn rows(l: usize, p0: usize, n: usize, (kvh, d): (usize, usize)) -> (Vec<f32>, Vec<f32>) {
        let k: Vec<f32> = (0..kvh)
            .flat_map(|h| {
                (p0..p0 + n).flat_map(move |p| {
                    (0..d).map(move |c| (1000 * l + 100 * h + p) as f32 + c as f32 / 10.0)
                })
            })
            .collect();
        let v = k.iter().map(|x| -x).collect();
        (k, v)
    }

    #[test]
    fn export_and_import_round_trip_in_both_layouts() {
        let (kvh, d) = (2, 4);
        let dev = Device::Cpu;
        let tensors = KvLayout::Tensors {
            dtype: DType::F32,
            device: dev.clone(),
        };
        for layout in [KvLayout::Cpu, tensors] {
            let mut c = KvCache::new(2, 2000);
            // 600 positions in two appends, so the cache regrew once in between.
            for (p0, n) in [(0, 3), (3, 597)] {
                for l in 0..2 {
                    let (k, v) = rows(l, p0, n, (kvh, d));
                    match &layout {
                        KvLayout::Cpu => {
                            c.layer_mut(l)
                                .append_cpu(&k, &v, (kvh, n, d), 2000)
                                .unwrap();
                        }
                        KvLayout::Tensors { .. } => {
                            let t = |x: Vec<f32>| Tensor::from_vec(x, (kvh, n, d), &dev).unwrap();
                            c.layer_mut(l).append(&t(k), &t(v), 2000).unwrap();
                        }
                    }
                }
            }
            let out = c.export(550, (kvh, d)).unwrap();
            assert_eq!(out.len(), 2);
            for (l, kv) in out.iter().enumerate() {
                let (k, v) = rows(l, 0, 550, (kvh, d));
                assert_eq!(kv.keys, k, "{layout:?} layer {l}");
                assert_eq!(kv.values, v, "{layout:?} layer {l}");
            }
            assert!(c.export(601, (kvh, d)).is_err());
            let mut fresh = KvCache::new(2, 2000);
            fresh.import(&out, (kvh, 550, d), &layout).unwrap();
            assert_eq!(fresh.len(), 550);
            assert_eq!(fresh.export(550, (kvh, d)).unwrap(), out);
            // A wrong shape leaves the cache empty.
            assert!(fresh.import(&out, (kvh, 551, d), &layout).is_err());
            assert_eq!(fresh.len(), 0);
            assert!(fresh.import(&out[..1], (kvh, 550, d), &layout).is_err());
        }
    }

    #[test]
    fn refuses_past_context() {
        let dev = Device::Cpu;
        let mut c = KvCache::new(1, 4);
        let k = Tensor::zeros((1, 5, 2), DType::F32, &dev).unwrap();
        assert!(c.layer_mut(0).append(&k, &k, 4).is_err());
        let _ = DType::F32;
    }
}
