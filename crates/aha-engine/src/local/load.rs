//! Loading models: GGUF files (quantized or not) and safetensors checkpoint directories.

use super::fused::FusedSlot;
use super::linear::Linear;
use super::model::{Arch, Block, Dump, Embedding, ModelConfig, Transformer};
use crate::options::EngineOptions;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

/// A parsed GGUF header: metadata and tensor table, checked against the file's size.
pub struct GgufFile {
    pub content: Content,
    pub path: std::path::PathBuf,
    /// The file's size in bytes.
    pub file_len: u64,
    /// Where the tensor data ends (the file's expected size, less trailing padding), and the
    /// tensor that ends there; `None` without tensors.
    pub data_end: Option<(u64, String)>,
}

impl GgufFile {
    /// Reads and validates the header of `path`, and checks that the file holds every tensor's
    /// data (a truncated download is refused here, before anything is loaded).
    pub fn open(path: &Path) -> Result<Self> {
        let g = Self::open_header(path)?;
        g.check_complete()?;
        Ok(g)
    }

    /// Reads and validates the header of `path` (metadata and tensor table) without requiring
    /// the tensor data: a file cut after its header still gives its tokenizer and chat template
    /// (the published first part of a split model is such a file). [`GgufFile::load_model`]
    /// refuses its weights.
    pub fn open_header(path: &Path) -> Result<Self> {
        let f = File::open(path)
            .with_context(|| format!("cannot open model file {}", path.display()))?;
        let file_len = f.metadata()?.len();
        let mut r = BufReader::new(f);
        // candle's reader trusts some header fields (an alignment of 0 divides by zero).
        let content = aha_protocol::panic::catch_panic(|| Content::read(&mut r))
            .map_err(|p| anyhow!("{p}"))
            .and_then(|r| r.map_err(|e| anyhow!("{e}")))
            .map_err(|e| {
                anyhow!(
                    "{} is not a readable GGUF file ({e}). It may be truncated or corrupt: download it again (`aha pull NAME`) or check the path.",
                    path.display()
                )
            })?;
        let data_end =
            check_tensor_table(&content).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        Ok(Self {
            content,
            path: path.to_path_buf(),
            file_len,
            data_end,
        })
    }

    /// Whether the file holds every tensor's data.
    pub fn is_complete(&self) -> bool {
        self.data_end
            .as_ref()
            .is_none_or(|(end, _)| *end <= self.file_len)
    }

    /// An error that says the file is truncated, by how much, when it does not hold every
    /// tensor's data.
    pub fn check_complete(&self) -> Result<()> {
        match &self.data_end {
            Some((end, name)) if *end > self.file_len => bail!(
                "{}: the file is truncated: expected {end} bytes, has {} (tensor {name} ends at byte {end}). Its header (metadata, tokenizer, chat template) is whole but its weights are not, so it cannot run: download it again (`aha pull NAME`).",
                self.path.display(),
                self.file_len
            ),
            _ => Ok(()),
        }
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    /// A string metadata value.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)
            .and_then(|v| v.to_string().ok())
            .map(|s| s.as_str())
    }

    /// An unsigned integer metadata value, whatever its stored width.
    pub fn get_usize(&self, key: &str) -> Option<usize> {
        let v = self.get(key)?;
        v.to_u32()
            .map(|x| x as usize)
            .or_else(|_| v.to_u64().map(|x| x as usize))
            .or_else(|_| v.to_i32().map(|x| x as usize))
            .or_else(|_| v.to_i64().map(|x| x as usize))
            .ok()
    }

    /// A float metadata value.
    pub fn get_f32(&self, key: &str) -> Option<f32> {
        let v = self.get(key)?;
        v.to_f32().or_else(|_| v.to_f64().map(|x| x as f32)).ok()
    }

    /// `general.architecture`.
    pub fn arch_name(&self) -> &str {
        self.get_str("general.architecture").unwrap_or("unknown")
    }

