//! What the Flight frontend remembers between calls: engine sessions and prepared statements.
//!
//! Flight SQL is a set of independent gRPC calls, so the state a pgwire connection simply owns
//! (its session, its prepared statements) lives here, keyed by who is calling. Both maps are
//! bounded: beyond their limit the least recently used entry is dropped, and a client that comes
//! back to a dropped token or statement handle gets an error it can act on (authenticate again,
//! prepare again).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use freshet_sql::datafusion::common::ScalarValue;
use freshet_sql::{Engine, Prepared, Session};

/// Most sessions kept at once (one per connection without authentication, one per bearer token
/// with it).
pub const SESSIONS_MAX: usize = 1024;
/// Most prepared statements kept at once, over all sessions.
pub const PREPARED_STATEMENTS_MAX: usize = 1024;

/// A map that holds at most `capacity` entries and evicts the least recently used one.
///
/// Eviction scans every entry; with capacities of about a thousand that is cheaper and simpler
/// than keeping a linked list in order.
pub struct Lru<K, V> {
    entries: HashMap<K, (V, u64)>,
    capacity: usize,
    clock: u64,
}

impl<K: Eq + Hash + Clone, V> Lru<K, V> {
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "an LRU map needs room for at least one entry");
        Self {
            entries: HashMap::new(),
            capacity,
            clock: 0,
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// The value for `key`, marked as just used.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let now = self.tick();
        self.entries.get_mut(key).map(|(value, used)| {
            *used = now;
            value
        })
    }

    /// Inserts or replaces `key`; returns the entry evicted to make room, if any.
    pub fn insert(&mut self, key: K, value: V) -> Option<(K, V)> {
        let now = self.tick();
        let mut evicted = None;
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                evicted = self
                    .entries
                    .remove(&oldest)
                    .map(|(value, _)| (oldest, value));
            }
        }
        self.entries.insert(key, (value, now));
        assert!(self.entries.len() <= self.capacity);
        evicted
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.entries.remove(key).map(|(value, _)| value)
    }

    /// Keeps only the entries for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        self.entries.retain(|k, (v, _)| keep(k, v));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Whose session a call uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SessionKey {
    /// Without authentication: one session per client connection, dropped when it closes.
    Connection(u64),
    /// With authentication: one session per bearer token.
    Token(String),
}

/// A prepared statement and the parameter values last bound to it.
struct Statement {
    owner: SessionKey,
    prepared: Prepared,
    params: Option<Vec<ScalarValue>>,
}

struct State {
    sessions: Lru<SessionKey, Arc<Session>>,
    statements: Lru<String, Statement>,
}

impl State {
    fn insert_session(&mut self, key: SessionKey, session: Arc<Session>) {
        if let Some((evicted, _)) = self.sessions.insert(key, session) {
            tracing::debug!(?evicted, "flight session evicted: too many sessions");
            self.statements.retain(|_, s| s.owner != evicted);
        }
    }
}

/// Sessions and prepared statements of every Flight client.
pub struct Registry {
    engine: Engine,
    state: Mutex<State>,
}

impl Registry {
    pub fn new(engine: Engine) -> Arc<Self> {
        Arc::new(Self {
            engine,
            state: Mutex::new(State {
                sessions: Lru::new(SESSIONS_MAX),
                statements: Lru::new(PREPARED_STATEMENTS_MAX),
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update is a single map operation, so a panic elsewhere cannot leave the maps
        // half-changed: the poisoned state is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session of connection `id`, opened on first use.
    pub fn connection_session(&self, id: u64) -> Arc<Session> {
        let key = SessionKey::Connection(id);
        if let Some(session) = self.state().sessions.get_mut(&key) {
            return session.clone();
        }
        // Opened outside the lock: building a session copies the engine's configuration.
        let session = Arc::new(
            self.engine
                .new_session("freshet")
                .with_question_mark_placeholders(),
        );
        let mut state = self.state();
        if let Some(existing) = state.sessions.get_mut(&key) {
            return existing.clone();
        }
        state.insert_session(key, session.clone());
        session
    }

    /// The session behind a bearer token, if the token is known.
    pub fn token_session(&self, token: &str) -> Option<Arc<Session>> {
        self.state()
            .sessions
            .get_mut(&SessionKey::Token(token.to_string()))
            .cloned()
    }

    /// Opens a session for `user` under a newly issued token.
    pub fn open_token_session(&self, token: &str, user: &str) -> Arc<Session> {
        let session = Arc::new(
            self.engine
                .new_session(user)
                .with_question_mark_placeholders(),
        );
        self.state()
            .insert_session(SessionKey::Token(token.to_string()), session.clone());
        session
    }

    /// Forgets a session and its prepared statements.
    pub fn close(&self, key: &SessionKey) {
        let mut state = self.state();
        if state.sessions.remove(key).is_some() {
            state.statements.retain(|_, s| &s.owner != key);
        }
    }

    /// Keeps `prepared` for `owner` and returns its handle.
    pub fn add_statement(&self, owner: &SessionKey, prepared: Prepared) -> String {
        let handle = random_hex::<16>();
        let statement = Statement {
            owner: owner.clone(),
            prepared,
            params: None,
        };
        if let Some((evicted, _)) = self.state().statements.insert(handle.clone(), statement) {
            tracing::debug!(handle = %evicted, "prepared statement evicted: too many prepared statements");
        }
        handle
    }

    /// The statement `handle` of `owner` with its bound parameters.
    pub fn statement(
        &self,
        owner: &SessionKey,
        handle: &str,
    ) -> Option<(Prepared, Option<Vec<ScalarValue>>)> {
        let mut state = self.state();
        let statement = state
            .statements
            .get_mut(&handle.to_string())
            .filter(|s| &s.owner == owner)?;
        Some((statement.prepared.clone(), statement.params.clone()))
    }

    /// Binds parameter values to statement `handle`; false if there is no such statement.
    pub fn bind(&self, owner: &SessionKey, handle: &str, params: Vec<ScalarValue>) -> bool {
        let mut state = self.state();
        match state
            .statements
            .get_mut(&handle.to_string())
            .filter(|s| &s.owner == owner)
        {
            Some(statement) => {
                statement.params = Some(params);
                true
            }
            None => false,
        }
    }

    /// Forgets statement `handle`, if `owner` has it.
    pub fn remove_statement(&self, owner: &SessionKey, handle: &str) {
        let mut state = self.state();
        let key = handle.to_string();
        if state
            .statements
            .get_mut(&key)
            .is_some_and(|s| &s.owner == owner)
        {
            state.statements.remove(&key);
        }
    }
}

/// `N` random bytes as lower-case hex, from the thread's cryptographically secure generator.
pub fn random_hex<const N: usize>() -> String {
    let bytes: [u8; N] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_evicts_the_least_recently_used_entry() {
        let mut map = Lru::new(2);
        assert!(map.insert("a", 1).is_none());
        assert!(map.insert("b", 2).is_none());
        // Touching "a" makes "b" the oldest.
        assert_eq!(map.get_mut(&"a"), Some(&mut 1));
        assert_eq!(map.insert("c", 3), Some(("b", 2)));
        assert_eq!(map.len(), 2);
        // Replacing an existing key evicts nothing.
        assert!(map.insert("a", 10).is_none());
        assert_eq!(map.remove(&"a"), Some(10));
    }

    #[test]
    fn tokens_are_64_hex_digits() {
        let token = random_hex::<32>();
        assert_eq!(token.len(), 64);
        assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(token, random_hex::<32>());
    }
}
