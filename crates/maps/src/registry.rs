//! [`MapRegistry`]: map ids, and how map-in-map values resolve them.

use crate::{rd, wr, Map, MapDef, MapError, MapId, MapOptions};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};

pub(crate) struct Inner {
    maps: RwLock<BTreeMap<MapId, Arc<Map>>>,
    by_addr: RwLock<HashMap<u64, MapId>>,
    next: AtomicU32,
    opts: MapOptions,
}

impl Inner {
    pub(crate) fn get(&self, id: MapId) -> Option<Arc<Map>> {
        rd(&self.maps).get(&id).cloned()
    }
}

/// The maps of one embedder, by id (ids start at 1, like the kernel's).
/// Map-in-map values on the control side are these ids; cloning the
/// registry shares it.
///
/// ```
/// use bpfkit_abi::{MapDef, MapType};
/// use bpfkit_maps::{pin, MapOptions, MapRegistry};
/// let reg = MapRegistry::new(MapOptions::new());
/// let inner_def = MapDef::new(MapType::Array, 4, 8, 1);
/// let (inner, _) = reg.create(inner_def.clone()).unwrap();
/// let (_, outer) = reg
///     .create(MapDef::new(MapType::ArrayOfMaps, 4, 4, 2).with_inner(inner_def))
///     .unwrap();
/// outer.update(&0u32.to_ne_bytes(), &inner.0.to_ne_bytes(), 0).unwrap();
/// // The control side sees the inner map's id ...
/// assert_eq!(outer.lookup(&0u32.to_ne_bytes()).unwrap(), inner.0.to_ne_bytes());
/// // ... programs see the map.
/// let g = pin();
/// assert_eq!(outer.inner_map(&0u32.to_ne_bytes(), &g).unwrap().id(), Some(inner));
/// ```
#[derive(Clone)]
pub struct MapRegistry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MapRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(rd(&self.inner.maps).keys()).finish()
    }
}

impl MapRegistry {
    /// An empty registry whose maps use `opts`.
    pub fn new(opts: MapOptions) -> MapRegistry {
        MapRegistry {
            inner: Arc::new(Inner {
                maps: RwLock::new(BTreeMap::new()),
                by_addr: RwLock::new(HashMap::new()),
                next: AtomicU32::new(1),
                opts,
            }),
        }
    }

    /// The options maps are created with.
    pub fn options(&self) -> &MapOptions {
        &self.inner.opts
    }

    /// Creates a map (checked as [`Map::new`] does) and gives it the next id.
    pub fn create(&self, def: MapDef) -> Result<(MapId, Arc<Map>), MapError> {
        let id = MapId(self.inner.next.fetch_add(1, Ordering::Relaxed));
        let map = Arc::new(Map::build(
            def,
            &self.inner.opts,
            Some(id),
            Arc::downgrade(&self.inner),
        )?);
        wr(&self.inner.maps).insert(id, map.clone());
        wr(&self.inner.by_addr).insert(map.addr(), id);
        Ok((id, map))
    }

    /// The map with this id.
    pub fn get(&self, id: MapId) -> Option<Arc<Map>> {
        self.inner.get(id)
    }

    /// Forgets a map; it lives on while programs or outer maps hold it.
    pub fn remove(&self, id: MapId) -> Option<Arc<Map>> {
        let map = wr(&self.inner.maps).remove(&id)?;
        wr(&self.inner.by_addr).remove(&map.addr());
        Some(map)
    }

    /// The registered map whose [`Map::addr`] is `addr`: how a helper turns
    /// the map pointer a program passes (`r1`) back into a map.
    pub fn get_by_addr(&self, addr: u64) -> Option<Arc<Map>> {
        let id = *rd(&self.inner.by_addr).get(&addr)?;
        self.get(id)
    }

    /// Every map id, ascending.
    pub fn ids(&self) -> Vec<MapId> {
        rd(&self.inner.maps).keys().copied().collect()
    }
}