    /// The model's hyper-parameters, or an error naming what is unsupported or missing.
    pub fn config(&self) -> Result<ModelConfig> {
        let arch = self.arch()?;
        let a = arch.name();
        let need = |k: &str| {
            self.get_usize(&format!("{a}.{k}"))
                .ok_or_else(|| anyhow!("{}: GGUF metadata lacks {a}.{k}", self.path.display()))
        };
        let n_head = need("attention.head_count")?;
        let n_embd = need("embedding_length")?;
        let n_kv_head = self
            .get_usize(&format!("{a}.attention.head_count_kv"))
            .unwrap_or(n_head);
        let head_dim = self
            .get_usize(&format!("{a}.attention.key_length"))
            .unwrap_or(n_embd / n_head.max(1));
        let vocab_size = self.vocab_size()?;
        if n_head == 0 || n_kv_head == 0 || n_head % n_kv_head != 0 {
            bail!(
                "{}: bad head counts {n_head}/{n_kv_head}",
                self.path.display()
            );
        }
        let n_layer = need("block_count")?;
        let n_ctx = need("context_length")?;
        self.check_sizes(n_layer, n_embd, head_dim, n_ctx)?;
        Ok(ModelConfig {
            arch,
            n_layer,
            n_head,
            n_kv_head,
            n_embd,
            head_dim,
            n_ctx,
            vocab_size,
            rope_base: self
                .get_f32(&format!("{a}.rope.freq_base"))
                .unwrap_or(10_000.0),
            rms_eps: self
                .get_f32(&format!("{a}.attention.layer_norm_rms_epsilon"))
                .unwrap_or(1e-6) as f64,
            rope_interleaved: arch == Arch::Llama,
        })
    }

    /// The architecture, or an error naming the supported ones.
    fn arch(&self) -> Result<Arch> {
        let name = self.arch_name();
        Arch::parse(name).ok_or_else(|| {
            anyhow!(
                "{}: architecture `{name}` is not supported; supported: {}",
                self.path.display(),
                Arch::SUPPORTED.join(", ")
            )
        })
    }

    /// The vocabulary size: the rows of `token_embd.weight`.
    fn vocab_size(&self) -> Result<usize> {
        match self
            .content
            .tensor_infos
            .get("token_embd.weight")
            .map(|t| t.shape.dims().first())
        {
            Some(Some(&n)) => Ok(n),
            Some(None) => bail!(
                "{}: token_embd.weight has no dimensions",
                self.path.display()
            ),
            None => bail!("{}: no token_embd.weight tensor", self.path.display()),
        }
    }

    /// Sizes read from metadata decide allocations before any tensor is read: a damaged header
    /// must not ask for terabytes (that aborts the process instead of failing). Checks them
    /// against the tensor table and sane bounds.
    fn check_sizes(
        &self,
        n_layer: usize,
        n_embd: usize,
        head_dim: usize,
        n_ctx: usize,
    ) -> Result<()> {
        let blocks = self
            .content
            .tensor_infos
            .keys()
            .filter(|k| k.starts_with("blk."))
            .count();
        if n_layer == 0 || n_layer > blocks {
            bail!(
                "{}: the metadata says {n_layer} blocks but the file holds {blocks} block tensors; the file is damaged",
                self.path.display()
            );
        }
        let embd_dims = self.content.tensor_infos["token_embd.weight"].shape.dims();
        if embd_dims.get(1).is_some_and(|&d| d != n_embd) || head_dim == 0 || head_dim > 1 << 16 {
            bail!(
                "{}: embedding length {n_embd} and head size {head_dim} do not match token_embd.weight {embd_dims:?}; the file is damaged",
                self.path.display()
            );
        }
        if n_ctx == 0 || n_ctx > 1 << 24 {
            bail!(
                "{}: context length {n_ctx} is out of range (1 to 16M tokens); the file is damaged",
                self.path.display()
            );
        }
        Ok(())
    }

    /// Loads every weight onto `device`, with the options the environment sets
    /// ([`EngineOptions::from_env`]).
    pub fn load_model(&self, device: &Device) -> Result<Transformer> {
        self.load_model_with(device, &EngineOptions::from_env())
    }

    /// Loads every weight onto `device`. Shapes that contradict the metadata can make the
    /// model's constructors panic; that is reported as a broken file, not a crash.
    pub fn load_model_with(&self, device: &Device, opts: &EngineOptions) -> Result<Transformer> {
        aha_protocol::panic::catch_panic(|| self.load_model_unguarded(device, opts)).unwrap_or_else(|p| {
            Err(anyhow!(
                "{}: the model's weights do not fit together ({p}). The file is damaged or was written wrongly: download it again (`aha pull NAME`).",
                self.path.display()
            ))
        })
    }

