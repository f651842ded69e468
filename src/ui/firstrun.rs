//! First run: when the chosen model is not on disk yet, offer to pull it and show the download.

use anyhow::Result;

/// Makes sure the model can be loaded; `Ok(false)` when the person chose to quit.
pub fn ensure_model(_name: &str) -> Result<bool> {
    Ok(true)
}
