//! A FIFO of connection indices that takes any member out in constant time.
//!
//! Connections free to write wait in one in the order they became free, for unaddressed messages to
//! take the first (the kernel's `psocks_avail` list); connections holding a parked message wait in
//! another for room on an endpoint. An addressed message takes its own connection out of the middle
//! of the first, and an unattached connection leaves both. In a `VecDeque` that meant a scan of the
//! queue on every reply: with 10,000 connections attached and requests arriving on them in no
//! particular order, the scan was 13/14 of the core's cost per request (criterion
//! `mux/request_reply_10k_conns`: 2.0 µs a request against 0.15 µs with one connection).
//!
//! Connection indices are dense slab positions (`MuxCore::conns`), so the links live in a
//! vector indexed by them, as the kernel keeps a `list_head` in each psock: push, pop and
//! removal are O(1) with no hashing. Written here rather than taken from a crate because the
//! ordered sets with O(1) removal (`hashlink`'s `LinkedHashSet`, `indexmap`'s `IndexSet`)
//! hash every key, or shift the tail to keep the order on removal.

/// No neighbour (the end of the list).
const NIL: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct Link {
    prev: u32,
    next: u32,
}

/// The FIFO. Each index is in it at most once.
#[derive(Debug)]
pub(crate) struct IndexFifo {
    head: u32,
    tail: u32,
    /// `links[i]` is `Some` while `i` is queued.
    links: Vec<Option<Link>>,
}

impl Default for IndexFifo {
    fn default() -> IndexFifo {
        IndexFifo {
            head: NIL,
            tail: NIL,
            links: Vec::new(),
        }
    }
}

impl IndexFifo {
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.head == NIL
    }

    pub(crate) fn contains(&self, i: u32) -> bool {
        self.links.get(i as usize).is_some_and(Option::is_some)
    }

    /// Queues `i` at the back; `false` (and nothing changes) if it is queued already.
    pub(crate) fn push_back(&mut self, i: u32) -> bool {
        debug_assert_ne!(i, NIL, "index reserved for the list's ends");
        if self.contains(i) {
            return false;
        }
        let at = i as usize;
        if self.links.len() <= at {
            self.links.resize(at + 1, None);
        }
        self.links[at] = Some(Link {
            prev: self.tail,
            next: NIL,
        });
        match self.link_mut(self.tail) {
            Some(t) => t.next = i,
            None => self.head = i,
        }
        self.tail = i;
        true
    }

    /// The first index.
    pub(crate) fn front(&self) -> Option<u32> {
        (self.head != NIL).then_some(self.head)
    }

    /// Takes the first index out.
    pub(crate) fn pop_front(&mut self) -> Option<u32> {
        let i = self.head;
        self.remove(i).then_some(i)
    }

    /// Takes `i` out wherever it is; `false` if it was not queued.
    pub(crate) fn remove(&mut self, i: u32) -> bool {
        let Some(l) = self.links.get_mut(i as usize).and_then(Option::take) else {
            return false;
        };
        match self.link_mut(l.prev) {
            Some(p) => p.next = l.next,
            None => self.head = l.next,
        }
        match self.link_mut(l.next) {
            Some(n) => n.prev = l.prev,
            None => self.tail = l.prev,
        }
        true
    }

    /// The queued indices, first to last.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        std::iter::successors(self.front(), |&i| {
            self.links[i as usize].and_then(|l| (l.next != NIL).then_some(l.next))
        })
    }

    fn link_mut(&mut self, i: u32) -> Option<&mut Link> {
        self.links.get_mut(i as usize).and_then(Option::as_mut)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use proptest::prelude::*;

    use super::IndexFifo;

    #[derive(Clone, Debug)]
    enum Op {
        Push(u32),
        Pop,
        Remove(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u32..12).prop_map(Op::Push),
            Just(Op::Pop),
            (0u32..12).prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// Any sequence of operations leaves the same order as a `VecDeque` that scans.
        #[test]
        fn behaves_as_a_scanned_deque(ops in proptest::collection::vec(op(), 0..200)) {
            let mut fifo = IndexFifo::default();
            let mut model: VecDeque<u32> = VecDeque::new();
            for op in ops {
                match op {
                    Op::Push(i) => {
                        let new = !model.contains(&i);
                        if new {
                            model.push_back(i);
                        }
                        prop_assert_eq!(fifo.push_back(i), new);
                    }
                    Op::Pop => prop_assert_eq!(fifo.pop_front(), model.pop_front()),
                    Op::Remove(i) => {
                        let pos = model.iter().position(|&x| x == i);
                        if let Some(p) = pos {
                            model.remove(p);
                        }
                        prop_assert_eq!(fifo.remove(i), pos.is_some());
                    }
                }
                prop_assert_eq!(fifo.iter().collect::<Vec<_>>(), Vec::from(model.clone()));
                prop_assert_eq!(fifo.is_empty(), model.is_empty());
                for i in 0..12 {
                    prop_assert_eq!(fifo.contains(i), model.contains(&i));
                }
            }
        }
    }

    #[test]
    fn removes_from_the_middle_and_both_ends() {
        let mut f = IndexFifo::default();
        for i in [5, 0, 9, 3] {
            assert!(f.push_back(i));
        }
        assert!(!f.push_back(9), "queued already");
        assert!(f.remove(9));
        assert!(!f.remove(9));
        assert_eq!(f.iter().collect::<Vec<_>>(), [5, 0, 3]);
        assert!(f.remove(3));
        assert!(f.push_back(7));
        assert_eq!(f.pop_front(), Some(5));
        assert_eq!(f.iter().collect::<Vec<_>>(), [0, 7]);
        assert!(f.remove(0) && f.remove(7));
        assert!(f.is_empty());
        assert_eq!(f.pop_front(), None);
        assert_eq!(f.iter().count(), 0);
    }
}
