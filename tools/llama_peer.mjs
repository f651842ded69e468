// The llama.cpp peer (node-llama-cpp 3.21.1, prebuilt CPU backend) for aha's comparisons.
//
//   node tools/llama_peer.mjs greedy MODEL THREADS N  < prompt.txt   -> {"ids":[...],"text":"..."}
//   node tools/llama_peer.mjs greedy-ids MODEL THREADS N  < ids.json -> {"ids":[...]}
//   node tools/llama_peer.mjs bench MODEL THREADS P G < ids.json     -> {"prefill_tok_s":..,"decode_tok_s":..}
//   node tools/llama_peer.mjs ppl MODEL THREADS CTX < ids.json       -> {"perplexity":..,"tokens":..}
//
// Token ids come from aha (`aha tokenize`), so both engines see exactly the same input.
// Install with: npm install --prefix ~/.cache/aha-peer node-llama-cpp@3.21.1
import { createRequire } from "module";
import { readFileSync } from "fs";
import path from "path";
import os from "os";

const prefix = process.env.AHA_PEER_DIR || path.join(os.homedir(), ".cache", "aha-peer");
const require = createRequire(path.join(prefix, "package.json"));
const { getLlama, LlamaLogLevel } = await import(require.resolve("node-llama-cpp"));

const [mode, modelPath, threadsArg, a, b] = process.argv.slice(2);
const threads = Number(threadsArg);
const llama = await getLlama({ gpu: false, logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
const input = readFileSync(0, "utf8");

async function ctxFor(size, batch) {
  const opts = { contextSize: size, batchSize: batch, threads, sequences: 1 };
  // AHA_PEER_FLASH_ATTN=0|1 overrides llama.cpp's own choice ("auto": on, on the CPU).
  if (process.env.AHA_PEER_FLASH_ATTN) opts.flashAttention = process.env.AHA_PEER_FLASH_ATTN === "1";
  return model.createContext(opts);
}

if (mode === "greedy" || mode === "greedy-ids") {
  const n = Number(a);
  const ids = mode === "greedy" ? model.tokenize(input, true) : JSON.parse(input);
  const ctx = await ctxFor(ids.length + n + 8, 512);
  const seq = ctx.getSequence();
  const out = [];
  for await (const t of seq.evaluate(ids, { temperature: 0 })) {
    out.push(t);
    if (out.length >= n) break;
  }
  console.log(JSON.stringify({ prompt_ids: ids, ids: out, text: model.detokenize(out) }));
} else if (mode === "bench") {
  const [P, G] = [Number(a), Number(b)];
  const ids = JSON.parse(input).slice(0, P);
  const ctx = await ctxFor(P + G + 16, 512);
  const seq = ctx.getSequence();
  // Prefill: evaluate the prompt without generating.
  const t0 = performance.now();
  await seq.evaluateWithoutGeneratingNewTokens(ids.slice(0, P - 1));
  const t1 = performance.now();
  // Decode: the last prompt token then G-1 generated tokens.
  let n = 0;
  let tFirst = 0;
  for await (const t of seq.evaluate([ids[P - 1]], { temperature: 0 })) {
    n++;
    if (n === 1) tFirst = performance.now();
    if (n >= G) break;
  }
  const t2 = performance.now();
  // Which of llama.cpp's CPU libraries (one per instruction-set level) this process loaded.
  const lib = readFileSync("/proc/self/maps", "utf8").match(/libggml-cpu-([\w-]+)\.so/);
  console.log(JSON.stringify({
    cpu_backend: lib ? lib[1] : null,
    prefill_tok_s: (P - 1) / ((t1 - t0) / 1000),
    decode_tok_s: (n - 1) / ((t2 - tFirst) / 1000),
    ttft_ms: tFirst - t0,
  }));
} else if (mode === "ppl") {
  const win = Number(a);
  const ids = JSON.parse(input);
  let nll = 0, count = 0;
  for (let s = 0; s + 1 < ids.length; s += win) {
    const w = ids.slice(s, s + win);
    if (w.length < 2) break;
    const ctx = await ctxFor(win + 8, 512);
    const seq = ctx.getSequence();
    // Small batches: each output holds a whole-vocabulary probability map.
    for (let b = 0; b < w.length - 1; b += 8) {
      const end = Math.min(b + 8, w.length - 1);
      const items = w.slice(b, end).map((t) => [t, { generateNext: { probabilities: true } }]);
      const res = await seq.controlledEvaluate(items);
      for (let i = b; i < end; i++) {
        const p = res[i - b]?.next?.probabilities?.get(w[i + 1]) ?? 0;
        nll -= Math.log(Math.max(p, 1e-30));
        count++;
      }
    }
    await ctx.dispose();
  }
  console.log(JSON.stringify({ perplexity: Math.exp(nll / count), tokens: ids.length }));
} else {
  console.error("unknown mode " + mode);
  process.exit(2);
}
process.exit(0);
