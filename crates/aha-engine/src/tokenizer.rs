//! Tokenizers built from GGUF metadata (byte-level BPE) or loaded from tokenizer.json.

use crate::local::load::GgufFile;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashSet;
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

/// Qwen2's pre-tokenizer split (single digits, letters with one leading non-letter).
pub const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's split (digit runs of up to three).
pub const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GGUF token types (llama.cpp's `llama_token_type`).
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;

/// A tokenizer plus what the engine needs to know about its special tokens.
pub struct TextTokenizer {
    pub inner: Tokenizer,
    /// Ids that end a turn.
    pub stop_ids: HashSet<u32>,
    pub bos: Option<(u32, String)>,
    pub eos: Option<(u32, String)>,
    /// Whether the model expects BOS at the start of a raw prompt.
    pub add_bos: bool,
    /// Name of the pre-tokenizer used.
    pub pre: String,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("pre", &self.pre)
            .field("vocab", &self.inner.get_vocab_size(true))
            .finish()
    }
}

fn strings(g: &GgufFile, key: &str) -> Result<Vec<String>> {
    let v = g
        .get(key)
        .ok_or_else(|| anyhow!("{}: GGUF metadata lacks {key}", g.path.display()))?
        .to_vec()
        .map_err(|e| anyhow!("{key}: {e}"))?;
    v.iter()
        .map(|x| x.to_string().cloned().map_err(|e| anyhow!("{key}: {e}")))
        .collect()
}

/// Whether a `tokenizer.ggml.pre` vocabulary's own tokenizer normalizes text to NFC first.
///
/// The DeepSeek-R1 distills' published `tokenizer.json` does (an `NFC` normalizer before the
/// Qwen2 split), and with it Hugging Face, so aha does too: composed and decomposed accents
/// give the same ids. llama.cpp never normalizes. The `qwen2` files keep the tokenizer
/// Hugging Face builds from the GGUF metadata, which has no normalizer.
fn normalizes_nfc(pre: &str) -> bool {
    pre == "deepseek-r1-qwen"
}

/// The pre-tokenizer for a `tokenizer.ggml.pre` name (llama.cpp's names). `deepseek-r1-qwen`
/// splits as `qwen2` does: the R1 distills' `tokenizer.json` carries Qwen2's split pattern, and
/// llama.cpp and Hugging Face's GGUF reader map the name to it.
fn pre_tokenizer(pre: &str) -> Result<(PreTokenizerWrapper, bool)> {
    let byte_level = |use_regex| ByteLevel::new(false, false, use_regex);
    let split = |pat: &str| -> Result<PreTokenizerWrapper> {
        Ok(Split::new(
            SplitPattern::Regex(pat.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| anyhow!("bad pre-tokenizer pattern: {e}"))?
        .into())
    };
    Ok(match pre {
        "qwen2" | "deepseek-r1-qwen" => (
            Sequence::new(vec![split(QWEN2_PATTERN)?, byte_level(false).into()]).into(),
            false,
        ),
        "llama-bpe" | "llama3" | "llama-v3" => (
            Sequence::new(vec![split(LLAMA3_PATTERN)?, byte_level(false).into()]).into(),
            true,
        ),
        _ => (byte_level(true).into(), false),
    })
}

/// `tokenizer.ggml.token_type`: one type per token (normal where absent).
fn token_types(g: &GgufFile, n: usize) -> Result<Vec<i32>> {
    Ok(match g.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(|e| anyhow!("token_type: {e}"))?
            .iter()
            .map(|x| x.to_i32().unwrap_or(1))
            .collect(),
        None => vec![1; n],
    })
}

/// GGUF merges (`"a b"`) as pairs; an entry without a space is skipped.
fn merge_pairs(merges: &[String]) -> Vec<(String, String)> {
    merges
        .iter()
        .filter_map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        })
        .collect()
}

/// A byte-level BPE tokenizer over `tokens` (id: index) and `merges`, with pre-tokenizer `pre`.
fn bpe_tokenizer(tokens: &[String], merges: &[String], pre: &str) -> Result<Tokenizer> {
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let (pt, ignore_merges) = pre_tokenizer(pre)?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merge_pairs(merges))
        .ignore_merges(ignore_merges)
        .build()
        .map_err(|e| anyhow!("cannot build BPE: {e}"))?;
    let mut tk = Tokenizer::new(bpe);
    if normalizes_nfc(pre) {
        tk.with_normalizer(Some(NFC));
    }
    tk.with_pre_tokenizer(Some(pt));
    tk.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(tk)
}

