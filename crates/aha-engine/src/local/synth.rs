//! Random-weight models with real shapes, written as GGUF or safetensors: for tests of the loading
//! and forward paths, and for benchmarks on machines that cannot download the real weights.

use super::load::GgufFile;
use anyhow::{bail, Context, Result};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::Path;

/// The shape of a synthetic qwen2 model.
#[derive(Debug, Clone)]
pub struct SynthSpec {
    pub n_layer: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub vocab: usize,
    pub n_ctx: usize,
    pub seed: u64,
    /// Every `tokenizer.*` key of a real model's GGUF header (vocabulary, merges, special
    /// tokens, chat template), written instead of the synthetic byte vocabulary
    /// ([`SynthSpec::with_tokenizer_from`]); `vocab` is then that vocabulary's size.
    pub tokenizer: Option<Vec<(String, gguf_file::Value)>>,
}

impl SynthSpec {
    /// A model small enough for unit tests.
    pub fn tiny() -> Self {
        Self {
            n_layer: 2,
            n_head: 4,
            n_kv_head: 2,
            n_embd: 64,
            n_ff: 128,
            vocab: 300,
            n_ctx: 256,
            seed: 7,
            tokenizer: None,
        }
    }

    /// DeepSeek-R1-Distill-Qwen-1.5B's shapes.
    pub fn r1_qwen_1_5b() -> Self {
        Self {
            n_layer: 28,
            n_head: 12,
            n_kv_head: 2,
            n_embd: 1536,
            n_ff: 8960,
            vocab: 151_936,
            n_ctx: 131_072,
            seed: 7,
            tokenizer: None,
        }
    }

    /// DeepSeek-R1-Distill-Qwen-7B's shapes.
    pub fn r1_qwen_7b() -> Self {
        Self {
            n_layer: 28,
            n_head: 28,
            n_kv_head: 4,
            n_embd: 3584,
            n_ff: 18_944,
            vocab: 152_064,
            n_ctx: 131_072,
            seed: 7,
            tokenizer: None,
        }
    }

    /// DeepSeek-R1-Distill-Qwen-7B's vocabulary on a body small enough to run in a test: two
    /// blocks of 256 (rows Q4_K can hold), grouped-query attention, a 4,096-token context.
    /// With [`SynthSpec::with_tokenizer_from`] the real header's tokenizer and template.
    pub fn r1_tiny() -> Self {
        Self {
            n_layer: 2,
            n_head: 4,
            n_kv_head: 2,
            n_embd: 256,
            n_ff: 512,
            vocab: 152_064,
            n_ctx: 4096,
            seed: 7,
            tokenizer: None,
        }
    }

