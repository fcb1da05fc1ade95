//! Scratch buffers that give memory back: a stream keeps its buffers from record to
//! record (so that a warm stream allocates nothing), but a single large record must not
//! leave a stream — a sidecar connection that then idles — holding its size for ever.

/// A buffer whose capacity can be measured and given back.
pub trait Release {
    /// Bytes of capacity held.
    fn capacity_bytes(&self) -> usize;

    /// Empties it and keeps at most about `keep` bytes of capacity.
    fn release(&mut self, keep: usize);
}

impl<T> Release for Vec<T> {
    fn capacity_bytes(&self) -> usize {
        self.capacity() * std::mem::size_of::<T>()
    }

    fn release(&mut self, keep: usize) {
        if self.capacity_bytes() > keep {
            self.clear();
            self.shrink_to(keep / std::mem::size_of::<T>().max(1));
        }
    }
}

impl Release for String {
    fn capacity_bytes(&self) -> usize {
        self.capacity()
    }

    fn release(&mut self, keep: usize) {
        if self.capacity() > keep {
            self.clear();
            self.shrink_to(keep);
        }
    }
}

/// The capacity of several buffers, in bytes.
pub fn total(buffers: &[&dyn Release]) -> usize {
    buffers.iter().map(|b| b.capacity_bytes()).sum()
}
