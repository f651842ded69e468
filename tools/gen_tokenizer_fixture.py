#!/usr/bin/env python3
"""Generate reference tokenizer fixtures for aha's GGUF tokenizer tests.

The reference is the Hugging Face `tokenizers` library, configured exactly the
way `transformers.AutoTokenizer.from_pretrained(dir, gguf_file=...)` configures
it, but built without torch: the GGUF metadata is read with the `gguf` package
(transformers' own GGUF reader imports torch at module level) and handed to
`transformers.integrations.gguf.convert_gguf_tokenizer`, then wrapped in the
same tokenizer class AutoTokenizer picks (Qwen2Tokenizer for qwen2, the generic
TokenizersBackend otherwise).

Setup (no torch needed):
    python3 -m venv /tmp/tokvenv
    /tmp/tokvenv/bin/pip install gguf transformers tokenizers sentencepiece protobuf
Run:
    /tmp/tokvenv/bin/python tools/gen_tokenizer_fixture.py [--summary] [GGUF ...]

Writes tests/fixtures/tokenizer_<name>.json for each GGUF, name taken from
tokenizer.ggml.pre ("qwen2" -> qwen2, "smollm" -> smollm), in the format
    {"gguf_sha256_prefix": "<16 hex>", "pre": "<tokenizer.ggml.pre>",
     "cases": [{"text": "...", "ids": [...]}, ...]}
All cases are encoded with add_special_tokens=False (no BOS/EOS added), but
special/added tokens that appear literally in the text are matched as HF does.

Versions used to produce the committed fixtures: transformers 5.24.0,
tokenizers 0.23.3, gguf 0.19.0.
"""

import argparse
import hashlib
import json
import os
import sys
import unicodedata

DEFAULT_GGUFS = ["/root/dev-models/qwen.gguf", "/root/dev-models/smol.gguf"]
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE_DIR = os.path.join(REPO_ROOT, "tests", "fixtures")

# tokenizer.ggml.pre -> fixture name
FIXTURE_NAMES = {"qwen2": "qwen2", "smollm": "smollm"}


# --------------------------------------------------------------------------
# Corpus (hand-written, deterministic; order matters only for readability).
# --------------------------------------------------------------------------

_PARA_EN = (
    "The quick brown fox jumps over the lazy dog, but the dog doesn't care; it's been "
    "sleeping since 9:30 a.m. and won't wake up until dinner. Meanwhile, the fox has "
    "written 3 novels, 12 short stories and over 1,000 poems -- most of them about "
    "chickens. \"Why chickens?\" asked the reporter. \"Because they're delicious,\" "
    "replied the fox, adjusting his monocle. The interview lasted 45 minutes and was "
    "broadcast on 2026-11-28 at 19:00 UTC to an audience of roughly 2.5 million viewers."
)
_PARA_KO = (
    "오늘 서울의 날씨는 맑고 기온은 영하 3도에서 영상 8도 사이로 예상됩니다. 기상청은 "
    "내일부터 찬 바람이 강하게 불면서 체감 온도가 크게 떨어질 것이라고 밝혔습니다. "
    "한편 국회에서는 개인정보 보호법 개정안이 본회의를 통과했으며, 대통령은 이를 "
    "공포할 예정이라고 대변인이 전했습니다. 개발자들은 새 법안이 데이터 처리 방식에 "
    "어떤 영향을 줄지 주목하고 있습니다. 러스트로 작성된 프로그램은 메모리 안전성을 "
    "컴파일 시점에 보장하기 때문에 이런 규제 환경에서도 유리하다는 평가를 받습니다."
)
_PARA_ZH = (
    "人工智能是计算机科学的一个分支，它企图了解智能的实质，并生产出一种新的能以人类智能相似的"
    "方式做出反应的智能机器。该领域的研究包括机器人、语言识别、图像识别、自然语言处理和专家系统等。"
    "自从人工智能诞生以来，理论和技术日益成熟，应用领域也不断扩大。可以设想，未来人工智能带来的"
    "科技产品，将会是人类智慧的容器。2024年，全球人工智能市场规模超过5000亿美元。"
)
_PARA_CODE = (
    "use std::collections::HashMap;\n\n"
    "/// Count words in a string.\n"
    "pub fn word_count(text: &str) -> HashMap<String, usize> {\n"
    "    let mut counts = HashMap::new();\n"
    "    for word in text.split_whitespace() {\n"
    "        let w = word.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase();\n"
    "        if w.is_empty() { continue; }\n"
    "        *counts.entry(w).or_insert(0) += 1;\n"
    "    }\n"
    "    counts\n"
    "}\n\n"
    "#[cfg(test)]\nmod tests {\n    use super::*;\n\n    #[test]\n    fn counts() {\n"
    "        assert_eq!(word_count(\"a b a\")[\"a\"], 2);\n    }\n}\n"
)
_PARA_MIXED = (
    "Release notes v0.3.1 (2026-11-28): 한국어 토크나이저 지원 추가 — Korean tokenizer support; "
    "中文分词修复; 日本語のテキストも正しく処理されます。 Fixed a bug where \"naïve\" café "
    "names with emoji 🎉🚀 were split incorrectly.\tPerformance: 1,234 tok/s → 5,678 tok/s (+360%).\n"
    "Thanks to @kim_dev, @李雷 and @たなか for the reports! See https://example.com/issues?id=42&sort=desc#top"
)

