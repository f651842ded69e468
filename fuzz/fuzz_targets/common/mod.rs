#![allow(dead_code)] // each target uses one of the helpers

//! Helpers shared by the targets: deterministic split points, so a target can compare one push
//! with many and a crash replays exactly.

/// Cuts `text` at char boundaries into pieces of 0..=`max` chars, the lengths drawn from `seed`.
pub fn split_str(text: &str, seed: u8, max: usize) -> Vec<&str> {
    let bounds: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect();
    let mut lens = Lcg(seed as u64 | 1);
    let mut out = Vec::new();
    let mut at = 0;
    while at < bounds.len() - 1 {
        let next = (at + lens.below(max + 1)).min(bounds.len() - 1);
        out.push(&text[bounds[at]..bounds[next]]);
        at = next;
    }
    out
}

/// Cuts `bytes` into pieces of 1..=`max` bytes (anywhere, also inside a UTF-8 character).
pub fn split_bytes(bytes: &[u8], seed: u8, max: usize) -> Vec<&[u8]> {
    let mut lens = Lcg(seed as u64 | 1);
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let next = (at + 1 + lens.below(max)).min(bytes.len());
        out.push(&bytes[at..next]);
        at = next;
    }
    out
}

struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n.max(1)
    }
}
