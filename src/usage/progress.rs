//! What the events of a stream have established so far, apart from usage itself: the
//! state every provider's stream parser updates.

use super::bounded_model;

/// What the events read so far have established, apart from usage itself.
#[derive(Debug, Default)]
pub struct Progress {
    pub model: Option<String>,
    pub complete: bool,
    pub failed: bool,
    pub unparseable: bool,
    pub content_bytes: u64,
}

impl Progress {
    /// Keeps the first non-empty model name.
    pub fn see_model(&mut self, model: Option<&str>) {
        if self.model.is_none() {
            self.model = model.and_then(bounded_model);
        }
    }

    pub fn add_content(&mut self, bytes: u64) {
        self.content_bytes = self.content_bytes.saturating_add(bytes);
    }
}
