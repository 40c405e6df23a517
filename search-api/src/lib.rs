//! `setlist-search`: the listener's side of Setlist. Song search over a
//! full-text index of the served model's catalogue, playlist uploads checked
//! against it, recommendations through the dispatcher (with a fallback when
//! it is away), listener events to the cluster's `interactions` topic, and
//! the listener's page (`ui/`, embedded).

pub mod index;