    /// Gives the model the tokenizer and chat template of a real GGUF header `g` (every
    /// `tokenizer.*` key; the weights of `g` are not read, so a file cut after its header
    /// serves), and sizes the vocabulary to it.
    pub fn with_tokenizer_from(mut self, g: &GgufFile) -> Result<Self> {
        let n = match g.get("tokenizer.ggml.tokens") {
            Some(gguf_file::Value::Array(t)) if !t.is_empty() => t.len(),
            _ => bail!(
                "{}: GGUF metadata has no tokenizer.ggml.tokens to take",
                g.path.display()
            ),
        };
        let mut keys: Vec<(String, gguf_file::Value)> = g
            .content
            .metadata
            .iter()
            .filter(|(k, _)| k.starts_with("tokenizer."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        self.vocab = n;
        self.tokenizer = Some(keys);
        Ok(self)
    }

    fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// `(name, gguf name, shape)` of every weight, HF names first.
    fn tensors(&self) -> Vec<(String, String, Vec<usize>)> {
        let (e, f, kv) = (self.n_embd, self.n_ff, self.n_kv_head * self.head_dim());
        let mut v = vec![(
            "model.embed_tokens.weight".to_string(),
            "token_embd.weight".to_string(),
            vec![self.vocab, e],
        )];
        for i in 0..self.n_layer {
            let h = |n: &str| format!("model.layers.{i}.{n}");
            let g = |n: &str| format!("blk.{i}.{n}");
            v.push((h("input_layernorm.weight"), g("attn_norm.weight"), vec![e]));
            v.push((h("self_attn.q_proj.weight"), g("attn_q.weight"), vec![e, e]));
            v.push((h("self_attn.q_proj.bias"), g("attn_q.bias"), vec![e]));
            v.push((
                h("self_attn.k_proj.weight"),
                g("attn_k.weight"),
                vec![kv, e],
            ));
            v.push((h("self_attn.k_proj.bias"), g("attn_k.bias"), vec![kv]));
            v.push((
                h("self_attn.v_proj.weight"),
                g("attn_v.weight"),
                vec![kv, e],
            ));
            v.push((h("self_attn.v_proj.bias"), g("attn_v.bias"), vec![kv]));
            v.push((
                h("self_attn.o_proj.weight"),
                g("attn_output.weight"),
                vec![e, e],
            ));
            v.push((
                h("post_attention_layernorm.weight"),
                g("ffn_norm.weight"),
                vec![e],
            ));
            v.push((h("mlp.gate_proj.weight"), g("ffn_gate.weight"), vec![f, e]));
            v.push((h("mlp.up_proj.weight"), g("ffn_up.weight"), vec![f, e]));
            v.push((h("mlp.down_proj.weight"), g("ffn_down.weight"), vec![e, f]));
        }
        v.push((
            "model.norm.weight".into(),
            "output_norm.weight".into(),
            vec![e],
        ));
        v.push((
            "lm_head.weight".into(),
            "output.weight".into(),
            vec![self.vocab, e],
        ));
        v
    }

    /// Deterministic random values for one tensor (norm weights near 1, the rest small). Rows are
    /// drawn in parallel blocks, each from its own generator seeded by (seed, tensor, block), so a
    /// 7B-shaped model is written in seconds on a many-core machine and the values do not depend on
    /// the number of threads.
    fn values(&self, index: usize, name: &str, shape: &[usize]) -> Vec<f32> {
        use rayon::prelude::*;
        const BLOCK: usize = 1 << 16;
        let n: usize = shape.iter().product();
        let is_norm = name.contains("norm");
        let fan_in = *shape.last().unwrap_or(&1) as f32;
        let scale = if shape.len() == 2 {
            1.0 / fan_in.sqrt()
        } else {
            0.02
        };
        let mut out = vec![0f32; n];
        out.par_chunks_mut(BLOCK)
            .enumerate()
            .for_each(|(b, chunk)| {
                let s = self
                    .seed
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    .wrapping_add((index as u64) << 32)
                    .wrapping_add(b as u64);
                let mut rng = StdRng::seed_from_u64(s);
                for v in chunk {
                    let u: f32 = rng.gen::<f32>() * 2.0 - 1.0;
                    *v = if is_norm {
                        1.0 + 0.1 * u
                    } else {
                        u * scale * 1.7
                    };
                }
            });
        out
    }

    /// Quantizes a `(rows, cols)` matrix in parallel blocks of rows (candle's quantizers are
    /// single-threaded), concatenating the blocks' bytes: block-quantized rows are independent.
    fn quantize(vals: Vec<f32>, shape: &[usize], dtype: GgmlDType) -> Result<QTensor> {
        use rayon::prelude::*;
        if shape.len() != 2 || matches!(dtype, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16) {
            let t = Tensor::from_vec(vals, shape, &Device::Cpu)?;
            return Ok(QTensor::quantize(&t, dtype)?);
        }
        let (rows, cols) = (shape[0], shape[1]);
        let per = (rows / (4 * rayon::current_num_threads()).max(1)).clamp(1, 1024);
        let parts: Vec<Vec<u8>> = vals
            .par_chunks(per * cols)
            .map(|c| -> Result<Vec<u8>> {
                let t = Tensor::from_slice(c, (c.len() / cols, cols), &Device::Cpu)?;
                Ok(QTensor::quantize(&t, dtype)?.data()?.into_owned())
            })
            .collect::<Result<_>>()?;
        let bytes = parts.concat();
        let storage = candle_core::quantized::QStorage::from_data(
            std::borrow::Cow::Owned(bytes),
            &Device::Cpu,
            dtype,
        )?;
        Ok(QTensor::new(storage, shape)?)
    }

    fn metadata(&self) -> Vec<(String, gguf_file::Value)> {
        use gguf_file::Value as V;
        let u = |x: usize| V::U32(x as u32);
        let mut md = vec![
            (
                "general.architecture".to_string(),
                V::String("qwen2".into()),
            ),
            (
                "general.name".to_string(),
                V::String("aha synthetic qwen2".into()),
            ),
            ("qwen2.block_count".to_string(), u(self.n_layer)),
            ("qwen2.context_length".to_string(), u(self.n_ctx)),
            ("qwen2.embedding_length".to_string(), u(self.n_embd)),
            ("qwen2.feed_forward_length".to_string(), u(self.n_ff)),
            ("qwen2.attention.head_count".to_string(), u(self.n_head)),
            (
                "qwen2.attention.head_count_kv".to_string(),
                u(self.n_kv_head),
            ),
            ("qwen2.rope.freq_base".to_string(), V::F32(1_000_000.0)),
            (
                "qwen2.attention.layer_norm_rms_epsilon".to_string(),
                V::F32(1e-6),
            ),
        ];
        if let Some(keys) = &self.tokenizer {
            md.extend(keys.iter().cloned());
            return md;
        }
        // A byte-level vocabulary: the 256 byte symbols, then filler tokens, then the specials.
        let mut tokens: Vec<String> = (0u8..=255)
            .map(|b| crate::tokenizer::byte_symbol(b).to_string())
            .collect();
        let specials = [
            "<|endoftext|>",
            "<|im_start|>",
            "<|im_end|>",
            "<think>",
            "</think>",
        ];
        while tokens.len() + specials.len() < self.vocab {
            tokens.push(format!("[FILL{}]", tokens.len()));
        }
        let first_special = tokens.len();
        tokens.extend(specials.iter().map(|s| s.to_string()));
        tokens.truncate(self.vocab);
        let types: Vec<V> = (0..tokens.len())
            .map(|i| V::I32(if i >= first_special { 3 } else { 1 }))
            .collect();
        md.push(("tokenizer.ggml.model".into(), V::String("gpt2".into())));
        md.push(("tokenizer.ggml.pre".into(), V::String("qwen2".into())));
        md.push((
            "tokenizer.ggml.tokens".into(),
            V::Array(tokens.into_iter().map(V::String).collect()),
        ));
        md.push(("tokenizer.ggml.token_type".into(), V::Array(types)));
        md.push(("tokenizer.ggml.merges".into(), V::Array(vec![])));
        md.push(("tokenizer.ggml.eos_token_id".into(), u(first_special + 2)));
        md
    }

    /// Writes a GGUF with matrices in `dtype` (1-D tensors stay F32).
    pub fn write_gguf(&self, path: &Path, dtype: GgmlDType) -> Result<()> {
        let mut qs: Vec<(String, QTensor)> = Vec::new();
        for (i, (hf, gg, shape)) in self.tensors().into_iter().enumerate() {
            let vals = self.values(i, &hf, &shape);
            let dt = if shape.len() == 2 {
                dtype
            } else {
                GgmlDType::F32
            };
            qs.push((gg, Self::quantize(vals, &shape, dt)?));
        }
        let md = self.metadata();
        let md_refs: Vec<(&str, &gguf_file::Value)> =
            md.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let t_refs: Vec<(&str, &QTensor)> = qs.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let tmp = path.with_extension("writing");
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        gguf_file::write(&mut f, &md_refs, &t_refs)?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// Writes a Hugging Face style checkpoint folder (config.json + model.safetensors, f32),
    /// with the same weights as [`Self::write_gguf`] for the same seed.
    pub fn write_safetensors(&self, dir: &Path) -> Result<()> {
        self.write_safetensors_as(dir, candle_core::DType::F32)
    }

    /// The same in another dtype (bf16 or f16, as published checkpoints are).
    pub fn write_safetensors_as(&self, dir: &Path, dtype: candle_core::DType) -> Result<()> {
        if self.tokenizer.is_some() {
            bail!("a tokenizer taken from a GGUF header goes into GGUF output only");
        }
        std::fs::create_dir_all(dir)?;
        let mut map: HashMap<String, Tensor> = HashMap::new();
        for (i, (hf, _, shape)) in self.tensors().into_iter().enumerate() {
            let vals = self.values(i, &hf, &shape);
            map.insert(
                hf,
                Tensor::from_vec(vals, shape.as_slice(), &Device::Cpu)?.to_dtype(dtype)?,
            );
        }
        candle_core::safetensors::save(&map, dir.join("model.safetensors"))?;
        std::fs::write(dir.join("tokenizer.json"), self.tokenizer_json()?)?;
        let cfg = serde_json::json!({
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "hidden_size": self.n_embd,
            "intermediate_size": self.n_ff,
            "num_attention_heads": self.n_head,
            "num_key_value_heads": self.n_kv_head,
            "num_hidden_layers": self.n_layer,
            "max_position_embeddings": self.n_ctx,
            "vocab_size": self.vocab,
            "rope_theta": 1_000_000.0,
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": false,
            "torch_dtype": format!("{dtype:?}").to_lowercase()
        });
        std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&cfg)?)?;
        Ok(())
    }
}

impl SynthSpec {
    /// A byte-level tokenizer.json matching the GGUF metadata's vocabulary (no merges).
    fn tokenizer_json(&self) -> Result<String> {
        let mut vocab = serde_json::Map::new();
        let mut added = Vec::new();
        let md = self.metadata();
        let toks = md
            .iter()
            .find(|(k, _)| k == "tokenizer.ggml.tokens")
            .map(|(_, v)| v);
        if let Some(gguf_file::Value::Array(toks)) = toks {
            for (id, t) in toks.iter().enumerate() {
                if let gguf_file::Value::String(s) = t {
                    vocab.insert(s.clone(), serde_json::json!(id));
                    if s.starts_with("<|") || s.contains("think>") {
                        added.push(serde_json::json!({"id": id, "content": s, "single_word": false,
                            "lstrip": false, "rstrip": false, "normalized": false, "special": true}));
                    }
                }
            }
        }
        let j = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": added, "normalizer": null,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true},
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": []}
        });
        Ok(serde_json::to_string(&j)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::TextTokenizer;

    #[test]
    fn a_synth_model_carries_the_tokenizer_and_template_of_a_header() {
        let dir = tempfile::tempdir().unwrap();
        // A source whose weights are cut off, with a vocabulary and template of its own.
        let mut src = SynthSpec::tiny();
        src.vocab = 320;
        let mut md = src.metadata();
        md.retain(|(k, _)| k.starts_with("tokenizer."));
        md.push((
            "tokenizer.chat_template".into(),
            gguf_file::Value::String("{{ bos_token }}{% for m in messages %}<｜User｜>{{ m.content }}{% endfor %}<｜Assistant｜>".into()),
        ));
        src.tokenizer = Some(md);
        let full = dir.path().join("src.gguf");
        src.write_gguf(&full, GgmlDType::Q8_0).unwrap();
        let bytes = std::fs::read(&full).unwrap();
        let header = dir.path().join("header.gguf");
        std::fs::write(&header, &bytes[..bytes.len() / 2]).unwrap();
        let h = GgufFile::open_header(&header).unwrap();
        assert!(!h.is_complete());

        let spec = SynthSpec::tiny().with_tokenizer_from(&h).unwrap();
        assert_eq!(spec.vocab, 320);
        let out = dir.path().join("synth.gguf");
        spec.write_gguf(&out, GgmlDType::Q8_0).unwrap();
        let g = GgufFile::open(&out).unwrap();
        assert_eq!(
            g.content.tensor_infos["token_embd.weight"].shape.dims(),
            &[320, 64]
        );
        assert_eq!(
            g.get_str("tokenizer.chat_template"),
            h.get_str("tokenizer.chat_template")
        );
        let a = TextTokenizer::from_gguf(&h).unwrap();
        let b = TextTokenizer::from_gguf(&g).unwrap();
        assert_eq!(a.vocab_size(), b.vocab_size());
        let text = "<|im_start|>user\nhé<think>";
        assert_eq!(a.encode(text).unwrap(), b.encode(text).unwrap());
        // The model runs with it.
        let m = g.load_model(&Device::Cpu).unwrap();
        let mut cache = m.new_cache();
        let logits = m
            .forward(&b.encode(text).unwrap(), &mut cache, false)
            .unwrap();
        assert_eq!(logits.dims().last(), Some(&320));
        // Safetensors output has no place for it.
        assert!(spec.write_safetensors(&dir.path().join("st")).is_err());
    }
}