CORPUS = [
    # --- trivial / whitespace ---------------------------------------------
    "",
    " ",
    "  ",
    "   ",
    "\t",
    "\n",
    "\n\n",
    "\n\n\n",
    " \n ",
    "\r\n",
    "\r\n\r\n",
    "a",
    " a",
    "a ",
    "a  ",
    "hello   world",
    "hello \t world",
    "trailing spaces   ",
    "   leading spaces",
    "tab\tseparated\tvalues",
    "\t\tdouble tab indent",
    "line one\nline two\n",
    "line one\r\nline two\r\n",
    "para one\n\npara two\n\n\npara three",
    "  \n  \n  ",
    "word\n   indented after newline",
    "x" + " " * 16 + "y",
    "\u00a0non-breaking\u00a0space",
    "ideographic\u3000space",
    "zero\u200bwidth",
    "\ufeffBOM at start",
    "vertical\x0btab and form\x0cfeed",
    "line\u2028separator",
    "next\u0085line",
    "nul\x00byte",
    "bell\x07 and escape\x1b[0m",
    "file\x1cgroup\x1dsep\x1funit",
    "a\u00a0\u00a0b \u3000\u3000c\u2028\u2028d",
    # --- English words and sentences --------------------------------------
    "Hello",
    "hello",
    "HELLO",
    "Hello, world!",
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG.",
    "internationalization",
    "antidisestablishmentarianism",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "I like tokenizers. They're fun!",
    "What is the capital of France?",
    "Please summarize the following document in three bullet points.",
    "CamelCaseIdentifier and snake_case_identifier and kebab-case-identifier",
    "iPhone, eBay, McDonald's, O'Reilly",
    "Mr. Smith went to Washington D.C. on Jan. 5th.",
    "e.g. i.e. etc. vs. a.k.a.",
    # --- contractions ---------------------------------------------------------
    "it's",
    "don't",
    "they're",
    "we've",
    "I'm",
    "you'll",
    "he'd",
    "IT'S",
    "DON'T",
    "THEY'RE",
    "WE'VE",
    "I'M",
    "YOU'LL",
    "HE'D",
    "It'S a DoN'T",
    "John's car isn't what we'd've expected, y'all.",
    "'s 't 're 've 'm 'll 'd",
    "'S 'T 'RE 'VE 'M 'LL 'D",
    "rock 'n' roll",
    "'quoted' and \"double quoted\"",
    "it\u2019s a curly apostrophe",
    "'",
    "''",
    "'s",
    # --- Korean ---------------------------------------------------------------
    "안녕하세요",
    "안녕하세요, 세계!",
    "오늘 날씨가 정말 좋네요.",
    "내일은 비가 올 것 같습니다.",
    "서울에서 부산까지 KTX로 2시간 30분 걸립니다.",
    "대통령은 오늘 국무회의를 주재했다.",
    "헌법 제1조 ①항: 대한민국은 민주공화국이다.",
    "이 법은 공포한 날부터 시행한다.",
    "러스트는 메모리 안전성을 보장하는 프로그래밍 언어입니다.",
    "함수를 호출하기 전에 변수를 초기화해야 합니다.",
    "저는 한국어와 English를 섞어서 씁니다.",
    "ㅋㅋㅋㅋ ㅎㅎ ㅠㅠ",
    "한글",
    "가나다라마바사아자차카타파하",
    "서울에서",
    "대통령은",
    "프로그래밍을",
    "김철수 씨는 2026년 11월 28일에 회의에 참석했습니다.",
    # --- Chinese ----------------------------------------------------------------
    "你好，世界！",
    "今天天气很好。",
    "我喜欢用Rust写程序。",
    "中华人民共和国成立于1949年。",
    "机器学习和深度学习有什么区别？",
    "繁體中文：臺灣的天氣很熱。",
    "「引号」和《书名号》以及……省略号",
    # --- Japanese -------------------------------------------------------------
    "こんにちは",
    "こんにちは、世界！",
    "カタカナとひらがなと漢字",
    "東京は日本の首都です。",
    "今日はいい天気ですね。",
    "ﾊﾝｶｸｶﾀｶﾅ",
    "プログラミング言語のRustは速い。",
    # --- other scripts ----------------------------------------------------------
    "Привет, мир! Как дела?",
    "Ελληνικά γράμματα",
    "مرحبا بالعالم",
    "שלום עולם",
    "नमस्ते दुनिया",
    "สวัสดีชาวโลก",
    "Tiếng Việt có dấu",
    # --- accented Latin / normalization ----------------------------------------
    "café",
    "naïve",
    "Ångström",
    "résumé",
    "Zürich",
    "São Paulo",
    "façade",
    "cafe\u0301",
    "e\u0301",
    "A\u030angstro\u0308m",
    "\u1100\u1161\u11a8",
    "ﬁ ligature and ｆｕｌｌｗｉｄｔｈ",
    "Straße",
    "ÀÉÎÕÜ àéîõü",
    # --- digits / numbers -------------------------------------------------------
    "0",
    "1",
    "12",
    "123",
    "1234",
    "12345",
    "1234567890",
    "3.14159",
    "-42",
    "+1.5e-10",
    "1,000,000",
    "1.000.000,00",
    "$19.99",
    "€1,234.56",
    "50%",
    "2026-11-28",
    "28/11/2026",
    "12:34:56",
    "+1 (555) 123-4567",
    "010-1234-5678",
    "+82 2-123-4567",
    "0x1F 0b1010 0o777",
    "v1.2.3-rc.1",
    "2^10 = 1024",
    "x1 y22 z333 w4444",
    "abc123def",
    "123abc",
    " 1 2 3",
    "１２３ fullwidth digits",
    "٠١٢٣ Arabic-Indic digits",
    "½ ² ③ Ⅷ",
    # --- punctuation runs -------------------------------------------------------
    "!!!",
    "???",
    "...",
    "…",
    "?!?!",
    "---",
    "***bold***",
    "==>",
    "<=>",
    "!=",
    "a, b; c: d.",
    "(parentheses) [brackets] {braces} <angles>",
    "@#$%^&*()_+-=[]{}|;':\",./<>?`~",
    "## Heading\n\n- item one\n- item two\n",
    "> quoted line\n>> nested",
    "| a | b |\n|---|---|\n| 1 | 2 |",
    "— em dash – en dash",
    "«guillemets» „German quotes“",
    # --- URLs / paths / emails -------------------------------------------------
    "https://www.example.com/path/to/page?query=1&lang=en#section",
    "http://localhost:8080/api/v1/tokens",
    "ftp://files.example.org/pub/file.tar.gz",
    "user.name+tag@example.co.kr",
    "/usr/local/bin/aha --model /root/dev-models/qwen.gguf",
    "C:\\Users\\Admin\\Documents\\file.txt",
    "git@github.com:owner/repo.git",
    # --- JSON / markup ------------------------------------------------------------
    '{"name": "aha", "version": "0.1.0", "tags": ["llm", "rust"]}',
    '{\n  "key": "value",\n  "n": 42,\n  "ok": true,\n  "x": null\n}',
    '[1, 2, 3, {"a": [4, 5]}]',
    "<html><body><p class=\"x\">Hello</p></body></html>",
    "<div>\n  <span>text</span>\n</div>",
    "key: value\nlist:\n  - a\n  - b\n",
    "[section]\nname = \"aha\"\nthreads = 4\n",
    "SELECT id, name FROM users WHERE age > 30 ORDER BY name;",
    "$$E = mc^2$$ and \\frac{a}{b}",
    # --- code: Python -------------------------------------------------------------
    "def add(a, b):\n    return a + b\n",
    "import os\nimport sys\n\n\ndef main():\n    print(\"hi\")\n\n\nif __name__ == \"__main__\":\n    main()\n",
    "class Foo:\n    def __init__(self):\n        self.x = 1\n",
    "for i in range(10):\n\tif i % 2 == 0:\n\t\tprint(i)\n",
    "x = [i ** 2 for i in range(100) if i % 3]",
    "    # indented comment",
    "        deeply_indented()",
    "print(f\"{name!r}: {value:>10.2f}\")",
    "lambda x: x**2  # square",
    # --- code: Rust ----------------------------------------------------------------
    "fn main() {\n    println!(\"Hello, world!\");\n}\n",
    "let v: Vec<u32> = (0..10).map(|x| x * 2).collect();",
    "impl<T: Clone + Send + 'static> Foo<T> for Bar<'a> {}",
    "#[derive(Debug, Clone, PartialEq)]\npub struct Point { x: f32, y: f32 }",
    "match x {\n    Some(v) => v,\n    None => return Err(\"none\".into()),\n}",
    "unsafe { *ptr.add(1) = 0u8; }",
    "std::mem::size_of::<usize>()",
    # --- code: JS / C / shell -------------------------------------------------------
    "const f = async (x) => { await fetch(`/api/${x}`); };",
    "function hello() {\r\n  return 'world';\r\n}\r\n",
    "if (a === b && c !== d || !e) { x++; y--; }",
    "#include <stdio.h>\n\nint main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
    "int *p = &a[0]; p->next = NULL;",
    "#!/bin/bash\nset -euo pipefail\nfor f in *.txt; do\n  echo \"$f\"\ndone\n",
    "ls -la | grep \".rs\" | wc -l > /dev/null 2>&1",
    "cargo build --release && ./target/release/aha",
    "export PATH=\"$HOME/.cargo/bin:$PATH\"",
    # --- emoji ----------------------------------------------------------------------
    "😀",
    "Hello 👋 world 🌍",
    "🎉🎉🎉",
    "👍🏽",
    "👨‍👩‍👧‍👦",
    "🏳️‍🌈",
    "🇰🇷🇺🇸🇯🇵",
    "❤️",
    "I ❤️ Rust 🦀!",
    "✅ done ❌ failed ⚠️ warning",
    "한국어😀中文😀English",
    # --- special-token text -------------------------------------------------------
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>",
    "text<|endoftext|>more text",
    " <|im_start|> spaced ",
    "<|im_start|><|im_end|><|endoftext|>",
    "<|im_start",
    "im_start|>",
    "<|IM_START|>",
    "<think>",
    "<think>\nLet me reason.\n</think>\n\nAnswer: 42",
    "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
    "<|fim_prefix|>def f():<|fim_suffix|>\n<|fim_middle|>",
    "<|repo_name|>aha<|file_sep|>src/main.rs",
    "<|vision_start|><|image_pad|><|vision_end|>",
    "<repo_name>aha<file_sep>README.md",
    "<jupyter_code>print(1)<jupyter_output>1",
    "<filename>main.py<gh_stars>100",
    "<s> </s> <unk> <pad>",
    "[PAD151665] [PAD151935]",
    "<|object_ref_start|>x<|object_ref_end|><|box_start|>",
    "<|endoftext|><|endoftext|>",
    "[INST] hello [/INST]",
    # --- mixed ------------------------------------------------------------------------
    "Rust는 빠르고 安全하며 楽しい!",
    "AI(인공지능) 기술이 2030년까지 50% 성장할 것.",
    "변수 `count`를 1 증가시킨다: count += 1;",
    "价格: ¥1,280 (约 $180)",
    "ÅngströmはKoreanで옹스트롬です",
    "mixed\tscripts:\t한국어\t中文\tEnglish",
    "a1b2c3가4나5",
    "user@example.com에게 메일을 보냈습니다.",
    "naïve café résumé — Ångström 한국 中国 日本",
    # --- long paragraphs ---------------------------------------------------------
    _PARA_EN,
    _PARA_KO,
    _PARA_ZH,
    _PARA_CODE,
    _PARA_MIXED,
    "a" * 300,
    "ab " * 100,
    "한" * 120,
    "=" * 80,
    " " * 64 + "x",
    "\n" * 20,
    "1234567890" * 10,
]


