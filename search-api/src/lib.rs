//! `setlist-search`: the listener's side of Setlist. Song search over a
//! full-text index of the served model's catalogue, playlist uploads checked
//! against it, recommendations through the dispatcher (with a fallback when
//! it is away), listener events to the cluster's `interactions` topic, and
//! the listener's page (`ui/`, embedded).

pub mod config;
pub mod events;
pub mod http;
pub mod index;
pub mod metrics;
pub mod recommend;
pub mod service;
pub mod ui;
pub mod verify;