    fn load_model_unguarded(&self, device: &Device, opts: &EngineOptions) -> Result<Transformer> {
        // A header opened without its data (`open_header`) must not reach the tensor reads.
        self.check_complete()?;
        let cfg = self.config()?;
        // Quantized matmuls take f32 activations on every backend.
        let dtype = DType::F32;
        let gemm = opts.prefill_gemm_min_rows();
        let f = File::open(&self.path)?;
        let mut r = BufReader::new(f);
        let p = &self.path;
        let mut t = |name: &str| {
            self.content
                .tensor(&mut r, name, device)
                .with_context(|| format!("{}: reading tensor {name}", p.display()))
        };
        let embed_q = t("token_embd.weight")?;
        let output = match self.content.tensor_infos.contains_key("output.weight") {
            true => Linear::from_qtensor(t("output.weight")?, dtype, gemm)?,
            // Tied embeddings: the output projection shares the embedding table.
            false => Linear::from_qtensor(t("token_embd.weight")?, dtype, gemm)?,
        };
        let embed = Embedding::Quant(Arc::new(embed_q));
        let norm = t("output_norm.weight")?
            .dequantize(device)?
            .to_dtype(dtype)?;
        let mut blocks = Vec::with_capacity(cfg.n_layer.min(1024));
        for i in 0..cfg.n_layer {
            let mut block = self.load_block(i, &mut t, device, dtype, gemm)?;
            block.fuse_dense(cfg.head_dim)?;
            blocks.push(block);
        }
        Ok(Transformer {
            cfg,
            embed,
            blocks,
            norm,
            output,
            device: device.clone(),
            dtype,
            rope_cache: Default::default(),
            numerics: opts.numerics,
            dump: Dump::new(opts.dump.clone()),
            fused: FusedSlot::new(device, opts)?,
        })
    }

    /// Block `i`'s weights, read with `t` (a tensor by name).
    fn load_block(
        &self,
        i: usize,
        t: &mut dyn FnMut(&str) -> Result<QTensor>,
        device: &Device,
        dtype: DType,
        gemm_min_rows: Option<usize>,
    ) -> Result<Block> {
        let pre = format!("blk.{i}");
        let p = &self.path;
        let mut lin = |n: &str| -> Result<Linear> {
            Ok(Linear::from_qtensor(
                t(&format!("{pre}.{n}.weight"))?,
                dtype,
                gemm_min_rows,
            )?)
        };
        let wq = lin("attn_q")?;
        let wk = lin("attn_k")?;
        let wv = lin("attn_v")?;
        let wo = lin("attn_output")?;
        let w_gate = lin("ffn_gate")?;
        let w_up = lin("ffn_up")?;
        let w_down = lin("ffn_down")?;
        let mut vecf = |n: &str| -> Result<Option<Tensor>> {
            let name = format!("{pre}.{n}");
            if self.content.tensor_infos.contains_key(&name) {
                Ok(Some(t(&name)?.dequantize(device)?.to_dtype(dtype)?))
            } else {
                Ok(None)
            }
        };
        let bq = vecf("attn_q.bias")?;
        let bk = vecf("attn_k.bias")?;
        let bv = vecf("attn_v.bias")?;
        let attn_norm = vecf("attn_norm.weight")?
            .ok_or_else(|| anyhow!("{}: missing {pre}.attn_norm.weight", p.display()))?;
        let ffn_norm = vecf("ffn_norm.weight")?
            .ok_or_else(|| anyhow!("{}: missing {pre}.ffn_norm.weight", p.display()))?;
        Ok(Block {
            attn_norm,
            wq,
            wk,
            wv,
            bq,
            bk,
            bv,
            wo,
            ffn_norm,
            w_gate,
            w_up,
            w_down,
            qkv: None,
            gate_up: None,
            q_prescaled: false,
        })
    }
}

