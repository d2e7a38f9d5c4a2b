//! The scheduler's run queue: strict priorities, first in first out within a priority. Plain
//! logic, host-tested; `sched` keeps its ready threads in one.

use alloc::collections::VecDeque;
use core::fmt;

/// How urgent a thread is. A ready thread of a higher priority always runs before one of a lower
/// priority; threads of one priority share the CPU round-robin, a time slice each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Runs only when nothing else is ready.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Runs before everything else.
    High,
}

impl Priority {
    /// Every priority, lowest first.
    pub const ALL: [Priority; 3] = [Priority::Low, Priority::Normal, Priority::High];

    const fn index(self) -> usize {
        match self {
            Priority::Low => 0,
            Priority::Normal => 1,
            Priority::High => 2,
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
        })
    }
}

/// Ready entries by priority.
#[derive(Debug)]
pub struct RunQueue<T> {
    levels: [VecDeque<T>; 3],
}

impl<T> Default for RunQueue<T> {
    fn default() -> Self {
        RunQueue { levels: [VecDeque::new(), VecDeque::new(), VecDeque::new()] }
    }
}

impl<T> RunQueue<T> {
    /// An empty queue.
    pub fn new() -> RunQueue<T> {
        RunQueue::default()
    }

    /// Queues `item` behind the others of its priority.
    pub fn push(&mut self, priority: Priority, item: T) {
        self.levels[priority.index()].push_back(item);
    }

    /// The first entry of the highest priority that has one.
    pub fn pop(&mut self) -> Option<T> {
        self.levels.iter_mut().rev().find_map(VecDeque::pop_front)
    }

    /// Like [`pop`](Self::pop), but only an entry of priority `at_least` or higher.
    pub fn pop_at_least(&mut self, at_least: Priority) -> Option<T> {
        self.levels[at_least.index()..].iter_mut().rev().find_map(VecDeque::pop_front)
    }

    /// The highest priority with an entry.
    pub fn best(&self) -> Option<Priority> {
        Priority::ALL.into_iter().rev().find(|p| !self.levels[p.index()].is_empty())
    }

    /// Every entry, highest priority first.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.levels.iter().rev().flat_map(VecDeque::iter)
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.levels.iter().map(VecDeque::len).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_priorities_first_and_fifo_within_one() {
        let mut q = RunQueue::new();
        q.push(Priority::Normal, "n1");
        q.push(Priority::Low, "l1");
        q.push(Priority::Normal, "n2");
        q.push(Priority::High, "h1");
        assert_eq!((q.len(), q.best()), (4, Some(Priority::High)));
        assert_eq!(q.pop(), Some("h1"));
        assert_eq!(q.pop_at_least(Priority::High), None, "no high entry left");
        assert_eq!(q.pop_at_least(Priority::Normal), Some("n1"));
        assert_eq!(q.pop(), Some("n2"));
        assert_eq!(q.best(), Some(Priority::Low));
        assert_eq!(q.pop_at_least(Priority::Normal), None);
        assert_eq!(q.pop(), Some("l1"));
        assert!(q.is_empty() && q.best().is_none() && q.pop().is_none());
    }

    #[test]
    fn priorities_order_and_print() {
        assert!(Priority::High > Priority::Normal && Priority::Normal > Priority::Low);
        assert_eq!(Priority::default(), Priority::Normal);
        assert_eq!(Priority::ALL.map(|p| p.to_string()), ["low", "normal", "high"]);
    }
}
