//! `aha models` and `aha pull`.

use crate::engine::registry;
use anyhow::{anyhow, Result};

/// Lists known models.
pub fn list(json: bool) -> Result<i32> {
    for (name, have, desc, path) in registry::list_rows() {
        if json {
            println!(
                "{}",
                serde_json::json!({"name": name, "downloaded": have, "description": desc, "path": path})
            );
        } else {
            println!("{} {name:28} {desc}", if have { "✓" } else { " " });
        }
    }
    if !json {
        println!("\n✓ = downloaded, in {}", registry::models_dir().display());
    }
    Ok(0)
}

/// Downloads a model by name.
pub fn pull(name: &str) -> Result<i32> {
    let m = registry::find(name).ok_or_else(|| {
        anyhow!(
            "unknown model `{name}`; known: {}",
            registry::KNOWN
                .iter()
                .map(|m| m.name)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    if m.is_downloaded() {
        eprintln!("{} is already downloaded: {}", m.name, m.path().display());
        return Ok(0);
    }
    let p = registry::pull(m)?;
    eprintln!("{} ready: {}", m.name, p.display());
    Ok(0)
}
