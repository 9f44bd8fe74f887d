//! A socket's per-channel state, keyed by project. A socket joins few channels (at most
//! [`super::machine::MAX_CHANNELS`], usually one), so a vector sized to its entries is
//! both smaller and as fast as a hash map: a one-entry `HashMap` allocates four buckets
//! and its control bytes for every socket (issue 16: memory per idle socket).

use uuid::Uuid;

#[derive(Debug)]
pub struct ChannelMap<V>(Vec<(Uuid, V)>);

impl<V> Default for ChannelMap<V> {
    fn default() -> Self {
        ChannelMap(Vec::new())
    }
}

impl<V> ChannelMap<V> {
    pub fn get(&self, project: &Uuid) -> Option<&V> {
        self.0.iter().find(|(key, _)| key == project).map(|(_, value)| value)
    }

    pub fn get_mut(&mut self, project: &Uuid) -> Option<&mut V> {
        self.0.iter_mut().find(|(key, _)| key == project).map(|(_, value)| value)
    }

    pub fn contains_key(&self, project: &Uuid) -> bool {
        self.get(project).is_some()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sets `project`'s value; returns the one it replaced.
    pub fn insert(&mut self, project: Uuid, value: V) -> Option<V> {
        if let Some(slot) = self.get_mut(&project) {
            return Some(std::mem::replace(slot, value));
        }
        // Grown one entry at a time: joins are rare and bounded, idle memory is not.
        self.0.reserve_exact(1);
        self.0.push((project, value));
        None
    }

    pub fn remove(&mut self, project: &Uuid) -> Option<V> {
        let index = self.0.iter().position(|(key, _)| key == project)?;
        Some(self.0.swap_remove(index).1)
    }

    pub fn keys(&self) -> impl Iterator<Item = &Uuid> + '_ {
        self.0.iter().map(|(key, _)| key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_a_map_and_holds_only_its_entries() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut map = ChannelMap::default();
        assert_eq!(map.insert(a, 1), None);
        assert_eq!(map.0.capacity(), 1, "one joined channel, one slot");
        assert_eq!(map.insert(b, 2), None);
        assert_eq!(map.insert(a, 3), Some(1));
        assert_eq!((map.get(&a), map.get(&b), map.len()), (Some(&3), Some(&2), 2));
        *map.get_mut(&b).unwrap() += 1;
        assert_eq!(map.remove(&b), Some(3));
        assert_eq!(map.remove(&b), None);
        assert!(map.contains_key(&a) && !map.contains_key(&b));
        assert_eq!(map.keys().collect::<Vec<_>>(), [&a]);
    }
}
