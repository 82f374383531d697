use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;

use super::{HostWifi, InterfaceEvent, InterfaceId, WifiInterface};

/// How many events a slow subscriber may fall behind before it misses some
/// (it is then told it lagged and re-reads the interface list).
const EVENT_CAPACITY: usize = 1024;

/// The interface list and event channel a backend publishes through.
///
/// Backends (simulated, NetworkManager, WlanAPI) own one and call
/// [`EventHub::add`], [`EventHub::remove`] and [`EventHub::publish`]; guests
/// read it through [`HostWifi`].
pub struct EventHub {
    interfaces: Mutex<Vec<Arc<dyn WifiInterface>>>,
    events: broadcast::Sender<InterfaceEvent>,
}

impl Default for EventHub {
    fn default() -> Self {
        EventHub::new()
    }
}

impl EventHub {
    /// An empty hub: no interfaces, no subscribers.
    pub fn new() -> EventHub {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        EventHub {
            interfaces: Mutex::new(Vec::new()),
            events,
        }
    }

    fn list(&self) -> MutexGuard<'_, Vec<Arc<dyn WifiInterface>>> {
        // A panic while holding this lock cannot leave the Vec inconsistent.
        self.interfaces.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an interface (replacing one with the same id) and announces it.
    pub fn add(&self, iface: Arc<dyn WifiInterface>) {
        {
            let mut list = self.list();
            let id = iface.id();
            match list.iter_mut().find(|i| i.id() == id) {
                Some(slot) => *slot = iface.clone(),
                None => list.push(iface.clone()),
            }
        }
        self.publish(InterfaceEvent::Arrived(iface));
    }

    /// Removes an interface and announces it; unknown ids are ignored.
    pub fn remove(&self, id: InterfaceId) {
        let removed = {
            let mut list = self.list();
            let before = list.len();
            list.retain(|i| i.id() != id);
            list.len() != before
        };
        if removed {
            self.publish(InterfaceEvent::Removed(id));
        }
    }

    /// Publishes an event to every subscriber. Having none is fine.
    pub fn publish(&self, event: InterfaceEvent) {
        let _ = self.events.send(event);
    }

    /// The interface with this id, if it is present.
    pub fn get(&self, id: InterfaceId) -> Option<Arc<dyn WifiInterface>> {
        self.list().iter().find(|i| i.id() == id).cloned()
    }
}

impl HostWifi for EventHub {
    fn subscribe(&self) -> broadcast::Receiver<InterfaceEvent> {
        self.events.subscribe()
    }

    fn interfaces(&self) -> Vec<Arc<dyn WifiInterface>> {
        self.list().clone()
    }
}