/// The data alignment a GGUF file declares (`general.alignment`, 32 when absent), read as candle
/// reads it; a value candle would silently ignore, or one that is not a power of two (llama.cpp's
/// rule), is an error.
fn alignment(content: &Content) -> Result<u64> {
    let a = match content.metadata.get("general.alignment") {
        None => return Ok(32),
        Some(Value::U8(v)) => u64::from(*v),
        Some(Value::U16(v)) => u64::from(*v),
        Some(Value::U32(v)) => u64::from(*v),
        Some(Value::I8(v)) if *v >= 0 => *v as u64,
        Some(Value::I16(v)) if *v >= 0 => *v as u64,
        Some(Value::I32(v)) if *v >= 0 => *v as u64,
        Some(v) => bail!("general.alignment is {v:?}; it must be a positive 32-bit integer"),
    };
    if !a.is_power_of_two() {
        bail!("general.alignment is {a}; it must be a power of two");
    }
    Ok(a)
}

/// Checks every tensor of the table before any is read: its element count and byte size must
/// not overflow (they would wrap to a small number and pass the size check), and its data must
/// start on the file's alignment. Returns where the data ends and which tensor ends there, for
/// [`GgufFile::check_complete`] (a truncated download keeps a valid header; without that check
/// such a file loads and computes garbage).
fn check_tensor_table(content: &Content) -> Result<Option<(u64, String)>> {
    let align = alignment(content)?;
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut data_end: Option<(u64, String)> = None;
    for name in names {
        let info = &content.tensor_infos[name];
        let dims = info.shape.dims();
        let dt = info.ggml_dtype;
        let elems = dims
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
            .filter(|&n| usize::try_from(n).is_ok())
            .ok_or_else(|| {
                anyhow!(
                    "tensor {name} has shape {dims:?}, more elements than this machine can address"
                )
            })?;
        // A tensor without elements has no data for candle to point at (its empty buffer is
        // not aligned for the block type), and no model has one.
        if elems == 0 {
            bail!("tensor {name} has shape {dims:?}, with no elements; the file is corrupt");
        }
        let bs = dt.block_size() as u64;
        if !elems.is_multiple_of(bs) {
            bail!(
                "tensor {name} has {elems} elements, not a whole number of {dt:?} blocks of {bs}"
            );
        }
        let size = (elems / bs)
            .checked_mul(dt.type_size() as u64)
            .ok_or_else(|| {
                anyhow!("tensor {name} of shape {dims:?} ({dt:?}) would take more than 2^64 bytes")
            })?;
        if !info.offset.is_multiple_of(align) {
            bail!(
                "tensor {name}'s data offset {} is not a multiple of the file's alignment {align}; the file is corrupt or was written wrongly",
                info.offset
            );
        }
        let end = content
            .tensor_data_offset
            .checked_add(info.offset)
            .and_then(|s| s.checked_add(size));
        let Some(end) = end else {
            bail!(
                "tensor {name}'s data offset {} lies past any possible end of the file",
                info.offset
            )
        };
        if data_end.as_ref().is_none_or(|(e, _)| end > *e) {
            data_end = Some((end, name.clone()));
        }
    }
    Ok(data_end)
}

/// The activations' dtype for dense (safetensors) weights: f32 on CPU, bf16 on GPUs.
pub fn activation_dtype(device: &Device) -> DType {
    if device.is_cpu() {
        DType::F32
    } else {
        DType::BF16
    }
}

/// Loads a Hugging Face safetensors checkpoint directory (`config.json`, `*.safetensors`), with
/// the options the environment sets ([`EngineOptions::from_env`]).
pub fn load_safetensors_dir(dir: &Path, device: &Device) -> Result<Transformer> {
    load_safetensors_dir_with(dir, device, &EngineOptions::from_env())
}