# --------------------------------------------------------------------------
# Reference tokenizer.
# --------------------------------------------------------------------------


def read_gguf_tokenizer(path):
    """Equivalent of transformers.integrations.gguf.get_gguf_tokenizer, using the gguf package.

    Returns (architecture, tokenizer_dict, tokenizer_config) with the same keys and values
    transformers builds: GGUF key `tokenizer.<k>` renamed via GGUF_TOKENIZER_MAPPING.
    """
    from gguf import GGUFReader
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (
        _SPECIAL_TOKENS,
        GGUF_TOKENIZER_MAPPING,
    )

    reader = GGUFReader(path)
    metadata = {}
    for key, field in reader.fields.items():
        if key == "general.architecture" or key.startswith("tokenizer."):
            value = field.contents()
            metadata[key] = value
    architecture = metadata["general.architecture"]
    grouped = {
        group: {name: metadata[f"tokenizer.{key}"] for key, name in renames.items() if f"tokenizer.{key}" in metadata}
        for group, renames in GGUF_TOKENIZER_MAPPING.items()
    }
    tokenizer, tokenizer_config = grouped["tokenizer"], grouped["tokenizer_config"]
    tokenizer_type = tokenizer.get("tokenizer_type")
    if tokenizer_type == "llama":
        tokenizer_config.setdefault("add_bos_token", True)
    elif tokenizer_type == "gemma4":
        tokenizer_config["add_bos_token"] = False
    for name, key in _SPECIAL_TOKENS.items():
        token_id = metadata.get(f"tokenizer.ggml.{key}")
        tokenizer_config[name] = tokenizer["tokens"][token_id] if token_id is not None else None
    return architecture, tokenizer, tokenizer_config


