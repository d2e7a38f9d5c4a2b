//! Memory limits for one component: a budget over all of its linear memories and tables.

use wasmtime::ResourceLimiter;

/// A component's memory budget.
#[derive(Debug)]
pub struct Limits {
    /// The most bytes of linear memory the component may hold, over all its memories.
    pub memory_limit: usize,
    /// Bytes of linear memory granted so far.
    pub memory_used: usize,
    /// Set when a growth was refused: (bytes asked for in all, the limit).
    pub refused: Option<(usize, usize)>,
}

/// The most table elements one table may have.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl Limits {
    /// A budget of `memory_limit` bytes.
    pub fn new(memory_limit: usize) -> Limits {
        Limits { memory_limit, memory_used: 0, refused: None }
    }
}

impl ResourceLimiter for Limits {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let total = self.memory_used - current.min(self.memory_used) + desired;
        if total > self.memory_limit {
            self.refused = Some((total, self.memory_limit));
            return Ok(false);
        }
        self.memory_used = total;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_spans_memories() {
        let mut l = Limits::new(100);
        assert!(l.memory_growing(0, 60, None).expect("ok"));
        assert!(l.memory_growing(0, 40, None).expect("ok"));
        assert!(!l.memory_growing(40, 41, None).expect("ok"));
        assert_eq!(l.refused, Some((101, 100)));
        assert_eq!(l.memory_used, 100);
    }
}