/// Loads a Hugging Face safetensors checkpoint directory (`config.json`, `*.safetensors`).
pub fn load_safetensors_dir_with(
    dir: &Path,
    device: &Device,
    opts: &EngineOptions,
) -> Result<Transformer> {
    let cfg_path = dir.join("config.json");
    let cfg_text = std::fs::read_to_string(&cfg_path)
        .with_context(|| format!("cannot read {}", cfg_path.display()))?;
    let c: serde_json::Value = serde_json::from_str(&cfg_text)
        .with_context(|| format!("{} is not valid JSON", cfg_path.display()))?;
    let cfg = hf_config(&c, dir, &cfg_path)?;
    let dtype = activation_dtype(device);
    let mut tensors = read_safetensors(dir, device)?;
    let mut take = |name: &str| -> Result<Tensor> {
        match tensors.remove(name) {
            Some(t) => Ok(t.to_dtype(dtype)?),
            None => bail!("{}: checkpoint lacks tensor {name}", dir.display()),
        }
    };
    let embed_t = take("model.embed_tokens.weight")?;
    let mut blocks = Vec::with_capacity(cfg.n_layer.min(1024));
    for i in 0..cfg.n_layer {
        let mut block = hf_block(i, &mut take)?;
        block.fuse_dense(cfg.head_dim)?;
        blocks.push(block);
    }
    let norm = take("model.norm.weight")?;
    let output = match take("lm_head.weight") {
        Ok(t) => Linear::Dense(t),
        Err(_) => Linear::Dense(embed_t.clone()),
    };
    Ok(Transformer {
        cfg,
        embed: Embedding::Dense(embed_t),
        blocks,
        norm,
        output,
        device: device.clone(),
        dtype,
        rope_cache: Default::default(),
        numerics: opts.numerics,
        dump: Dump::new(opts.dump.clone()),
        fused: FusedSlot::new(device, opts)?,
    })
}

/// The hyper-parameters in a checkpoint's `config.json` (`c`, read from `cfg_path` in `dir`).
fn hf_config(c: &serde_json::Value, dir: &Path, cfg_path: &Path) -> Result<ModelConfig> {
    let arch_name = c["architectures"][0]
        .as_str()
        .or_else(|| c["model_type"].as_str())
        .unwrap_or("unknown");
    let arch = Arch::parse(arch_name)
        .or_else(|| c["model_type"].as_str().and_then(Arch::parse))
        .ok_or_else(|| {
            anyhow!(
                "{}: architecture `{arch_name}` is not supported; supported: {}",
                dir.display(),
                Arch::SUPPORTED.join(", ")
            )
        })?;
    let num = |k: &str| -> Result<usize> {
        c[k].as_u64()
            .map(|v| v as usize)
            .ok_or_else(|| anyhow!("{}: config.json lacks {k}", cfg_path.display()))
    };
    let n_head = num("num_attention_heads")?;
    let n_embd = num("hidden_size")?;
    Ok(ModelConfig {
        arch,
        n_layer: num("num_hidden_layers")?,
        n_head,
        n_kv_head: num("num_key_value_heads").unwrap_or(n_head),
        n_embd,
        head_dim: num("head_dim").unwrap_or(n_embd / n_head.max(1)),
        n_ctx: num("max_position_embeddings")?,
        vocab_size: num("vocab_size")?,
        rope_base: c["rope_theta"].as_f64().unwrap_or(10_000.0) as f32,
        rms_eps: c["rms_norm_eps"].as_f64().unwrap_or(1e-6),
        rope_interleaved: false,
    })
}

/// Every tensor of the `*.safetensors` files in `dir` (read in name order), on `device`.
fn read_safetensors(dir: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{}: no *.safetensors files", dir.display());
    }
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for f in &files {
        let m = candle_core::safetensors::load(f, device)
            .with_context(|| format!("cannot read {}", f.display()))?;
        tensors.extend(m);
    }
    Ok(tensors)
}