/// The tokens to add to the vocabulary by type: control tokens as special ones, user-defined
/// tokens as plain added ones (not normalised); `(special, added)`.
fn typed_tokens(tokens: &[String], types: &[i32]) -> (Vec<AddedToken>, Vec<AddedToken>) {
    let mut special = Vec::new();
    let mut added = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        match types.get(i).copied().unwrap_or(1) {
            TYPE_CONTROL => special.push(AddedToken::from(t.clone(), true)),
            TYPE_USER_DEFINED => added.push(AddedToken::from(t.clone(), false).normalized(false)),
            _ => {}
        }
    }
    (special, added)
}

impl TextTokenizer {
    /// Builds the tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let model = g.get_str("tokenizer.ggml.model").unwrap_or("gpt2");
        if model != "gpt2" {
            bail!(
                "{}: tokenizer model `{model}` is not supported (only byte-level BPE, `gpt2`)",
                g.path.display()
            );
        }
        let tokens = strings(g, "tokenizer.ggml.tokens")?;
        let merges = strings(g, "tokenizer.ggml.merges")?;
        let types = token_types(g, tokens.len())?;
        let pre = g
            .get_str("tokenizer.ggml.pre")
            .unwrap_or("default")
            .to_string();
        let mut tk = bpe_tokenizer(&tokens, &merges, &pre)?;
        let (special, added) = typed_tokens(&tokens, &types);
        tk.add_special_tokens(&special);
        tk.add_tokens(&added);
        let id_tok = |key: &str| -> Option<(u32, String)> {
            let id = g.get_usize(key)? as u32;
            Some((id, tokens.get(id as usize)?.clone()))
        };
        let bos = id_tok("tokenizer.ggml.bos_token_id");
        let eos = id_tok("tokenizer.ggml.eos_token_id");
        let add_bos = g
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(false);
        let mut stop_ids = HashSet::new();
        if let Some((id, _)) = &eos {
            stop_ids.insert(*id);
        }
        if let Some(id) = g.get_usize("tokenizer.ggml.eot_token_id") {
            stop_ids.insert(id as u32);
        }
        let mut me = Self {
            inner: tk,
            stop_ids,
            bos,
            eos,
            add_bos,
            pre,
        };
        me.add_known_stops();
        Ok(me)
    }

    /// Loads a `tokenizer.json` (safetensors checkpoints), with BOS/EOS from `tokenizer_config.json` if present.
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = Tokenizer::from_file(path)
            .map_err(|e| anyhow!("cannot load tokenizer {}: {e}", path.display()))?;
        let cfg: serde_json::Value = path
            .parent()
            .map(|d| d.join("tokenizer_config.json"))
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(serde_json::Value::Null);
        let tok_of = |k: &str| -> Option<(u32, String)> {
            let v = &cfg[k];
            let s = v.as_str().or_else(|| v["content"].as_str())?;
            Some((inner.token_to_id(s)?, s.to_string()))
        };
        let bos = tok_of("bos_token");
        let eos = tok_of("eos_token");
        let add_bos = cfg["add_bos_token"].as_bool().unwrap_or(false);
        let mut stop_ids = HashSet::new();
        if let Some((id, _)) = &eos {
            stop_ids.insert(*id);
        }
        let mut me = Self {
            inner,
            stop_ids,
            bos,
            eos,
            add_bos,
            pre: "tokenizer.json".into(),
        };
        me.add_known_stops();
        Ok(me)
    }

    fn add_known_stops(&mut self) {
        for s in [
            "<|im_end|>",
            "<|endoftext|>",
            "<|eot_id|>",
            "<|end_of_text|>",
            "<｜end▁of▁sentence｜>",
        ] {
            if let Some(id) = self.inner.token_to_id(s) {
                self.stop_ids.insert(id);
            }
        }
    }

    /// Token ids of `text`; special-token text in it maps to the special ids (as Hugging Face does).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode_fast(text, false)
            .map_err(|e| anyhow!("tokenizer: {e}"))?
            .get_ids()
            .to_vec())
    }

    /// Text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| anyhow!("tokenizer: {e}"))
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token string, if it is one token.
    pub fn token_id(&self, s: &str) -> Option<u32> {
        self.inner.token_to_id(s)
    }
}

/// Loads the tokenizer that belongs to a model path: GGUF metadata or the checkpoint's tokenizer.json.
pub fn for_model_path(path: &Path) -> Result<TextTokenizer> {
    if path.is_dir() {
        TextTokenizer::from_file(&path.join("tokenizer.json"))
    } else {
        // The tokenizer lives in the header: a file whose weights are cut off still has it.
        let g = GgufFile::open_header(path).context("loading tokenizer")?;
        TextTokenizer::from_gguf(&g)
    }
}

