//! A socket's per-channel state, keyed by project. A socket joins few channels (at most
//! [`super::machine::MAX_CHANNELS`], usually one), so a vector sized to its entries is
//! both smaller and as fast as a hash map: a one-entry `HashMap` allocates four buckets
//! and its control bytes for every socket (issue 16: memory per idle socket). One entry,
//! the usual case, is kept inline: a feed's lane reads the socket's position on every
//! delivery, and a heap block of its own was a cache miss per socket and event
//! (docs/BENCHMARKS.md, 2026-12-01).

use uuid::Uuid;

#[derive(Debug)]
pub struct ChannelMap<V>(Entries<V>);

#[derive(Debug)]
enum Entries<V> {
    Empty,
    One([(Uuid, V); 1]),
    /// Two or more (grown one entry at a time: joins are rare and bounded, idle memory is not).
    Many(Vec<(Uuid, V)>),
}

impl<V> Default for ChannelMap<V> {
    fn default() -> Self {
        ChannelMap(Entries::Empty)
    }
}

impl<V> ChannelMap<V> {
    fn entries(&self) -> &[(Uuid, V)] {
        match &self.0 {
            Entries::Empty => &[],
            Entries::One(one) => one,
            Entries::Many(many) => many,
        }
    }

    fn entries_mut(&mut self) -> &mut [(Uuid, V)] {
        match &mut self.0 {
            Entries::Empty => &mut [],
            Entries::One(one) => one,
            Entries::Many(many) => many,
        }
    }

    pub fn get(&self, project: &Uuid) -> Option<&V> {
        self.entries().iter().find(|(key, _)| key == project).map(|(_, value)| value)
    }

    pub fn get_mut(&mut self, project: &Uuid) -> Option<&mut V> {
        self.entries_mut().iter_mut().find(|(key, _)| key == project).map(|(_, value)| value)
    }

    pub fn contains_key(&self, project: &Uuid) -> bool {
        self.get(project).is_some()
    }

    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }

    /// Sets `project`'s value; returns the one it replaced.
    pub fn insert(&mut self, project: Uuid, value: V) -> Option<V> {
        if let Some(slot) = self.get_mut(&project) {
            return Some(std::mem::replace(slot, value));
        }
        self.0 = match std::mem::replace(&mut self.0, Entries::Empty) {
            Entries::Empty => Entries::One([(project, value)]),
            Entries::One([first]) => Entries::Many(vec![first, (project, value)]),
            Entries::Many(mut many) => {
                many.reserve_exact(1);
                many.push((project, value));
                Entries::Many(many)
            }
        };
        None
    }

    pub fn remove(&mut self, project: &Uuid) -> Option<V> {
        let index = self.entries().iter().position(|(key, _)| key == project)?;
        let (removed, left) = match std::mem::replace(&mut self.0, Entries::Empty) {
            Entries::Empty => unreachable!("an entry was found"),
            Entries::One([(_, value)]) => (value, Entries::Empty),
            Entries::Many(mut many) => {
                let (_, value) = many.swap_remove(index);
                match many.len() {
                    1 => (value, Entries::One([many.remove(0)])),
                    _ => (value, Entries::Many(many)),
                }
            }
        };
        self.0 = left;
        Some(removed)
    }

    pub fn keys(&self) -> impl Iterator<Item = &Uuid> + '_ {
        self.entries().iter().map(|(key, _)| key)
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
        assert!(matches!(map.0, Entries::One(_)), "one joined channel, kept inline");
        assert_eq!(map.insert(b, 2), None);
        assert_eq!(map.insert(a, 3), Some(1));
        assert_eq!((map.get(&a), map.get(&b), map.len()), (Some(&3), Some(&2), 2));
        *map.get_mut(&b).unwrap() += 1;
        assert_eq!(map.remove(&b), Some(3));
        assert_eq!(map.remove(&b), None);
        assert!(map.contains_key(&a) && !map.contains_key(&b));
        assert_eq!(map.keys().collect::<Vec<_>>(), [&a]);
        assert!(matches!(map.0, Entries::One(_)), "back inline when one is left");
        assert_eq!(map.remove(&a), Some(3));
        assert!(map.is_empty() && map.get(&a).is_none());
        let c = Uuid::new_v4();
        for (key, value) in [(a, 1), (b, 2), (c, 3)] {
            map.insert(key, value);
        }
        assert_eq!((map.remove(&a), map.get(&b), map.get(&c), map.len()), (Some(1), Some(&2), Some(&3), 2));
    }
}