/// Layer `i` of a Hugging Face checkpoint, its tensors taken by name with `take`.
fn hf_block(i: usize, take: &mut dyn FnMut(&str) -> Result<Tensor>) -> Result<Block> {
    let p = format!("model.layers.{i}");
    let mut dense = |n: &str| -> Result<Linear> { Ok(Linear::Dense(take(&format!("{p}.{n}"))?)) };
    let wq = dense("self_attn.q_proj.weight")?;
    let wk = dense("self_attn.k_proj.weight")?;
    let wv = dense("self_attn.v_proj.weight")?;
    let wo = dense("self_attn.o_proj.weight")?;
    let w_gate = dense("mlp.gate_proj.weight")?;
    let w_up = dense("mlp.up_proj.weight")?;
    let w_down = dense("mlp.down_proj.weight")?;
    let attn_norm = take(&format!("{p}.input_layernorm.weight"))?;
    let ffn_norm = take(&format!("{p}.post_attention_layernorm.weight"))?;
    let bq = take(&format!("{p}.self_attn.q_proj.bias")).ok();
    let bk = take(&format!("{p}.self_attn.k_proj.bias")).ok();
    let bv = take(&format!("{p}.self_attn.v_proj.bias")).ok();
    Ok(Block {
        attn_norm,
        wq,
        wk,
        wv,
        bq,
        bk,
        bv,
        wo,
        ffn_norm,
        w_gate,
        w_up,
        w_down,
        qkv: None,
        gate_up: None,
        q_prescaled: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: &str) -> Result<ModelConfig> {
        let c: serde_json::Value = serde_json::from_str(json).unwrap();
        hf_config(&c, Path::new("ck"), Path::new("ck/config.json"))
    }

    #[test]
    fn hf_config_reads_sizes_and_fills_defaults() {
        let c = cfg(
            r#"{"architectures": ["LlamaForCausalLM"], "num_attention_heads": 8,
            "hidden_size": 512, "num_hidden_layers": 4, "max_position_embeddings": 2048,
            "vocab_size": 1000}"#,
        )
        .unwrap();
        assert_eq!(c.arch, Arch::Llama);
        assert_eq!((c.n_layer, c.n_head, c.n_kv_head), (4, 8, 8));
        assert_eq!(
            (c.n_embd, c.head_dim, c.n_ctx, c.vocab_size),
            (512, 64, 2048, 1000)
        );
        assert_eq!((c.rope_base, c.rms_eps), (10_000.0, 1e-6));
        assert!(!c.rope_interleaved);
        let c = cfg(
            r#"{"model_type": "qwen2", "num_attention_heads": 8, "hidden_size": 512,
            "num_key_value_heads": 2, "head_dim": 32, "num_hidden_layers": 4,
            "max_position_embeddings": 2048, "vocab_size": 1000, "rope_theta": 1e6}"#,
        )
        .unwrap();
        assert_eq!(c.arch, Arch::Qwen2);
        assert_eq!((c.n_kv_head, c.head_dim, c.rope_base), (2, 32, 1e6));
    }

    #[test]
    fn a_file_cut_after_its_header_opens_as_a_header_and_refuses_its_weights() {
        let dir = tempfile::tempdir().unwrap();
        let whole = dir.path().join("whole.gguf");
        crate::local::synth::SynthSpec::tiny()
            .write_gguf(&whole, candle_core::quantized::GgmlDType::Q8_0)
            .unwrap();
        let bytes = std::fs::read(&whole).unwrap();
        let g = GgufFile::open(&whole).unwrap();
        assert!(g.is_complete());
        let (end, _) = g.data_end.clone().unwrap();
        assert!(end <= bytes.len() as u64);
        // Cut inside the tensor data, well after the header.
        let cut = dir.path().join("cut.gguf");
        let keep = g.content.tensor_data_offset as usize + 1000;
        std::fs::write(&cut, &bytes[..keep]).unwrap();
        let want = format!("the file is truncated: expected {end} bytes, has {keep}");
        let e = GgufFile::open(&cut).err().unwrap().to_string();
        assert!(e.contains(&want) && e.contains("cut.gguf"), "{e}");
        // The header alone reads: metadata, tokenizer keys, tensor table, config.
        let h = GgufFile::open_header(&cut).unwrap();
        assert!(!h.is_complete());
        assert_eq!(h.arch_name(), "qwen2");
        assert!(h.get("tokenizer.ggml.tokens").is_some());
        assert_eq!(h.content.tensor_infos.len(), g.content.tensor_infos.len());
        assert_eq!(h.config().unwrap().n_layer, 2);
        // Its weights do not load, with the same clear error.
        let e = h.load_model(&Device::Cpu).err().unwrap().to_string();
        assert!(e.contains(&want), "{e}");
        // A cut inside the header itself is no header.
        std::fs::write(&cut, &bytes[..200]).unwrap();
        let e = GgufFile::open_header(&cut).err().unwrap().to_string();
        assert!(e.contains("not a readable GGUF"), "{e}");
    }

    #[test]
    fn hf_config_names_an_unsupported_architecture_or_a_missing_size() {
        let e = cfg(r#"{"architectures": ["FalconForCausalLM"]}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ck: architecture `FalconForCausalLM` is not supported; supported: qwen2, llama"
        );
        let e = cfg(r#"{"model_type": "llama", "num_attention_heads": 8}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ck/config.json: config.json lacks hidden_size"
        );
    }
}