def build_reference(path):
    """(wrapper tokenizer, backend tokenizers.Tokenizer, pre) as AutoTokenizer(gguf_file=...) gives."""
    from transformers.integrations.gguf import convert_gguf_tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    architecture, tokenizer_dict, tokenizer_config = read_gguf_tokenizer(path)
    backend, extra = convert_gguf_tokenizer(architecture, tokenizer_dict)
    kwargs = dict(tokenizer_config)
    kwargs.update(extra)
    # AutoTokenizer picks Qwen2Tokenizer for model_type qwen2 and the generic backend for the
    # byte-level llama file (SmolLM2). Both keep the GGUF-built backend as is.
    cls = Qwen2Tokenizer if architecture == "qwen2" else TokenizersBackend
    wrapper = cls(tokenizer_object=backend, **kwargs)
    return wrapper, wrapper._tokenizer, tokenizer_dict.get("pre_tokenizer_type")


def sha256_prefix(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _escape_invisible(s):
    """json.dumps(ensure_ascii=False) output, with invisible/combining chars written as \\uXXXX."""
    out = []
    for ch in s:
        cat = unicodedata.category(ch)
        if ord(ch) > 0x7E and (cat in ("Cc", "Cf", "Zl", "Zp", "Mn", "Me", "Co") or (cat == "Zs" and ch != " ")):
            out.append("".join(f"\\u{u:04x}" for u in _utf16_units(ch)))
        else:
            out.append(ch)
    return "".join(out)


def _utf16_units(ch):
    b = ch.encode("utf-16-be")
    return [int.from_bytes(b[i : i + 2], "big") for i in range(0, len(b), 2)]


def dump_case(case):
    text = _escape_invisible(json.dumps(case["text"], ensure_ascii=False))
    assert json.loads(text) == case["text"]
    return '{"text": %s, "ids": %s}' % (text, json.dumps(case["ids"], separators=(",", ":")))


def summarize(backend):
    cfg = json.loads(backend.to_str())
    model = {k: v for k, v in cfg["model"].items() if k not in ("vocab", "merges")}
    model["vocab_size"] = len(cfg["model"].get("vocab", {}))
    model["merges"] = len(cfg["model"].get("merges", []))
    return {
        "normalizer": cfg.get("normalizer"),
        "pre_tokenizer": cfg.get("pre_tokenizer"),
        "post_processor": cfg.get("post_processor"),
        "decoder": cfg.get("decoder"),
        "model": model,
        "added_tokens": [
            {k: a[k] for k in ("id", "content", "special", "normalized", "lstrip", "rstrip", "single_word")}
            for a in cfg.get("added_tokens", [])
        ],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ggufs", nargs="*", default=DEFAULT_GGUFS)
    ap.add_argument("--out-dir", default=FIXTURE_DIR)
    ap.add_argument("--summary", action="store_true", help="print the reference tokenizer config")
    args = ap.parse_args()

    assert len(CORPUS) == len(set(CORPUS)), "duplicate corpus entries"
    os.makedirs(args.out_dir, exist_ok=True)
    for path in args.ggufs:
        wrapper, backend, pre = build_reference(path)
        name = FIXTURE_NAMES.get(pre, pre)
        cases = []
        for text in CORPUS:
            ids = wrapper.encode(text, add_special_tokens=False)
            # Sanity: the raw backend must agree with the wrapper.
            assert ids == backend.encode(text, add_special_tokens=False).ids, text
            cases.append({"text": text, "ids": ids})
        doc = {"gguf_sha256_prefix": sha256_prefix(path), "pre": pre, "cases": cases}
        out = os.path.join(args.out_dir, f"tokenizer_{name}.json")
        with open(out, "w", encoding="utf-8") as f:
            # One case per line keeps diffs readable and the file small.
            f.write("{\n")
            f.write(f'  "gguf_sha256_prefix": {json.dumps(doc["gguf_sha256_prefix"])},\n')
            f.write(f'  "pre": {json.dumps(pre)},\n')
            f.write('  "cases": [\n')
            for i, case in enumerate(cases):
                sep = "," if i + 1 < len(cases) else ""
                f.write("    " + dump_case(case) + sep + "\n")
            f.write("  ]\n}\n")
        print(f"{out}: {len(cases)} cases, {sum(len(c['ids']) for c in cases)} ids")
        if args.summary:
            print(json.dumps(summarize(backend), indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