/// Turns a stream of token ids into text pieces, holding back bytes of an incomplete UTF-8 character.
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
}

impl StreamDecoder {
    /// Adds a token; returns the text it completes, if any.
    pub fn step(&mut self, tok: &TextTokenizer, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let before = tok.decode(&self.ids[self.prefix..self.read])?;
        let now = tok.decode(&self.ids[self.prefix..])?;
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') {
            let piece = now.get(before.len()..).unwrap_or_default().to_string();
            self.prefix = self.read;
            self.read = self.ids.len();
            Ok(Some(piece))
        } else {
            Ok(None)
        }
    }
}

impl StreamDecoder {
    /// The text each of `ids` would add if it came next instead of the next step's token, read
    /// with the bytes still held back (a byte token that completes a character shows as that
    /// character; an incomplete one as U+FFFD).
    pub fn peek(&self, tok: &TextTokenizer, ids: &[u32]) -> Result<Vec<String>> {
        let before = tok.decode(&self.ids[self.prefix..self.read])?;
        let mut buf = self.ids[self.prefix..].to_vec();
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            buf.push(id);
            let now = tok.decode(&buf)?;
            buf.pop();
            out.push(now.get(before.len()..).unwrap_or_default().to_string());
        }
        Ok(out)
    }
}

/// GPT-2's byte-to-unicode map: printable bytes stand for themselves, the rest move past U+0100.
pub fn byte_symbol(b: u8) -> char {
    let printable = |c: u8| {
        (b'!'..=b'~').contains(&c) || (0xA1..=0xAC).contains(&c) || (0xAE..=0xFF).contains(&c)
    };
    if printable(b) {
        return b as char;
    }
    let mut n = 0u32;
    for c in 0u8..b {
        if !printable(c) {
            n += 1;
        }
    }
    char::from_u32(256 + n).unwrap_or('?')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn merges_split_at_the_first_space_and_skip_entries_without_one() {
        let m = merge_pairs(&strs(&["a b", "ab c d", "nospace"]));
        assert_eq!(
            m,
            vec![
                ("a".to_string(), "b".to_string()),
                ("ab".to_string(), "c d".to_string())
            ]
        );
    }

    #[test]
    fn control_tokens_are_special_and_user_defined_ones_added() {
        let tokens = strs(&["a", "<s>", "<tool>", "b", "<x>"]);
        // The last token has no type: normal.
        let (special, added) = typed_tokens(&tokens, &[1, TYPE_CONTROL, TYPE_USER_DEFINED, 2]);
        let names = |v: &[AddedToken]| v.iter().map(|t| t.content.clone()).collect::<Vec<_>>();
        assert_eq!(names(&special), ["<s>"]);
        assert!(special[0].special);
        assert_eq!(names(&added), ["<tool>"]);
        assert!(!added[0].special && !added[0].normalized);
    }

    #[test]
    fn the_r1_tokenizer_normalizes_to_nfc_and_qwen2_does_not() {
        // "é" as one code point (C3 A9) and as "e" + U+0301 (65 CC 81), with a merge for each.
        let tokens: Vec<String> = (0u8..=255).map(|b| byte_symbol(b).to_string()).collect();
        let sym = |bytes: &[u8]| bytes.iter().map(|&b| byte_symbol(b)).collect::<String>();
        let mut tokens = tokens;
        tokens.push(sym(&[0xC3, 0xA9]));
        let merges = vec![format!("{} {}", sym(&[0xC3]), sym(&[0xA9]))];
        let composed = "caf\u{e9}";
        let decomposed = "cafe\u{301}";
        let r1 = bpe_tokenizer(&tokens, &merges, "deepseek-r1-qwen").unwrap();
        let ids = |t: &Tokenizer, s: &str| t.encode(s, false).unwrap().get_ids().to_vec();
        assert_eq!(
            ids(&r1, composed),
            [b'c' as u32, b'a' as u32, b'f' as u32, 256]
        );
        assert_eq!(ids(&r1, decomposed), ids(&r1, composed));
        let qwen2 = bpe_tokenizer(&tokens, &merges, "qwen2").unwrap();
        assert_eq!(ids(&qwen2, composed), ids(&r1, composed));
        assert_ne!(ids(&qwen2, decomposed), ids(&qwen2, composed));
    }

    #[test]
    fn a_bpe_tokenizer_encodes_with_its_merges() {
        let tokens = strs(&["a", "b", "ab"]);
        let tk = bpe_tokenizer(&tokens, &strs(&["a b"]), "default").unwrap();
        let ids = tk.encode("ab", false).unwrap().get_ids().to_vec();
        assert_eq!(ids, [2]);
    }
}
